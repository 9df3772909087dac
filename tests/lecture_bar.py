"""Checks of the lecture bar (``shared/design/LECTURE_BAR.md``) that can be read off a notebook.

Used by ``test_notebooks.py`` (the lecture as stored and as executed) and
``test_student_versions.py``. Each function returns a list of problems (empty: fine).
"""

from __future__ import annotations

import re

from metaedu import verdicts
from metaedu.grading import notebook as nbtools

#: Lectures written before the bar; issue 14 brings them up to it and empties this set.
BAR_PENDING: set[str] = set()

_PROGRESS = re.compile(r"\d+%\|")  # tqdm's text rendering, e.g. " 40%|████      | 4/10"
_SETTINGS_DUMP = re.compile(r"^\w*Settings\(")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$", re.M)


def _texts(cell):
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            yield output.get("name", ""), output.get("text", "")
        for mime in ("text/plain",):
            value = output.get("data", {}).get(mime)
            if value is not None:
                yield mime, "".join(value) if isinstance(value, list) else value


def output_problems(executed) -> list[str]:
    """Noise an instructor would not show: warnings, progress-bar residue, settings dumps, errors."""
    problems = []
    for index, cell in enumerate(executed.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"cell {index}: error {output.get('ename')}: {output.get('evalue')}")
        for kind, text in _texts(cell):
            if kind == "stderr" and re.search(r"warn", text, re.I):
                problems.append(f"cell {index}: a warning in the output: {text.strip()[:160]!r}")
            if _PROGRESS.search(text):
                problems.append(f"cell {index}: progress-bar residue in the output: {text.strip()[:80]!r}")
            if _SETTINGS_DUMP.match(text.strip()):
                problems.append(f"cell {index}: a settings object is dumped: {text.strip()[:80]!r}")
    return problems


def structure_problems(nb) -> list[str]:
    """Two graded exercises at least, and a slide-coverage table at the end."""
    problems = []
    found = nbtools.exercises(nb)
    if len(found) < 2:
        problems.append(f"{len(found)} graded exercise(s); the bar asks for at least two")
    coverage = [c for c in nb.cells if c.cell_type == "markdown" and re.search(r"^#+ .*coverage", c.source, re.I | re.M)]
    if not coverage:
        problems.append("no slide-coverage section (a markdown heading with 'coverage' and a table)")
    elif len(_TABLE_ROW.findall(coverage[-1].source)) < 4:
        problems.append("the slide-coverage section has no table of slides (header, separator, two rows at least)")
    return problems


def verdict_problems(executed) -> list[str]:
    """Every computed verdict consistent with its numbers, and at least one verdict shown."""
    records = verdicts.records_in(executed)
    if not records:
        return ["no computed verdict (metaedu.verdicts.show) in the executed notebook"]
    return verdicts.consistency_problems(records)
