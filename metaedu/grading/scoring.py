"""Scoring in the grader's own process, and what the student is told.

The values that come back from the sandbox are compared with the assignment's NumPy references
here; nothing the sandbox says about itself is believed. The feedback names each check and why it
failed in words chosen here: nothing the student's code wrote reaches it, because in stage B that
code can read the hidden tests' inputs and could spell them out in an error message (finding 9 of
issue 17). An exception is named only when it is one of Python's built-in exceptions (a student's
exception class could be named after the inputs). The differences of a visible check are shown
(its inputs are in the notebook); a hidden test says only what kind of mistake it found.
"""

from __future__ import annotations

import builtins

import numpy as np

from metaedu.grading.spec import Assignment, draw_args


def exception_name(name) -> str:
    """``name`` if it is a built-in exception's name, else a neutral word."""
    value = getattr(builtins, name, None) if isinstance(name, str) and name.isidentifier() else None
    return name if isinstance(value, type) and issubclass(value, BaseException) else "an exception"


def compare(test, got: list[np.ndarray] | None, expected) -> tuple[bool, str]:
    """Whether the returned arrays match the reference, with a short reason when they do not."""
    want = [np.asarray(e, dtype=np.float64) for e in (expected if isinstance(expected, tuple) else (expected,))]
    if got is None:
        return False, "no value came back"
    if len(got) != len(want):
        return False, f"returned {len(got)} value(s), expected {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        if g.dtype.kind not in "fiub" or g.shape != w.shape:
            detail = f": shape {tuple(g.shape)}, expected {tuple(w.shape)}" if test.visible else ""
            return False, f"value {k}: wrong shape{detail}"
        g = g.astype(np.float64)
        if not np.all(np.isfinite(g)):
            return False, f"value {k}: not finite"
        if not np.allclose(g, w, rtol=test.rtol, atol=test.atol):
            detail = f" (largest difference {np.max(np.abs(g - w)):.3g})" if test.visible else ""
            return False, f"value {k}: wrong values{detail}"
    return True, ""


def score(
    assignment: Assignment, seed: int, results: dict[int, list[np.ndarray]], errors: dict[int, str]
) -> list[dict]:
    """One row per test; ``errors`` holds the exception name each failed call raised."""
    rows = []
    for i, test in enumerate(assignment.tests):
        expected = test.reference(*draw_args(assignment, i, seed))
        passed, reason = compare(test, results.get(i), expected)
        if not passed and i in errors:
            reason = f"raised {exception_name(errors[i])}"
        rows.append(
            {
                "test": test.name,
                "exercise": test.exercise,
                "visible": test.visible,
                "points": float(test.points),
                "score": float(test.points) if passed else 0.0,
                "reason": reason,
            }
        )
    return rows


def zero(assignment: Assignment, why: str) -> list[dict]:
    return [
        {
            "test": t.name,
            "exercise": t.exercise,
            "visible": t.visible,
            "points": float(t.points),
            "score": 0.0,
            "reason": why,
        }
        for t in assignment.tests
    ]


def feedback(result: dict) -> str:
    """What the student is told: status, reason, warnings, each test's name, score and reason."""
    lines = [
        f"# {result['assignment']}: {result['submission']}",
        "",
        f"Score: {result['score']:g} / {result['max_score']:g}",
        f"Status: {result['status']}",
    ]
    if result["reason"]:
        lines.append(f"Reason: {result['reason']}")
    lines += [f"Note: {w}" for w in result.get("warnings", [])]
    lines.append("")
    for row in result["tests"]:
        mark = "✓" if row["score"] == row["points"] else "✗"
        kind = "visible" if row["visible"] else "hidden"
        lines.append(
            f"- {mark} {row['test']} ({kind}): {row['score']:g}/{row['points']:g}"
            + (f" — {row['reason']}" if row["reason"] else "")
        )
    return "\n".join(lines) + "\n"
