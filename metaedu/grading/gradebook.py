"""The grader's output folder: a row per submission as soon as it is graded, and a run that can resume.

Layout of ``--out``::

    gradebook.csv                     one row per graded submission, rewritten (atomically) after each one
    run.json                          the assignment, its fingerprint, the run's seed (a shard's share
                                      and list of submissions, a merge's sources: metaedu.grading.shards)
    submissions/<key>/result.json     everything about one submission
    submissions/<key>/feedback.md     what its student is told

``<key>`` is a readable form of the file name plus a hash of its exact bytes, so any file name
works (``gradebook.csv.ipynb``, names that are not UTF-8...: finding 8 of issue 17); the name
shown in the CSV and the JSON writes undecodable bytes as ``\\xNN``. Every CSV cell that a
spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return) is prefixed with an apostrophe (finding 10).

A rerun on the same folder resumes: it keeps the run's seed, and a submission whose result is
there for the same bytes is not graded again (unless the grader itself failed on it). An
existing folder keeps its permissions; a new one is made readable by its owner only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import secrets
import tempfile
from pathlib import Path

from metaedu.grading.scoring import feedback
from metaedu.grading.spec import Assignment

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def shown(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 become ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def key(name: str) -> str:
    """The folder of a submission's results: readable, and distinct for distinct file names."""
    stem = name[: -len(".ipynb")] if name.endswith(".ipynb") else name
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", shown(stem)).lstrip(".")[:60] or "submission"
    return f"{readable}-{hashlib.sha256(os.fsencode(name)).hexdigest()[:10]}"


def neutral(value):
    """A CSV cell that no spreadsheet runs as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8"
    ) as fh:
        fh.write(text)
    os.replace(fh.name, path)


class Run:
    """One grading run's output folder."""

    def __init__(self, out: str | Path, assignment: Assignment, seed: int | None = None, extra: dict | None = None):
        """``extra``: more of ``run.json`` (a shard's share, a merge's sources), the same when resuming."""
        self.out, self.assignment, extra = Path(out), assignment, extra or {}
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} exists and is not a folder")
        if not self.out.exists():
            self.out.mkdir(parents=True, mode=0o700)
        (self.out / "submissions").mkdir(exist_ok=True)
        state_file = self.out / "run.json"
        fingerprint = assignment.fingerprint()
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state.get("assignment") != assignment.name or state.get("assignment_hash") != fingerprint:
                raise ValueError(
                    f"--out {self.out} holds the grades of {state.get('assignment')!r} "
                    f"(tests {state.get('assignment_hash')}); grade {assignment.name!r} into another folder"
                )
            if seed is not None and seed != state["seed"]:
                raise ValueError(
                    f"--out {self.out} was graded with seed {state['seed']}; resume with it or use another folder"
                )
            for field, value in extra.items():
                if state.get(field) != value:
                    raise ValueError(
                        f"--out {self.out} was graded with another {field} ({_brief(state.get(field))}, "
                        f"not {_brief(value)}); resume with the same options or use another folder"
                    )
            self.seed = int(state["seed"])
        else:
            self.seed = secrets.randbits(31) if seed is None else int(seed)
            write_atomically(
                state_file,
                json.dumps(
                    {"assignment": assignment.name, "assignment_hash": fingerprint, "seed": self.seed, **extra},
                    indent=1,
                )
                + "\n",
            )
        self.results = self.load_results(self.out, self.seed, fingerprint)
        self.missing: dict[str, tuple[str, str]] = {}  # key -> (name shown, why): rows of a merge without a result

    @staticmethod
    def load_results(out: Path, seed: int, fingerprint: str) -> dict[str, dict]:
        """The results in folder ``out`` graded with this seed and these tests, by submission key."""
        results = {}
        for path in sorted((Path(out) / "submissions").glob("*/result.json")):
            try:
                result = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if result.get("seed") == seed and result.get("assignment_hash") == fingerprint:
                results[path.parent.name] = result
        return results

    def previous(self, name: str, sha256: str) -> dict | None:
        """The result of this submission from an earlier, interrupted run of this folder."""
        result = self.results.get(key(name))
        if result and result.get("sha256") == sha256 and result.get("status") != "harness_error":
            return result
        return None

    def record(self, name: str, result: dict) -> None:
        """Write one submission's result and feedback, then the whole gradebook again."""
        self.store(key(name), result)
        self.write_gradebook()

    def store(self, folder_key: str, result: dict) -> None:
        """Write one submission's result and feedback into ``submissions/<folder_key>``."""
        folder = self.out / "submissions" / folder_key
        folder.mkdir(exist_ok=True)
        write_atomically(folder / "result.json", json.dumps(result, indent=1) + "\n")
        write_atomically(folder / "feedback.md", feedback(result))
        self.results[folder_key] = result

    def write_gradebook(self) -> None:
        write_atomically(self.out / "gradebook.csv", self.csv())

    def csv(self) -> str:
        """The gradebook: a row per result and per submission a merge found without one, by name."""
        tests = [t.name for t in self.assignment.tests]
        rows = []
        for r in self.results.values():
            per_test = {row["test"]: row["score"] for row in r["tests"]}
            rows.append(
                [
                    r["submission"],
                    r["status"],
                    r["score"],
                    r["max_score"],
                    *[per_test.get(t, 0.0) for t in tests],
                    r["seed"],
                    r["duration_s"],
                    r["sha256"],
                    r["reason"][:300],
                ]
            )
        for name, why in self.missing.values():  # no score: not a zero but a submission still to grade
            rows.append([name, "not_graded", "", self.assignment.max_points(), *[""] * len(tests), "", "", "", why])
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            ["submission", "status", "score", "max_score", *tests, "seed", "duration_s", "sha256", "reason"]
        )
        for row in sorted(rows, key=lambda row: row[0]):
            writer.writerow([neutral(v) for v in row])
        return buffer.getvalue()


def _brief(value) -> str:
    """A ``run.json`` field in a message (a shard's list of submissions is long)."""
    if isinstance(value, dict) and "index" in value:
        return f"shard {value['index']}/{value['count']} of {len(value.get('submissions', []))} submissions"
    return repr(value)
