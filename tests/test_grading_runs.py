"""A grading run's output folder and what crosses the sandbox's boundary (no sandbox: grading is faked).

Rows written as each submission is graded, any file name, a run that resumes with its seed,
no formulas in the gradebook (findings 8 and 10 of issue 17), and results that cannot make the
grader allocate more than it was sent (finding 5).
"""

from __future__ import annotations

import base64
import hashlib
import csv
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from metaedu.grading import gradebook, grader, transfer
from metaedu.grading.spec import load

NAMES = [
    "gradebook.csv.ipynb",
    "=1+2.ipynb",
    "a b.ipynb",
    "a_b.ipynb",
    os.fsdecode(b"caf\xe9.ipynb"),
    "-x@y.ipynb",
    "ok.ipynb",
]


@pytest.fixture
def fake_grading(monkeypatch):
    """grade_one without sandboxes: a result whose reason is a formula; the calls are recorded."""
    calls = []

    def grade_one(assignment, path, settings, seed, raw, unread=""):
        calls.append(path.name)
        rows = [
            {
                "test": t.name,
                "exercise": t.exercise,
                "visible": t.visible,
                "points": float(t.points),
                "score": 0.0,
                "reason": "",
            }
            for t in assignment.tests
        ]
        return {
            "submission": gradebook.shown(path.name),
            "assignment": assignment.name,
            "status": "cell_error",
            "reason": '=HYPERLINK("http://example.invalid","x")',
            "score": 0.0,
            "max_score": assignment.max_points(),
            "tests": rows,
            "warnings": [],
            "sha256": hashlib.sha256(raw).hexdigest(),
            "seed": seed,
            "assignment_hash": assignment.fingerprint(),
            "sandbox": "bubblewrap",
            "duration_s": 0.0,
        }

    monkeypatch.setattr(grader, "grade_one", grade_one)
    monkeypatch.setattr(grader.sandbox, "require_isolation", lambda unsafe=False: "bubblewrap")
    return calls


def _rows(out: Path) -> list[list[str]]:
    return list(csv.reader((out / "gradebook.csv").read_text(encoding="utf-8").splitlines()))


def test_rows_are_written_as_graded_for_any_file_name_and_a_rerun_resumes(tmp_path, fake_grading):
    submissions, out = tmp_path / "subs", tmp_path / "out"
    submissions.mkdir()
    for name in NAMES:
        (submissions / name).write_bytes(b"{}")
    seen_rows = []
    results = grader.grade_folder(
        submissions,
        "episodes_protonet",
        out,
        grader.Settings(progress=False),
        on_result=lambda r: seen_rows.append(len(_rows(out)) - 1),
    )
    assert seen_rows == list(range(1, len(NAMES) + 1)), "rows must be written as each submission is graded"
    rows = _rows(out)
    assert len(rows) == len(NAMES) + 1 and sorted(r[0] for r in rows[1:]) == sorted(
        gradebook.neutral(gradebook.shown(n)) for n in NAMES
    )
    assert "caf\\xe9.ipynb" in {r[0] for r in rows} and not any(
        c.startswith(gradebook.FORMULA_STARTS) for r in rows for c in r
    )
    assert len({r["seed"] for r in results}) == 1 and (out / "gradebook.csv").is_file()
    folders = sorted(p.name for p in (out / "submissions").iterdir())
    assert len(folders) == len(NAMES) and all((out / "submissions" / f / "feedback.md").is_file() for f in folders)
    # a rerun resumes: the same seed, nothing graded twice, the new submission graded
    (submissions / "late.ipynb").write_bytes(b"{}")
    fake_grading.clear()
    again = grader.grade_folder(submissions, "episodes_protonet", out, grader.Settings(progress=False))
    assert fake_grading == ["late.ipynb"] and {r["seed"] for r in again} == {results[0]["seed"]}
    assert len(_rows(out)) == len(NAMES) + 2
    # a changed file is graded again; another assignment or seed in the same folder is refused
    (submissions / "ok.ipynb").write_bytes(b'{"changed": 1}')
    fake_grading.clear()
    grader.grade_folder(submissions, "episodes_protonet", out, grader.Settings(progress=False))
    assert fake_grading == ["ok.ipynb"]
    with pytest.raises(ValueError, match="another folder"):
        grader.grade_folder(submissions, "lrua_memory", out, grader.Settings(progress=False))
    with pytest.raises(ValueError, match="seed"):
        grader.grade_folder(
            submissions, "episodes_protonet", out, grader.Settings(seed=results[0]["seed"] + 1, progress=False)
        )


def test_an_existing_output_folder_keeps_its_mode_and_a_new_one_is_private(tmp_path, fake_grading):
    submissions = tmp_path / "subs"
    submissions.mkdir()
    (submissions / "a.ipynb").write_bytes(b"{}")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    grader.grade_folder(submissions, "episodes_protonet", shared, grader.Settings(progress=False))
    grader.grade_folder(submissions, "episodes_protonet", tmp_path / "new", grader.Settings(progress=False))
    assert shared.stat().st_mode & 0o777 == 0o755 and (tmp_path / "new").stat().st_mode & 0o777 == 0o700


def test_arrays_round_trip_and_forged_ones_are_refused_before_allocating():
    for array in (np.arange(6.0).reshape(2, 3), np.array(3.5), np.array([[1, 2]]), np.array([True, False])):
        back = transfer.decode(json.loads(json.dumps(transfer.encode(array))))
        assert back.dtype == array.dtype and np.array_equal(back, array)
    huge = {"dtype": "<f8", "shape": [200_000_000], "data": ""}
    tracemalloc.start()
    for forged in (
        huge,
        {"dtype": "<f8", "shape": [10**6, 10**6], "data": "AAAA"},
        {"dtype": "|O", "shape": [1], "data": "AAAA"},
        {"dtype": "<f8", "shape": [2], "data": base64.b64encode(b"x" * 15).decode()},
        {"dtype": "<f8", "shape": "1"},
    ):
        with pytest.raises(ValueError):
            transfer.decode(forged)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**20
    junk = (
        b"[" * (transfer.MAX_LINE_BYTES + 1)
        + b"\n"
        + b"{not json\n"
        + json.dumps({"result": 0}).encode()
        + b"\n"
        + b'{"cut": '
    )
    assert transfer.lines(junk) == [{"result": 0}]


def test_every_gradebook_cell_is_safe_in_a_spreadsheet():
    assert (
        gradebook.neutral("=1+2") == "'=1+2" and gradebook.neutral("-3") == "'-3" and gradebook.neutral("@x") == "'@x"
    )
    assert gradebook.neutral("ok") == "ok" and gradebook.neutral(13.0) == 13.0
    assert gradebook.key("gradebook.csv.ipynb") != gradebook.key("gradebook_csv.ipynb")
    assert gradebook.key("a b.ipynb") != gradebook.key("a_b.ipynb")
    assert gradebook.shown(os.fsdecode(b"caf\xe9.ipynb")) == "caf\\xe9.ipynb"
    assert load("episodes_protonet").fingerprint()
