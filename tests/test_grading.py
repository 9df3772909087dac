"""Fast tests of the grading tools: markers and student versions, rebuilding, references, scoring, CLI.

The sandboxed end-to-end runs (one kernel per notebook) are in test_grading_attacks.py (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from metaedu.cli import main as cli_main
from metaedu.grading import notebook as nbtools
from metaedu.grading import scoring, submission
from metaedu.grading.spec import available, draw_args, load

ASSIGNMENTS = available()
REPO = Path(__file__).resolve().parents[1]
SEED = 12345  # a grading run's seed


def solution_namespace(name: str, stubbed: bool = False) -> dict:
    """Run an assignment's setup and answer cells in this process (trusted code only)."""
    nb = nbtools.read(load(name).solution)
    if stubbed:
        nb = nbtools.student_version(nb)
    namespace: dict = {}
    for source in submission.stage_b_cells(nb):
        exec(compile(source, name, "exec"), namespace)  # noqa: S102 - our own solution notebooks
    return namespace


def call(namespace: dict, function: str, args: list):
    converted = [torch.from_numpy(a.copy()) if isinstance(a, np.ndarray) else a for a in args]
    out = namespace[function](*converted)
    items = out if isinstance(out, tuple) else (out,)
    return [np.asarray(torch.as_tensor(v).detach(), dtype=np.float64) for v in items]


def test_three_assignments_exist():
    assert set(ASSIGNMENTS) >= {"episodes_protonet", "maml_inner_loop", "lrua_memory"}


def test_strip_solution_keeps_indentation_and_drops_the_block():
    source = "def f(x):\n    y = 1\n    # BEGIN SOLUTION\n    return x + y\n    # END SOLUTION\n"
    assert nbtools.strip_solution(source) == f"def f(x):\n    y = 1\n    {nbtools.STUB}"


@pytest.mark.parametrize("source, message", [
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION\n", "without a BEGIN"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n", "inside another"),
])
def test_broken_markers_are_named(source, message):
    with pytest.raises(nbtools.MarkerError, match=message):
        nbtools.strip_solution(source)


def _lecture_like(answer_src: str, tags=("answer",), meta=True):
    answer = new_code_cell(answer_src)
    answer.metadata["tags"] = list(tags)
    if meta:
        answer.metadata["metaedu"] = {"exercise": "ex1"}
    check = new_code_cell('check("f doubles", lambda: f(2) == 4)')
    check.metadata["tags"] = ["tests"]
    check.metadata["metaedu"] = {"exercise": "ex1", "points": 3}
    hidden = new_code_cell("assert f(5) == 10")
    hidden.metadata["tags"] = ["hidden-tests"]
    params = new_code_cell('MODE = "quick"')
    params.metadata["tags"] = ["parameters"]
    return new_notebook(cells=[new_markdown_cell("# L"), params, answer, check, hidden])


def test_student_version_stubs_drops_hidden_and_records_points():
    nb = _lecture_like("def f(x):\n    # BEGIN SOLUTION\n    return 2 * x\n    # END SOLUTION")
    student = nbtools.student_version(nb)
    sources = [c.source for c in student.cells]
    assert not any("hidden" in str(c.metadata.get("tags")) for c in student.cells)
    assert "return 2 * x" not in "".join(sources) and nbtools.STUB in "".join(sources)
    assert [c["id"] for c in student.cells] == ["cell-0", "cell-1", "answer-ex1", "tests-ex1"]
    assert student.metadata["metaedu"]["points"] == {"ex1": 3.0}
    namespace: dict = {}
    exec(student.cells[2].source, namespace)  # the stub still defines f, which raises
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


@pytest.mark.parametrize("kwargs, message", [({"meta": False}, "exercise"), ({}, "no # BEGIN SOLUTION")])
def test_bad_answer_cells_are_rejected_with_a_reason(kwargs, message):
    with pytest.raises(nbtools.MarkerError, match=message):
        nbtools.student_version(_lecture_like("def f(x):\n    return 2 * x", **kwargs))


