"""Computed verdicts: "A beats B" only when the numbers say so.

A lecture never writes "beats", "matches" or "fails" by hand. It computes a
:class:`Verdict` from the scores it has just printed and shows it; the sentence
is built from the outcome, and the outcome from the interval:

* **paired** (:func:`paired`): both methods were scored on the same test episodes
  or tasks; the verdict reads the 95% interval of the per-episode difference
  ``a - b``. This is the sharp comparison and the default whenever it is possible.
* **unpaired** (:func:`unpaired`): two independent scores; the difference of the
  means with half-width ``sqrt(ci_a^2 + ci_b^2)``.
* **against a value** (:func:`against`): a score against a fixed target (chance,
  a paper's figure, a threshold of the issue).

The outcome is ``"better"`` when the whole interval lies on the good side of zero
(above for accuracies, below for errors), ``"worse"`` when it lies wholly on the
bad side, and ``"level"`` otherwise: "cannot be told apart at this sample size".

:func:`show` prints the sentence and attaches the numbers to the cell's output as
``application/vnd.metaedu.verdict+json``, so that the test suite can re-check
every verdict of every executed lecture against its numbers
(:func:`consistency_problems`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

import torch

from metaedu.evaluation import Score, mean_ci

MIME = "application/vnd.metaedu.verdict+json"
OUTCOMES = ("better", "worse", "level")
#: Default words for each outcome: "<a> beats <b>", "<a> is behind <b>", "<a> and <b> cannot be told apart".
WORDS = {"better": "beats", "worse": "is behind", "level": "cannot be told apart from"}


@dataclass
class Verdict:
    """The outcome of comparing ``a`` with ``b`` (a method, or a fixed value), and its numbers."""

    a: str  # the method the sentence is about
    b: str  # what it is compared with (a method's name, or a value such as "chance (20%)")
    what: str  # the quantity, e.g. "5-way 1-shot accuracy (%)" or "query MSE"
    kind: str  # "paired", "unpaired" or "against"
    diff: float  # mean of a - b
    ci95: float  # half-width of the 95% interval of the difference
    n: int  # episodes or tasks behind the difference (the smaller one when unpaired)
    higher_is_better: bool
    outcome: str  # "better", "worse" or "level" (see the module docstring)
    word: str  # the verb phrase used for the outcome

    @property
    def low(self) -> float:
        return self.diff - self.ci95

    @property
    def high(self) -> float:
        return self.diff + self.ci95

    @property
    def better(self) -> bool:
        return self.outcome == "better"

    @property
    def worse(self) -> bool:
        return self.outcome == "worse"

    @property
    def level(self) -> bool:
        return self.outcome == "level"

    def sentence(self) -> str:
        numbers = f"{self.a} − {self.b} = {self.diff:+.3g} (95% interval {self.low:+.3g} to {self.high:+.3g}"
        numbers += f", {self.kind}, n = {self.n})"
        return f"{self.what}: {self.a} {self.word} {self.b}; {numbers}."

    def __str__(self) -> str:
        return self.sentence()

    def as_dict(self) -> dict:
        return asdict(self)


def outcome_of(low: float, high: float, higher_is_better: bool) -> str:
    """``"better"``/``"worse"``/``"level"`` from the interval ``[low, high]`` of ``a - b``."""
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"not an interval: [{low}, {high}]")
    if low > 0:
        return "better" if higher_is_better else "worse"
    if high < 0:
        return "worse" if higher_is_better else "better"
    return "level"


def _make(a, b, what, kind, diff, ci95, n, higher_is_better, words) -> Verdict:
    words = {**WORDS, **(words or {})}
    outcome = outcome_of(diff - ci95, diff + ci95, higher_is_better)
    return Verdict(a, b, what, kind, float(diff), float(ci95), int(n), bool(higher_is_better), outcome, words[outcome])


def paired(a: str, a_values, b: str, b_values, what: str, higher_is_better: bool = True,
           words: dict[str, str] | None = None) -> Verdict:
    """Compare two methods scored on the same episodes (``a_values[i]`` and ``b_values[i]`` share episode i)."""
    va = torch.as_tensor(a_values, dtype=torch.float64).flatten()
    vb = torch.as_tensor(b_values, dtype=torch.float64).flatten()
    if va.shape != vb.shape:
        raise ValueError(f"a paired comparison needs the same episodes: {a} has {va.numel()} values, {b} {vb.numel()}")
    diff = mean_ci(va - vb, unit="diff")
    return _make(a, b, what, "paired", diff.mean, diff.ci95, diff.n, higher_is_better, words)


def unpaired(a: str, a_score: Score, b: str, b_score: Score, what: str, higher_is_better: bool = True,
             words: dict[str, str] | None = None) -> Verdict:
    """Compare two independent scores (different episodes): half-width ``sqrt(ci_a^2 + ci_b^2)``."""
    ci = math.sqrt(a_score.ci95**2 + b_score.ci95**2)
    return _make(a, b, what, "unpaired", a_score.mean - b_score.mean, ci, min(a_score.n, b_score.n),
                 higher_is_better, words)


def against(a: str, a_score: Score, value: float, label: str, what: str, higher_is_better: bool = True,
            words: dict[str, str] | None = None) -> Verdict:
    """Compare a score with a fixed value (``label`` names it, e.g. "chance (20%)")."""
    return _make(a, label, what, "against", a_score.mean - value, a_score.ci95, a_score.n, higher_is_better, words)


def show(verdict: Verdict) -> Verdict:
    """Print the verdict's sentence, carrying its numbers for :func:`consistency_problems`."""
    try:
        from IPython.display import display

        display({"text/plain": verdict.sentence(), MIME: verdict.as_dict()}, raw=True)
    except ImportError:  # pragma: no cover - IPython is a dependency, scripts may still lack a display
        print(verdict.sentence())
    return verdict


def consistency_problems(records: Iterable[dict]) -> list[str]:
    """Every verdict whose outcome or sentence does not follow from its numbers (recomputed here).

    ``records`` are the dicts :func:`show` attached to a notebook's outputs.
    """
    problems = []
    for r in records:
        low, high = r["diff"] - r["ci95"], r["diff"] + r["ci95"]
        if r["ci95"] < 0 or r["n"] < 1:
            problems.append(f"{r['a']} vs {r['b']}: impossible interval or sample size ({r['ci95']}, n={r['n']})")
            continue
        if r["higher_is_better"]:
            expected = "better" if low > 0 else "worse" if high < 0 else "level"
        else:
            expected = "better" if high < 0 else "worse" if low > 0 else "level"
        if r["outcome"] != expected:
            problems.append(f"{r['what']}: {r['a']} vs {r['b']} says {r['outcome']!r} but the interval "
                            f"[{low:.4g}, {high:.4g}] means {expected!r}")
    return problems


def records_in(nb) -> list[dict]:
    """The verdict records in an executed notebook's outputs (an ``nbformat`` notebook)."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data", {})
            if MIME in data:
                found.append(dict(data[MIME]))
    return found
