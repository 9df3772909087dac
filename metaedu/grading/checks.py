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
"""

from __future__ import annotations

import os
import traceback
from typing import Callable

RESULTS: list[tuple[str, bool, str]] = []


def strict() -> bool:
    return os.environ.get("METAEDU_STRICT_CHECKS", "") not in ("", "0", "false")


def check(description: str, test: Callable[[], object]) -> bool:
    """Run one visible test; print ✓ or ✗ with the reason; return whether it passed.

    ``test`` raises (an ``AssertionError`` or anything else) when the answer is wrong.
    """
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