def test_assign_cli_on_solutions_and_lecture_notebooks(tmp_path):
    nb = _lecture_like("def f(x):\n    # BEGIN SOLUTION\n    return 2 * x\n    # END SOLUTION")
    nbformat.write(nb, str(tmp_path / "lecture.ipynb"))
    targets = [str(tmp_path / "lecture.ipynb")] + [str(load(a).solution) for a in ASSIGNMENTS]
    # the lecture notebooks that already carry exercises (others are being written)
    for path in sorted((REPO / "lectures").glob("*.ipynb")):
        if nbtools.exercises(nbtools.read(path)):
            targets.append(str(path))
    for target in targets:
        out = tmp_path / "out" / Path(target).parent.name
        assert cli_main(["assign", target, "--out", str(out)]) == 0
        student = nbtools.read(out / Path(target).name)
        nbformat.validate(student)
        text = json.dumps(student)
        assert "BEGIN SOLUTION" not in text and "hidden-tests" not in text
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
        assert json.loads((out / f"{Path(target).stem}.points.json").read_text())["points"]
    with pytest.raises(FileNotFoundError, match="no notebook"):
        nbtools.assign(tmp_path / "missing.ipynb", tmp_path)


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_notebook_points_match_the_visible_tests(name):
    assignment = load(name)
    points = nbtools.student_version(nbtools.read(assignment.solution)).metadata["metaedu"]["points"]
    visible: dict[str, float] = {}
    for test in assignment.tests:
        assert test.exercise in points, f"test {test.name!r} grades an exercise the notebook does not have"
        if test.visible:
            visible[test.exercise] = visible.get(test.exercise, 0.0) + test.points
    assert visible == points
    assert all(any(not t.visible for t in assignment.tests if t.exercise == e) for e in points), "every exercise has hidden tests"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solutions_pass_every_test_and_stubs_none(name):
    """The solution notebooks' torch code agrees with the grader's independent NumPy references."""
    assignment = load(name)
    solved, stubbed = solution_namespace(name), solution_namespace(name, stubbed=True)
    for seed in (SEED, SEED + 1):
        for i, test in enumerate(assignment.tests):
            args = draw_args(assignment, i, seed)
            assert scoring.compare(test, call(solved, test.function, args), test.reference(*args)) == (True, ""), test.name
            with pytest.raises(NotImplementedError):
                call(stubbed, test.function, args)
    assert scoring.score(assignment, SEED, {}, {})[0]["score"] == 0.0


def test_hidden_tests_catch_plausible_mistakes():
    """A class-major-only prototype and a first-order-only meta-gradient lose the hidden points."""
    protonet, maml = load("episodes_protonet"), load("maml_inner_loop")
    i = next(k for k, t in enumerate(protonet.tests) if "not sorted" in t.name)
    z, y, n_way = draw_args(protonet, i, SEED)
    lazy = z.reshape(z.shape[0], n_way, -1, z.shape[-1]).mean(2)  # assumes class-major order
    assert not scoring.compare(protonet.tests[i], [lazy], protonet.tests[i].reference(z, y, n_way))[0]
    i = next(k for k, t in enumerate(maml.tests) if "second order" in t.name)
    args = draw_args(maml, i, SEED)
    first_order = maml.tests[i].reference(*args[:-1], True)
    assert not scoring.compare(maml.tests[i], [first_order], maml.tests[i].reference(*args))[0]


def test_maml_reference_matches_finite_differences():
    from metaedu.grading.assignments.maml_inner_loop import grader_tests as gt

    rng = np.random.default_rng(0)
    w, x_s, y_s, x_q, y_q = gt._task(rng, 3, 5, 4)

    def query_loss(w0):
        w_k = gt.ref_adapt(w0, x_s, y_s, 0.07, 3)
        return np.mean((x_q @ w_k - y_q) ** 2)

    eps = 1e-6
    numeric = np.array([(query_loss(w + eps * e) - query_loss(w - eps * e)) / (2 * eps) for e in np.eye(3)])
    np.testing.assert_allclose(gt.ref_meta_gradient(w, x_s, y_s, x_q, y_q, 0.07, 3, False), numeric, rtol=1e-6)


