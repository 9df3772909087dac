"""Visible exercise checks in lecture notebooks, and the marker convention for exercises.

**The convention** (read by ``metaedu assign`` and ``metaedu grade``):

* An *answer cell* is a code cell tagged ``answer`` with ``metadata["metaedu"] =
  {"exercise": "<id>"}``. It defines functions; the lines of the reference
  solution sit between a ``# BEGIN SOLUTION`` and an ``# END SOLUTION`` line, inside
  a function body. The student version replaces them by a ``raise
  NotImplementedError`` at the same indentation, so the cell still runs.
* A *check cell* follows it: tagged ``tests``, ``metadata["metaedu"] =
  {"exercise": "<id>", "points": N}``, using :func:`check` so that a missing or
  wrong answer is reported and the notebook goes on running.

In the instructor's notebook (and in the test suite, ``METAEDU_STRICT_CHECKS=1``)
a failing check raises, so a broken reference solution cannot go unnoticed.

**Cells after an exercise run whether or not it is solved** (the student version must run top
to bottom). A later cell that needs the exercise's function takes it through
:func:`answer_or_reference`: the student's function when every check of that exercise
passed, otherwise the package's reference implementation, with a line saying so.
"""

from __future__ import annotations

import os
import traceback
from typing import Callable

RESULTS: list[tuple[str, bool, str]] = []
#: Exercise id -> whether every check of it passed so far (checks given ``exercise=``).
EXERCISES: dict[str, bool] = {}


def strict() -> bool:
    return os.environ.get("METAEDU_STRICT_CHECKS", "") not in ("", "0", "false")


def check(description: str, test: Callable[[], object], exercise: str | None = None) -> None:
    """Run one visible test and print ✓ or ✗ with the reason.

    ``test`` raises (an ``AssertionError`` or anything else) when the answer is wrong. The
    outcome is recorded in :data:`RESULTS` (and, with ``exercise`` = the exercise id, in
    :data:`EXERCISES` for :func:`answer_or_reference`); nothing is returned, so a check at the
    end of a cell echoes nothing.
    """
    passed = _run_check(description, test)
    if exercise is not None:
        EXERCISES[exercise] = EXERCISES.get(exercise, True) and passed


def _run_check(description: str, test: Callable[[], object]) -> bool:
    try:
        test()
    except NotImplementedError:
        RESULTS.append((description, False, "not answered yet"))
        print(f"✗ {description}: not answered yet")
        if strict():
            raise
        return False
    except Exception as err:  # the student's code may fail in any way
        reason = f"{err.__class__.__name__}: {err}" if str(err) else err.__class__.__name__
        RESULTS.append((description, False, reason))
        print(f"✗ {description}: {reason}")
        if strict():
            traceback.print_exc()
            raise
        return False
    RESULTS.append((description, True, ""))
    print(f"✓ {description}")
    return True


def answer_or_reference(exercise: str, answer: Callable, reference: Callable) -> Callable:
    """The student's ``answer`` if every check of ``exercise`` passed, else the package's ``reference``.

    Prints which one the following cells use, so a student whose exercise is unfinished sees
    that the rest of the notebook runs on the reference implementation.
    """
    name = getattr(reference, "__qualname__", repr(reference))
    module = getattr(reference, "__module__", "")
    if exercise not in EXERCISES:
        print(f"ⓘ exercise {exercise!r} has not been checked yet: using the package's {module}.{name}")
        return reference
    if EXERCISES[exercise]:
        return answer
    print(f"ⓘ exercise {exercise!r} is not solved yet: the cells below use the package's {module}.{name}")
    return reference
