"""Reading a submitted notebook and rebuilding it on the instructor's template.

**Rebuild, don't trust.** Only the sources of a submission's answer cells (and of the code cells
the student added before them) are taken; they are put into the instructor's template (the
student version of the solution notebook). The submission's metadata, kernelspec, outputs and
every other cell are ignored. Honest notebooks must not lose their answers on the way (finding 7
of issue 17), so an answer cell is recognised, in this order, by

1. its stable id ``answer-<exercise>`` (written by ``metaedu assign``);
2. its tag ``answer`` and ``metadata["metaedu"]["exercise"]`` (notebooks saved without cell ids,
   nbformat 4.0 or older tools, and the instructor's own solution notebook);
3. the functions it defines: a cell that defines every function of one exercise's template
   answer cell (notebooks exported without ids, tags or metadata).

Outputs are never read (a 3 MB plot does not invalidate a notebook). When an exercise has two
answer cells the first is kept, with a warning. Code cells the student added -- not in the
template, not a check or parameters cell -- run just before the next answer cell, so a helper
function in a cell of its own is not lost.
"""

from __future__ import annotations

import ast
import copy
import json
import re

from metaedu.grading import notebook as nbtools
from metaedu.grading.spec import Assignment

MAX_FILE_BYTES = 32 * 2**20  # the whole file, outputs included
MAX_ANSWER_CHARS = 50_000  # one answer cell
MAX_ADDED_CHARS = 100_000  # all the cells a student added
ADDED = "student-added"  # tag of an added cell in the rebuilt notebook
NOT_ADDED_TAGS = {nbtools.TESTS, nbtools.HIDDEN, "parameters", "injected-parameters"}


class Rejected(Exception):
    """The submission cannot be graded; ``status`` says why."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def template(assignment: Assignment):
    """The instructor's template: the student version of the solution notebook."""
    return nbtools.student_version(nbtools.read(assignment.solution))


def _source(cell: dict, where: str) -> str:
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        source = "".join(source)
    if not isinstance(source, str):
        raise Rejected("invalid_notebook", f"{where} has a source that is not text")
    return source


def code_cells(raw: bytes) -> list[dict]:
    """The code cells of a submission (id, tags, exercise metadata, source); rejects what is not a notebook."""
    if len(raw) > MAX_FILE_BYTES:
        raise Rejected(
            "invalid_notebook",
            f"the file is {len(raw) / 2**20:.1f} MiB, over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit",
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise Rejected("invalid_notebook", f"not a JSON notebook: {str(err)[:200]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list) or data.get("nbformat") != 4:
        raise Rejected("invalid_notebook", "not a version-4 Jupyter notebook (no nbformat 4 or no list of cells)")
    cells = []
    for number, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        metadata = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        tags = metadata.get("tags") if isinstance(metadata.get("tags"), list) else []
        ours = metadata.get("metaedu") if isinstance(metadata.get("metaedu"), dict) else {}
        cell_id = cell.get("id") if isinstance(cell.get("id"), str) else None
        cells.append(
            {
                "id": cell_id,
                "tags": [t for t in tags if isinstance(t, str)],
                "exercise": ours.get("exercise"),
                "source": _source(cell, f"cell {number}"),
                "number": number,
            }
        )
    return cells


def defined_functions(source: str) -> set[str]:
    """Names of the functions a cell defines at its top level (a regular expression if it does not parse)."""
    try:
        return {
            node.name for node in ast.parse(source).body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set(re.findall(r"^(?:async\s+)?def\s+([A-Za-z_]\w*)", source, flags=re.M))


def _normal(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def find_answers(cells: list[dict], tmpl) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    """(answer source, added cells' sources, warnings), the first two by exercise."""
    answers_of_template = {nbtools.meta(c)["exercise"]: c for c in tmpl.cells if nbtools.ANSWER in nbtools.tags(c)}
    functions = {ex: defined_functions(nbtools.strip_solution(c.source)) for ex, c in answers_of_template.items()}
    template_ids = {c["id"] for c in tmpl.cells}
    template_sources = {_normal(c.source) for c in tmpl.cells if c.cell_type == "code"}
    answers: dict[str, str] = {}
    added: dict[str, list[str]] = {}
    warnings: list[str] = []
    pending: list[str] = []
    for cell in cells:
        exercise = _exercise_of(cell, answers_of_template, functions)
        if exercise is not None:
            if len(cell["source"]) > MAX_ANSWER_CHARS:
                raise Rejected(
                    "invalid_notebook", f"the answer cell of {exercise!r} is longer than {MAX_ANSWER_CHARS} characters"
                )
            if exercise in answers:
                warnings.append(
                    f"exercise {exercise!r} has a second answer cell (cell {cell['number']}); the first one was graded"
                )
                continue
            answers[exercise] = cell["source"]
            added[exercise], pending = pending, []
            continue
        is_template = (cell["id"] in template_ids and cell["id"] is not None) or _normal(
            cell["source"]
        ) in template_sources
        if not is_template and not NOT_ADDED_TAGS & set(cell["tags"]) and _normal(cell["source"]):
            pending.append(cell["source"])
    if sum(len(s) for sources in added.values() for s in sources) > MAX_ADDED_CHARS:
        raise Rejected(
            "invalid_notebook", f"the cells added before the answers hold more than {MAX_ADDED_CHARS} characters"
        )
    if pending:
        warnings.append(
            f"{len(pending)} code cell(s) after the last answer cell were not run (they come after every answer)"
        )
    return answers, added, warnings


def _exercise_of(cell: dict, template_answers: dict, functions: dict[str, set[str]]) -> str | None:
    if cell["id"] and cell["id"].startswith("answer-") and cell["id"][len("answer-") :] in template_answers:
        return cell["id"][len("answer-") :]
    if nbtools.ANSWER in cell["tags"] and cell["exercise"] in template_answers:
        return cell["exercise"]
    if NOT_ADDED_TAGS & set(cell["tags"]) or (cell["id"] or "").startswith(("tests-", "cell-")):
        return None
    defined = defined_functions(cell["source"])
    matches = [ex for ex, names in functions.items() if names and names <= defined]
    return matches[0] if len(matches) == 1 else None


def rebuild(assignment: Assignment, raw: bytes):
    """(rebuilt notebook, exercises without an answer cell, warnings) from a submission's bytes."""
    nb = template(assignment)
    answers, added, warnings = find_answers(code_cells(raw), nb)
    cells, missing = [], []
    for cell in nb.cells:
        if nbtools.ANSWER in nbtools.tags(cell):
            exercise = nbtools.meta(cell)["exercise"]
            for number, source in enumerate(added.get(exercise, [])):
                extra = copy.deepcopy(cell)
                extra["id"], extra.source = f"added-{exercise}-{number}", source
                extra.metadata = {"tags": [ADDED], "metaedu": {"exercise": exercise}}
                cells.append(extra)
            if exercise in answers:
                cell.source = answers[exercise]
            else:
                missing.append(exercise)
        cells.append(cell)
    nb.cells = cells
    return nb, missing, warnings


def stage_b_cells(nb) -> list[str]:
    """Setup cells (code before the first answer cell, parameters included), added cells and answer cells."""
    sources, seen_answer = [], False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        is_answer = bool({nbtools.ANSWER, ADDED} & set(nbtools.tags(cell)))
        seen_answer = seen_answer or is_answer
        if is_answer or not seen_answer:
            sources.append(cell.source)
    return sources