def test_compare_needs_numbers_of_the_right_shape():
    visible, hidden = load("lrua_memory").tests[0], load("lrua_memory").tests[4]
    expected = np.array([[0.0, 1.0, 0.0, 1.0]])
    for test in (visible, hidden):
        assert scoring.compare(test, [expected.copy()], expected)[0]
        assert "shape" in scoring.compare(test, [expected[0]], expected)[1]
        assert "returned 2" in scoring.compare(test, [expected, expected], expected)[1]
        assert "not finite" in scoring.compare(test, [expected * np.nan], expected)[1]
        assert "wrong values" in scoring.compare(test, [1 - expected], expected)[1]
        assert "no value" in scoring.compare(test, None, expected)[1]
        assert "shape" in scoring.compare(test, [np.array(["a", "b", "c", "d"]).reshape(1, 4)], expected)[1]
    # a hidden test's reason holds no number that came from its inputs or its expected values
    assert "(4,)" in scoring.compare(visible, [expected[0]], expected)[1] and "difference" in scoring.compare(visible, [1 - expected], expected)[1]
    assert scoring.compare(hidden, [expected[0]], expected)[1] == "value 0: wrong shape"
    assert scoring.compare(hidden, [1 - expected], expected)[1] == "value 0: wrong values"


def _submission(name: str, edit) -> bytes:
    nb = nbtools.student_version(nbtools.read(load(name).solution))
    data = json.loads(nbformat.writes(nb))
    edit(data)
    return json.dumps(data).encode()


def test_rebuild_takes_only_answer_sources():
    assignment = load("episodes_protonet")

    def edit(data):
        for cell in data["cells"]:
            cell["metadata"] = {"tags": ["skip-execution"]}
            if cell["id"] == "answer-prototypes":
                cell["source"] = "def prototypes(*a):\n    return 42\n"
            if cell["id"] == "answer-loss":
                cell["id"], cell["source"] = "renamed", "def renamed_loss():\n    pass\n"
        data["metadata"]["kernelspec"] = {"name": "evil", "display_name": "evil", "language": "python"}
        data["cells"].append({"cell_type": "code", "id": "x", "metadata": {"tags": ["injected-parameters"]},
                              "source": "SEED = 99", "outputs": [], "execution_count": None})

    nb, missing, warnings = submission.rebuild(assignment, _submission("episodes_protonet", edit))
    template = submission.template(assignment)
    assert missing == ["loss"] and warnings == ["1 code cell(s) after the last answer cell were not run (they come after every answer)"]
    assert nb.metadata == template.metadata and len(nb.cells) == len(template.cells)
    for got, want in zip(nb.cells, template.cells):
        assert got.metadata == want.metadata
        assert got.source == ("def prototypes(*a):\n    return 42\n" if got["id"] == "answer-prototypes" else want.source)


def _answers(nb) -> dict[str, str]:
    return {nbtools.meta(c)["exercise"]: c.source for c in nb.cells if "answer" in nbtools.tags(c)}


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_answers_are_found_without_ids_or_metadata(name):
    """By id, by tag and exercise metadata (nbformat 4.0, the solution notebook), by the functions defined (finding 7)."""
    assignment = load(name)
    solved = {f"answer-{k}": v for k, v in _answers(nbtools.read(assignment.solution)).items()}

    def no_ids(data):
        for cell in data["cells"]:
            cell_id = cell.pop("id", None)
            if cell_id in solved:
                cell["source"] = solved[cell_id]
        data["nbformat_minor"] = 0

    def nothing_left(data):
        for cell in data["cells"]:
            if cell.get("id") in solved:
                cell["source"] = solved[cell["id"]]
            cell.pop("id", None)
            cell["metadata"] = {}
            if cell["cell_type"] == "code":
                cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x" * 2**20}]

    expected = {k[len("answer-"):]: v for k, v in solved.items()}
    for edit in (no_ids, nothing_left):
        nb, missing, warnings = submission.rebuild(assignment, _submission(name, edit))
        assert not missing and not warnings
        assert _answers(nb) == expected, edit.__name__
    nb, missing, warnings = submission.rebuild(assignment, assignment.solution.read_bytes())
    assert not missing and not warnings and _answers(nb) == expected


