"""Lecture notebooks: stored clean, parameterisable, and running top to bottom in quick mode."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lecture_bar import BAR_PENDING, output_problems, structure_problems, verdict_problems
from metaedu import verdicts
from metaedu.notebooks import lectures_dir, parameters_cell_index, run_notebook
from metaedu.runtime import cache_dir

LECTURES = sorted(lectures_dir().glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in LECTURES]
#: per-cell time limit when the suite executes a lecture (quick mode aims at 3 minutes for a whole notebook)
CELL_TIMEOUT = 600


def test_there_are_lectures():
    assert LECTURES, f"no lecture notebooks in {lectures_dir()}"


@pytest.mark.parametrize("path", LECTURES, ids=IDS)
def test_stored_without_outputs_and_with_parameters(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: cell {i} has stored outputs (clear them before committing)"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"
    index = parameters_cell_index(nb)
    assert index is not None, f"{path.name}: no cell tagged 'parameters'"
    tree = ast.parse(nb.cells[index].source)
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), (
            f"{path.name}: the parameters cell may only assign literals, found {ast.dump(node)[:60]}"
        )
        ast.literal_eval(node.value)  # raises if not a literal
        names.add(node.targets[0].id)
    assert {"MODE", "DEVICE", "SEED"} <= names, f"{path.name}: parameters must include MODE, DEVICE and SEED"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.parametrize("path", LECTURES, ids=IDS)
def test_exercise_cells_follow_the_convention(path):
    nb = nbformat.read(path, as_version=4)
    answers = [c for c in nb.cells if "answer" in c.metadata.get("tags", [])]
    tests = [c for c in nb.cells if "tests" in c.metadata.get("tags", [])]
    assert answers and tests, f"{path.name}: every lecture has at least one graded exercise"
    ids = {c.metadata.get("metaedu", {}).get("exercise") for c in answers}
    assert None not in ids
    for c in answers:
        assert "# BEGIN SOLUTION" in c.source and "# END SOLUTION" in c.source
    for c in tests:
        meta = c.metadata.get("metaedu", {})
        assert meta.get("exercise") in ids and int(meta.get("points", 0)) > 0


@pytest.mark.parametrize("path", LECTURES, ids=IDS)
def test_meets_the_lecture_bar_as_stored(path):
    """Two graded exercises and a slide-coverage table (lecture bar, items 1 and 8)."""
    if path.stem in BAR_PENDING:
        pytest.xfail(f"{path.stem} is being brought up to the lecture bar (issue 14)")
    problems = structure_problems(nbformat.read(path, as_version=4))
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("path", LECTURES, ids=IDS)
def test_runs_top_to_bottom_in_quick_mode(path, tmp_path):
    os.environ["METAEDU_STRICT_CHECKS"] = "1"
    # executed copies are kept under the cache: the book test (run last) builds the site from them
    result = run_notebook(path, cache_dir() / "executed", mode="quick", device="cpu", cell_timeout=CELL_TIMEOUT)
    print(f"{path.name}: {result.status} in {result.seconds:.1f} s")
    assert result.status == "ok", f"{path.name} failed: {result.error}"
    executed = nbformat.read(result.output, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert result.html is not None and result.html.stat().st_size > 10_000
    images = sum("image/png" in o.get("data", {}) for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 3, f"{path.name}: expected figures in the executed notebook, found {images}"
    # every computed verdict agrees with the numbers it was computed from (recomputed independently)
    inconsistent = verdicts.consistency_problems(verdicts.records_in(executed))
    assert not inconsistent, f"{path.name}: " + "; ".join(inconsistent)
    if path.stem not in BAR_PENDING:
        problems = output_problems(executed) + verdict_problems(executed)
        assert not problems, f"{path.name} (lecture bar): " + "; ".join(problems[:10])


def _write(path: Path, cells: list[tuple[str, str, list[str]]]) -> Path:
    nb = nbformat.v4.new_notebook()
    for kind, src, tags in cells:
        cell = nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_metaedu_run_reports_success_and_names_the_failing_cell(tmp_path):
    good = _write(tmp_path / "00_good.ipynb", [
        ("md", "# good", []),
        ("code", 'MODE = "quick"\nDEVICE = "auto"\nSEED = 0', ["parameters"]),
        ("code", "print(MODE, DEVICE)", []),
    ])
    bad = _write(tmp_path / "01_bad.ipynb", [
        ("code", 'MODE = "quick"\nDEVICE = "auto"\nSEED = 0', ["parameters"]),
        ("code", "x = 1", []),
        ("code", "raise ValueError('broken on purpose')", []),
    ])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "metaedu.cli", "run", str(good), str(bad), "--mode", "quick", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "00_good.ipynb" in proc.stdout and "ok" in proc.stdout
    assert "FAILED 01_bad.ipynb" in proc.stdout and "ValueError: broken on purpose" in proc.stdout
    assert "cell 2 (\"raise ValueError('broken on purpose')\")" in proc.stdout  # the failing cell is named
    executed = nbformat.read(out / "00_good.ipynb", as_version=4)
    assert any("quick cpu" in o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert (out / "00_good.html").exists() and (out / "summary.json").exists()


def test_metaedu_run_rejects_unknown_notebooks():
    proc = subprocess.run([sys.executable, "-m", "metaedu.cli", "run", "99"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no single lecture notebook matches '99'" in proc.stderr


@pytest.mark.slow
def test_nbval_lax_validates_lecture_00():
    """nbval in lax mode (outputs are not stored, so it checks that every cell runs)."""
    target = lectures_dir() / "00_one_shot.ipynb"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-cell-timeout", str(CELL_TIMEOUT), str(target)],
        capture_output=True, text=True, timeout=1800, cwd=target.parent,
        env={**os.environ, "METAEDU_STRICT_CHECKS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout
