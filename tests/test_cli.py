"""The command line's one error boundary, and ``metaedu bench``."""

from __future__ import annotations

import pytest

from metaedu import bench, cli, notebooks


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


@pytest.mark.parametrize(
    "argv,names",
    [
        (["run", "03", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "03", "--cell-timeout", "0"], "--cell-timeout must be at least 1"),
        (["run", "99"], "no single lecture notebook matches '99'"),
        (
            [
                "grade",
                "/nonexistent/submissions",
                "--assignment",
                "episodes_protonet",
                "--out",
                "unused",
                "--jobs",
                "0",
            ],
            "--jobs must be at least 1",
        ),
        (["assign", "/nonexistent/solution.ipynb", "--out", "unused"], "no notebook at /nonexistent/solution.ipynb"),
        (["bench", "nope"], "no benchmark named 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_status_2_before_any_work(argv, names, capsys, monkeypatch):
    def no_kernel(*args, **kwargs):
        raise AssertionError("a notebook was started")

    monkeypatch.setattr(notebooks, "run_notebook", no_kernel)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    line = one_line(err)
    assert line.startswith(f"metaedu {argv[0]}: ") and names in line, line
    assert "Traceback" not in err


def test_a_missing_submissions_folder_is_named(capsys):
    assert cli.main(["grade", "/nonexistent/submissions", "--assignment", "episodes_protonet", "--out", "unused"]) == 2
    assert "/nonexistent/submissions" in one_line(capsys.readouterr().err)


def test_an_absent_device_is_refused_before_a_kernel_starts(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(notebooks, "run_notebook", lambda *a, **k: pytest.fail("a notebook was started"))
    absent = f"cuda:{torch.cuda.device_count()}"  # one past the last device (any CUDA device on a CPU machine)
    assert cli.main(["run", "00", "--device", absent]) == 2
    assert "requested but" in one_line(capsys.readouterr().err)


def test_a_malformed_command_line_is_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["frobnicate"])
    assert stop.value.code == 2
    assert "invalid choice: 'frobnicate'" in one_line(capsys.readouterr().err)


def test_the_traceback_is_there_when_asked_for(monkeypatch):
    monkeypatch.setenv("METAEDU_TRACEBACK", "1")
    with pytest.raises(ValueError, match="unknown device"):
        cli.main(["run", "03", "--device", "tpu"])


def test_bench_runs_a_script_by_its_short_name_with_its_arguments(tmp_path, monkeypatch, capfd):
    script = tmp_path / "toy_speed.py"
    script.write_text(
        '"""A toy benchmark: prints a table."""\nimport sys\nprint("ratio", *sys.argv[1:])\n'
        'sys.exit(3 if "--fail" in sys.argv else 0)\n'
    )
    monkeypatch.setattr(bench, "benchmarks_dir", lambda: tmp_path)
    assert cli.main(["bench", "toy", "--n", "5"]) == 0
    assert capfd.readouterr().out.strip() == "ratio --n 5"
    assert cli.main(["bench", "toy_speed", "--fail"]) == 3  # the script's own status comes back
    capfd.readouterr()
    assert cli.main(["bench"]) == 0
    listing = capfd.readouterr().out
    assert listing.split()[:2] == ["toy", "toy_speed.py"] and "A toy benchmark: prints a table." in listing


def test_bench_lists_the_checkout_benchmarks(capsys):
    assert cli.main(["bench"]) == 0
    out = capsys.readouterr().out
    for name in ("maml", "grading", "transfer", "gpu"):
        assert name in out
    assert bench.find("maml").name == "maml_speed.py"