def test_duplicates_added_cells_and_outputs():
    """First of two answer cells kept with a warning; a helper cell runs before its answer; outputs ignored."""
    assignment = load("episodes_protonet")

    def edit(data):
        ids = [c["id"] for c in data["cells"]]
        first = data["cells"][ids.index("answer-distances")]
        first["source"] = "def squared_distances(a, b):\n    return helper(a, b)\n"
        data["cells"].insert(ids.index("answer-distances") + 1, dict(first, source="def squared_distances(a, b):\n    return 0\n"))
        data["cells"].insert(ids.index("answer-distances"), {"cell_type": "code", "id": "mine", "metadata": {},
                                                            "source": "def helper(a, b):\n    return a - b\n",
                                                            "outputs": [{"output_type": "stream", "name": "stdout", "text": "y" * 3 * 2**20}]})
        data["cells"].append({"cell_type": "code", "metadata": {}, "source": "print('scratch')", "outputs": []})

    nb, missing, warnings = submission.rebuild(assignment, _submission("episodes_protonet", edit))
    assert not missing and len(warnings) == 2 and "second answer cell" in warnings[0] and "after the last answer" in warnings[1]
    assert _answers(nb)["distances"] == "def squared_distances(a, b):\n    return helper(a, b)\n"
    sources = submission.stage_b_cells(nb)
    assert sources.index("def helper(a, b):\n    return a - b\n") == sources.index(_answers(nb)["distances"]) - 1
    assert "print('scratch')" not in sources


@pytest.mark.parametrize("raw, message", [
    (b"\x89PNG not a notebook", "not a JSON notebook"),
    (b'{"nbformat": 3, "worksheets": []}', "version-4"),
    (b"[1, 2]", "version-4"),
    (b" " * (submission.MAX_FILE_BYTES + 1), "limit"),
    (b'{"nbformat": 4, "cells": [{"cell_type": "code", "source": 5}]}', "not text"),
])
def test_invalid_submissions_are_rejected_with_a_reason(raw, message):
    with pytest.raises(submission.Rejected, match=message) as info:
        submission.code_cells(raw)
    assert info.value.status == "invalid_notebook"


def test_feedback_never_shows_the_hidden_tests_source_or_what_the_code_said():
    assignment = load("maml_inner_loop")
    crafted = "x=[0.1234, 0.5678]"  # an exception class named after the inputs
    rows = scoring.score(assignment, SEED, {}, {3: "NameError", 4: crafted})
    result = {"assignment": assignment.name, "submission": "s.ipynb", "score": 0.0, "max_score": assignment.max_points(),
              "status": "ok", "reason": "", "tests": rows, "warnings": []}
    text = scoring.feedback(result)
    assert "raised NameError" in text and "raised an exception" in text and "(hidden)" in text and crafted not in text
    assert "ref_meta_gradient" not in text and "matrix_power" not in text and "default_rng" not in text


def test_grader_seeds_make_the_same_inputs_every_time_and_new_ones_per_run():
    assignment = load("lrua_memory")
    differ = 0
    for i, test in enumerate(assignment.tests):
        for a, b, c in zip(draw_args(assignment, i, SEED), draw_args(assignment, i, SEED), draw_args(assignment, i, SEED + 1)):
            np.testing.assert_array_equal(a, b)
            differ += not np.array_equal(a, c)
        if test.visible:
            assert all(np.array_equal(a, c) for a, c in zip(draw_args(assignment, i, SEED), draw_args(assignment, i, SEED + 1)))
    assert differ > 0


def test_the_library_would_answer_the_memory_homework():
    """Why the grader hides ``metaedu.algorithms.mann``: outside the sandbox, calling it scores (finding 12)."""
    import grading_fixtures

    assignment = load("lrua_memory")
    namespace: dict = {}
    exec("import torch\nimport torch.nn.functional as F", namespace)  # noqa: S102
    data = grading_fixtures.library_answers()
    for cell in data["cells"]:
        if cell.get("id", "").startswith("answer-"):
            exec("".join(cell["source"]), namespace)  # noqa: S102 - our own fixture
    rows = scoring.score(assignment, SEED, {i: call(namespace, t.function, draw_args(assignment, i, SEED))
                                            for i, t in enumerate(assignment.tests)}, {})
    assert sum(r["score"] for r in rows) >= assignment.max_points() - 1  # all but the ties of the least-used weights
