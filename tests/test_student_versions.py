"""Every lecture's student version runs top to bottom (lecture bar, item 9).

The student version (``metaedu assign``: solutions replaced by ``raise NotImplementedError``)
is executed in quick mode with non-strict checks: every check of an unsolved exercise must
fail visibly (✗ printed), and nothing may raise: cells after an exercise fall back to the
package (``metaedu.grading.checks.answer_or_reference``).
"""

from __future__ import annotations


import nbformat
import pytest

from lecture_bar import BAR_PENDING
from metaedu.grading import notebook as nbtools
from metaedu.notebooks import lectures_dir, run_notebook

LECTURES = sorted(lectures_dir().glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", LECTURES, ids=[p.stem for p in LECTURES])
def test_student_version_runs_to_the_end(path, tmp_path, monkeypatch):
    if path.stem in BAR_PENDING:
        pytest.xfail(f"{path.stem}'s student version is being made to run to the end (issue 14)")
    student = nbtools.student_version(nbtools.read(path))
    target = tmp_path / path.name
    nbformat.write(student, str(target))
    monkeypatch.setenv("METAEDU_STRICT_CHECKS", "0")
    result = run_notebook(target, tmp_path / "out", mode="quick", device="cpu", cwd=lectures_dir())
    assert result.status == "ok", f"student version of {path.name} stopped: {result.error}"
    executed = nbformat.read(result.output, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"student version of {path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    # read the exercises off the executed notebook: papermill inserted a cell (the injected parameters)
    ran = nbtools.exercises(executed, solutions=False)
    assert set(ran) == set(nbtools.exercises(student, solutions=False))
    for exercise in ran.values():
        shown = "".join(o.get("text", "") for i in exercise.tests_cells for o in executed.cells[i].outputs)
        assert "✗" in shown, f"{path.name}: the unsolved exercise {exercise.id!r} does not fail visibly in its checks"
