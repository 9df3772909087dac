"""How an assignment's grader-side tests are written (trusted code, never shown to students).

Each test calls one of the student's functions on inputs drawn by the grader and compares
what comes back with an independent NumPy reference, in the grader's own process:

* ``make_args(rng)`` draws the arguments (NumPy arrays become ``float64``/``int64`` torch
  tensors in the student's process; Python ints and floats pass as they are);
* ``reference(*args)`` computes the expected value(s) with NumPy;
* the student's function returns a tensor, a number or a tuple of them; only their values
  come back (``.npz`` without pickle) and are compared here with ``np.allclose``.

``visible=True`` marks the tests that repeat a check the student sees in the notebook: their
points must add up to the ``points`` recorded in the notebook's ``tests`` cell.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ASSIGNMENTS_DIR = Path(__file__).parent / "assignments"


@dataclass(frozen=True)
class Test:
    name: str  # shown to the student in the feedback
    exercise: str  # the answer cell it grades
    points: float
    function: str  # the student's function that is called
    make_args: Callable[[np.random.Generator], list]
    reference: Callable[..., object]
    visible: bool = False
    rtol: float = 1e-5
    atol: float = 1e-7


@dataclass(frozen=True)
class Assignment:
    name: str
    folder: Path
    tests: tuple[Test, ...]
    seed: int  # the grader's seed: the notebook's SEED and every test's inputs derive from it
    notebook_cpu_s: float  # CPU seconds the whole notebook may use in stage A

    @property
    def solution(self) -> Path:
        return self.folder / "solution.ipynb"

    def max_points(self) -> float:
        return float(sum(t.points for t in self.tests))

    def fingerprint(self) -> str:
        """A hash of the solution notebook and the tests' module (recorded in every result)."""
        digest = hashlib.sha256()
        for path in (self.solution, self.folder / "grader_tests.py"):
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


def available() -> list[str]:
    return sorted(p.name for p in ASSIGNMENTS_DIR.iterdir() if (p / "grader_tests.py").is_file())


def load(name: str) -> Assignment:
    """The assignment called ``name`` (a folder of ``metaedu/grading/assignments``)."""
    if name not in available():
        raise ValueError(f"unknown assignment {name!r}; available: {', '.join(available())}")
    module = importlib.import_module(f"metaedu.grading.assignments.{name}.grader_tests")
    tests = tuple(module.TESTS)
    names = [t.name for t in tests]
    if len(set(names)) != len(names):
        raise ValueError(f"assignment {name!r} has two tests with the same name")
    return Assignment(name, ASSIGNMENTS_DIR / name, tests, int(module.SEED), float(getattr(module, "NOTEBOOK_CPU_S", 120)))


def draw_args(assignment: Assignment, index: int) -> list:
    """The arguments of test ``index``: the same on every regrade."""
    rng = np.random.default_rng([assignment.seed, index])
    return assignment.tests[index].make_args(rng)
