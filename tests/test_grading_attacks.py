"""The grader's attack suite: one generated notebook per attack, graded twice in the sandbox.

Each fixture has the statuses it may end with and a score ceiling (and, where the outcome is
certain, a floor). Every fixture is graded twice with the same result, and afterwards no
process of the sandbox is left. Slow: every graded notebook starts a kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from metaedu.grading import grader, sandbox
from metaedu.grading import notebook as nbtools
from metaedu.grading.spec import load

pytestmark = pytest.mark.slow
NAME = "episodes_protonet"
MARK = "987654"  # in the command line of every process a fixture tries to leave behind
# small CPU budgets keep the suite short (the infinite loop uses all of stage A's); generous
# wall-clock backstops, which only code that sleeps or waits should reach
SETTINGS = grader.Settings(jobs=2, stage_a_cpu_s=20, stage_b_cpu_s=20, stage_a_wall_s=240, stage_b_wall_s=120, progress=False)


def _solutions() -> dict[str, str]:
    nb = nbtools.read(load(NAME).solution)
    return {f"answer-{nbtools.meta(c)['exercise']}": c.source for c in nb.cells if "answer" in nbtools.tags(c)}


def _student() -> dict:
    return json.loads(nbformat.writes(nbtools.student_version(nbtools.read(load(NAME).solution))))


def _cell(data: dict, cell_id: str) -> dict:
    return next(c for c in data["cells"] if c["id"] == cell_id)


def _solve(data: dict) -> dict:
    for cell_id, source in _solutions().items():
        _cell(data, cell_id)["source"] = source
    return data


def _prepend(data: dict, code: str, cell_id: str = "answer-prototypes") -> dict:
    cell = _cell(data, cell_id)
    cell["source"] = code + "\n" + "".join(cell["source"])
    return data


def _fork_bomb() -> dict:
    """A solved notebook with a fork bomb before the definition of ``prototypes``."""
    return _prepend(_solve(_student()), "import os\nwhile True:\n    os.fork()")


def _fixtures(out_dir: Path) -> dict[str, tuple[dict | bytes, set[str], float, float]]:
    """name -> (notebook or raw bytes, allowed statuses, lowest score, highest score)."""
    full = load(NAME).max_points()
    prototypes_points = sum(t.points for t in load(NAME).tests if t.exercise == "prototypes")
    fixtures: dict[str, tuple] = {}
    fixtures["correct"] = (_solve(_student()), {"ok"}, full, full)
    fixtures["untouched"] = (_student(), {"ok"}, 0, 0)
    always_equal = (
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda self, other: False\n"
        "    def __array__(self, *a, **k):\n        raise TypeError('no numbers here')\n"
    )
    data = _student()
    for cell_id, function in (("answer-prototypes", "prototypes"), ("answer-distances", "squared_distances"), ("answer-loss", "prototype_loss")):
        _cell(data, cell_id)["source"] = always_equal + f"def {function}(*args, **kwargs):\n    return Anything()\n"
    fixtures["eq_always_true"] = (data, {"ok", "cell_error"}, 0, 0)  # the demo cell cannot unpack it
    fixtures["showtraceback"] = (_prepend(_student(), "ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\nip._showtraceback = lambda *a, **k: None"), {"ok"}, 0, 0)
    fixtures["input_transformer"] = (_prepend(_student(), (
        "def _swallow(lines):\n    return ['pass\\n']\nget_ipython().input_transformers_cleanup.append(_swallow)"
    )), {"ok", "cell_error"}, 0, 0)
    data = _student()
    for cell in data["cells"]:
        cell.setdefault("metadata", {})["tags"] = ["skip-execution", "raises-exception"]
    fixtures["skip_and_raises_tags"] = (data, {"ok"}, 0, 0)
    data = _solve(_student())
    data["cells"] = [c for c in data["cells"] if c["id"] not in ("answer-distances", "tests-distances")]
    _cell(data, "answer-loss")["id"] = "answer-loss-renamed"
    fixtures["deleted_and_renamed_cells"] = (data, {"missing_answer"}, prototypes_points, prototypes_points)
    data = _solve(_student())
    data["metadata"]["kernelspec"] = {"name": "evil", "display_name": "Evil", "language": "python"}
    fixtures["edited_kernelspec"] = (data, {"ok"}, full, full)
    data = _student()
    for cell in data["cells"]:
        cell["metadata"]["tags"] = [t for t in cell["metadata"].get("tags", []) if t != "parameters"]
    data["cells"].insert(2, {"cell_type": "code", "id": "fake", "metadata": {"tags": ["injected-parameters"]},
                             "source": "SEED = 123\nprint('PASS')", "outputs": [], "execution_count": None})
    fixtures["parameters_tampering"] = (data, {"ok"}, 0, 0)
    fixtures["os_exit"] = (_prepend(_solve(_student()), "import os\nos._exit(0)"), {"kernel_died"}, 0, 0)
    fixtures["infinite_loop"] = (_prepend(_solve(_student()), (
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "while True:\n    pass"
    )), {"timeout"}, 0, 0)
    fixtures["memory_bomb"] = (_prepend(_solve(_student()), (
        "hog = []\nwhile True:\n    hog.append(bytearray(256 * 2**20))"
    )), {"oom", "kernel_died"}, 0, 0)
    # the process limit makes os.fork() fail in the bombed answer cell: an ordinary cell error,
    # and the answers that do not depend on that cell (the distances: 3 points) still score
    distances_points = sum(t.points for t in load(NAME).tests if t.exercise == "distances")
    fixtures["fork_bomb"] = (_fork_bomb(), {"cell_error"}, distances_points, distances_points)
    fixtures["background_process"] = (_prepend(_solve(_student()), (
        f"import subprocess\nsubprocess.Popen(['sleep', '{MARK}'], start_new_session=True)\n"
        f"import os\nif os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', '{MARK}1'])"
    )), {"ok"}, full, full)
    fixtures["fill_the_disk"] = (_prepend(_solve(_student()), (
        "import os\nfor folder in ('.', '/tmp', '/var/tmp', '/dev/shm', os.path.expanduser('~')):\n"
        "    for i in range(1000):\n        with open(os.path.join(folder, f'fill{i}'), 'wb') as fh:\n"
        "            fh.write(b'x' * 2**26)"
    )), {"cell_error"}, 0, 0)
    fixtures["stdout_flood"] = (_prepend(_solve(_student()), "for _ in range(20000):\n    print('x' * 1000)"), {"ok"}, full, full)
    fixtures["network_socket"] = (_prepend(_student(), (
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3).close()\nprint('network reached')"
    )), {"cell_error"}, 0, 0)
    hidden = load(NAME).folder / "grader_tests.py"
    fixtures["read_hidden_tests"] = (_prepend(_student(), (
        f"print(open({str(hidden)!r}).read())"
    )), {"cell_error"}, 0, 0)
    forged_row = "correct.ipynb,ok,13,13\\n"
    fixtures["write_results"] = (_prepend(_student(), (
        "import json, os\nimport numpy as np\nos.makedirs('out', exist_ok=True)\n"
        "json.dump({'status': 'ok', 'reason': ''}, open('out/stage_a.json', 'w'))\n"
        "for i in range(20):\n    np.savez(f'out/result_{i}.npz', r0=np.zeros(3))\n"
        f"for path in ({str(out_dir / 'gradebook.csv')!r}, {str(out_dir / 'write_results' / 'result.json')!r}):\n"
        "    try:\n        os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        f"        open(path, 'a').write({forged_row!r})\n    except OSError as err:\n        print('blocked:', err)"
    )), {"ok"}, 0, 0)
    fixtures["fake_pass_output"] = (_prepend(_student(), (
        "for name in ('prototypes', 'distances', 'loss'):\n    print(f'✓ {name}: PASS')\nprint('Score: 13 / 13  PASS')"
    )), {"ok"}, 0, 0)
    fixtures["not_a_notebook"] = (b"\x00\x01 this is not json", {"invalid_notebook"}, 0, 0)
    fixtures["too_large"] = (b'{"nbformat": 4, "cells": [], "pad": "' + b"x" * (grader.MAX_NOTEBOOK_BYTES + 10) + b'"}',
                             {"invalid_notebook"}, 0, 0)
    return fixtures


def _sandbox_processes() -> list[str]:
    """Command lines of processes a grading run could have left behind."""
    left = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            uid = next(int(line.split()[1]) for line in Path(f"/proc/{entry}/status").read_text().splitlines() if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if MARK in cmd or "metaedu.grading." in cmd or sandbox.UID_BASE <= uid < sandbox.UID_BASE + 16:
            left.append(f"{entry} uid {uid}: {cmd[:120]}")
    return left


def test_attack_suite(tmp_path):
    submissions, runs = tmp_path / "submissions", [tmp_path / "graded1", tmp_path / "graded2"]
    submissions.mkdir()
    fixtures = _fixtures(runs[0])
    for name, (content, *_rest) in fixtures.items():
        raw = content if isinstance(content, bytes) else json.dumps(content).encode()
        (submissions / f"{name}.ipynb").write_bytes(raw)
    before = _sandbox_processes()
    settings = SETTINGS
    graded = []
    for out in runs:
        results = grader.grade_folder(submissions, NAME, out, settings)
        graded.append({Path(r["submission"]).stem: r for r in results})
        assert _sandbox_processes() == before, "a graded notebook left a process behind"
    print(grader.summary(results))
    problems = []
    for name, (_content, statuses, low, high) in fixtures.items():
        first, second = graded[0][name], graded[1][name]
        if first["status"] not in statuses or not low <= first["score"] <= high:
            problems.append(f"{name}: {first['status']} {first['score']} (expected {statuses}, {low}..{high}): {first['reason']}")
        if (first["status"], [t["score"] for t in first["tests"]]) != (second["status"], [t["score"] for t in second["tests"]]):
            problems.append(f"{name}: regrading changed the result ({first['status']} -> {second['status']})")
    assert not problems, "\n".join(problems)
    # nothing the notebooks wrote reached the grader's files
    for out in runs:
        rows = (out / "gradebook.csv").read_text().splitlines()
        assert len(rows) == len(fixtures) + 1 and not any(r.startswith("correct.ipynb,ok,13,13") for r in rows)
        assert json.loads((out / "write_results" / "result.json").read_text())["score"] == 0
    feedback = (runs[0] / "read_hidden_tests" / "feedback.md").read_text()
    assert "ref_prototypes" not in feedback and "def " not in feedback
    assert graded[0]["read_hidden_tests"]["sha256"] and graded[0]["correct"]["versions"]["torch"]


def test_fork_bomb_verdict_does_not_depend_on_load(tmp_path):
    """The fork bomb's verdict with a CPU hog per core running beside the grader (finding 11).

    The verdict must be the one the suite expects on a quiet machine: the hogs take most of the
    CPU, which stretches wall-clock time but not the CPU seconds the limits count.
    """
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    (submissions / "fork_bomb.ipynb").write_text(json.dumps(_fork_bomb()))
    _, statuses, low, high = _fixtures(tmp_path / "graded")["fork_bomb"]
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        (result,) = grader.grade_folder(submissions, NAME, tmp_path / "graded", SETTINGS)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert result["status"] in statuses and low <= result["score"] <= high, (result["status"], result["score"], result["reason"])
