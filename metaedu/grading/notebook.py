"""Reading the exercise markers of a notebook, and writing its student version.

The convention is documented in :mod:`metaedu.grading.checks` and CONTRIBUTING.md:

* answer cell: code cell tagged ``answer``, ``metadata["metaedu"]["exercise"] = id``, the
  reference lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` inside a function body;
* tests cell: code cell tagged ``tests``, ``metadata["metaedu"] = {"exercise": id, "points": N}``;
* hidden tests: cells tagged ``hidden-tests`` (instructor only) are dropped from the student version.

:func:`student_version` replaces each solution block by ``raise NotImplementedError(...)`` at the
block's indentation, drops hidden-test cells and outputs, and gives every cell a stable id
(``answer-<exercise>``, ``tests-<exercise>``, ``cell-<n>``) so that the grader can find a
student's answers by id whatever else the student changed.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION\s*$")
END = re.compile(r"^[ \t]*#\s*END SOLUTION\s*$")
STUB = 'raise NotImplementedError("your answer here")'
ANSWER, TESTS, HIDDEN = "answer", "tests", "hidden-tests"
_ID_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class MarkerError(ValueError):
    """A notebook's exercise markers do not follow the convention."""


@dataclass
class Exercise:
    """One exercise of a notebook: its answer cell and the points of its visible checks."""

    id: str
    answer_index: int  # index of the answer cell in the notebook's cells
    points: float = 0.0  # visible checks' points (sum over its tests cells)
    tests_cells: list[int] = field(default_factory=list)


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def meta(cell) -> dict:
    value = cell.get("metadata", {}).get("metaedu", {})
    return value if isinstance(value, dict) else {}


def strip_solution(source: str, where: str = "cell") -> str:
    """Replace every ``# BEGIN SOLUTION`` .. ``# END SOLUTION`` block by a stub at its indentation."""
    out: list[str] = []
    inside: str | None = None
    for number, line in enumerate(source.splitlines(), 1):
        begin = BEGIN.match(line)
        if begin:
            if inside is not None:
                raise MarkerError(f"{where}, line {number}: BEGIN SOLUTION inside another solution block")
            inside = begin.group("indent")
            out.append(f"{inside}{STUB}")
            continue
        if END.match(line):
            if inside is None:
                raise MarkerError(f"{where}, line {number}: END SOLUTION without a BEGIN SOLUTION")
            inside = None
            continue
        if inside is None:
            out.append(line)
    if inside is not None:
        raise MarkerError(f"{where}: BEGIN SOLUTION is never closed by END SOLUTION")
    return "\n".join(out)


def exercises(nb, solutions: bool = True) -> dict[str, Exercise]:
    """The exercises of a notebook, checked against the convention (clear errors when broken).

    ``solutions=False`` reads a student version (answer cells without solution blocks).
    """
    found: dict[str, Exercise] = {}
    for index, cell in enumerate(nb.cells):
        cell_tags = tags(cell)
        if ANSWER not in cell_tags and TESTS not in cell_tags:
            continue
        where = f"cell {index}"
        if cell.cell_type != "code":
            raise MarkerError(f"{where} is tagged {cell_tags} but is not a code cell")
        exercise = meta(cell).get("exercise")
        if not isinstance(exercise, str) or not _ID_OK.match(exercise):
            raise MarkerError(f'{where} is tagged {cell_tags} but has no valid metadata["metaedu"]["exercise"] (got {exercise!r})')
        if ANSWER in cell_tags:
            if exercise in found:
                raise MarkerError(f"{where}: exercise {exercise!r} has a second answer cell")
            if solutions and "BEGIN SOLUTION" not in cell.source:
                raise MarkerError(f"{where}: answer cell of {exercise!r} has no # BEGIN SOLUTION block")
            strip_solution(cell.source, where)  # validates the markers
            found[exercise] = Exercise(exercise, index)
        if TESTS in cell_tags:
            if exercise not in found:
                raise MarkerError(f"{where}: tests cell of {exercise!r} comes before its answer cell (or it has none)")
            points = meta(cell).get("points", 0)
            if not isinstance(points, (int, float)) or points < 0:
                raise MarkerError(f"{where}: points of {exercise!r} must be a number >= 0, got {points!r}")
            found[exercise].points += float(points)
            found[exercise].tests_cells.append(index)
    return found


def stable_ids(nb) -> None:
    """Give every cell an id that depends only on its role and position (in place)."""
    counts: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        cell_tags = tags(cell)
        exercise = meta(cell).get("exercise")
        if ANSWER in cell_tags:
            base = f"answer-{exercise}"
        elif TESTS in cell_tags:
            base = f"tests-{exercise}"
        else:
            base = f"cell-{index}"
        counts[base] = counts.get(base, 0) + 1
        cell["id"] = base if counts[base] == 1 else f"{base}-{counts[base]}"


def student_version(nb):
    """The student's notebook: solutions stubbed, hidden tests and outputs removed, stable ids."""
    found = exercises(nb)
    if not found:
        raise MarkerError("the notebook has no answer cells (code cells tagged 'answer')")
    student = copy.deepcopy(nb)
    student.cells = [c for c in student.cells if HIDDEN not in tags(c)]
    for index, cell in enumerate(student.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if ANSWER in tags(cell):
                cell.source = strip_solution(cell.source, f"cell {index}")
    student.nbformat, student.nbformat_minor = 4, max(5, student.get("nbformat_minor", 5))
    stable_ids(student)
    student.metadata["metaedu"] = {"points": {e.id: e.points for e in found.values()}}
    return student


def read(path: str | Path):
    return nbformat.read(str(path), as_version=4)


def assign(notebook: str | Path, out_dir: str | Path) -> Path:
    """Write the student version of ``notebook`` into ``out_dir``; return its path.

    Beside it, ``<name>.points.json`` records the points of each exercise's visible checks.
    """
    notebook, out_dir = Path(notebook), Path(out_dir)
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}")
    student = student_version(read(notebook))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook.name
    if target.resolve() == notebook.resolve():
        raise ValueError(f"--out {out_dir} would overwrite the solution notebook {notebook}")
    nbformat.validate(student)
    nbformat.write(student, str(target))
    points = student.metadata["metaedu"]["points"]
    (out_dir / f"{notebook.stem}.points.json").write_text(json.dumps({"notebook": notebook.name, "points": points}, indent=1) + "\n")
    return target
