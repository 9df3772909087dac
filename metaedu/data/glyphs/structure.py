"""Structural noise: people draw a character differently, not only with a shakier or slanted hand.

Lake et al. (2015) note that drawers of one Omniglot character differ in how
they build it: a stroke left out or drawn in two pieces, a hook where the pen
lands or lifts, a line that runs on past where it should stop, another stroke
order. :func:`perturb` makes these changes to a character's strokes, in its
normalised frame (larger side 1, centred), before the motor noise of
:mod:`.drawers`:

1. **reorder**: a drawing of 2+ strokes takes its strokes in another order; later strokes
   are placed relative to earlier ones (:func:`metaedu.data.glyphs.drawers.draw`), so the
   order shows in where they land;
2. **drop**: a drawing leaves out a minor stroke (one holding at most :data:`MAX_DROP_SHARE` of the
   character's stroke length; short ones more often), never the body of the character;
3. **split**: a stroke is drawn in two pieces with a small gap or kink between them;
4. **hook**: a stroke end gets a short tail bent back, as when the pen lands or lifts moving;
5. **overshoot**: a stroke end runs on past its end in the same direction.

Each drawer has their own rate of each change (:class:`StructuralNoise` holds
the data set's mean rates; :meth:`StructuralNoise.for_drawer` spreads them
between people). A drawing never loses its last stroke, so it is never empty.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from metaedu.data.glyphs.fonts import polyline_length, resample

EVENTS = ("reorder", "drop", "split", "hook", "overshoot")


@dataclass(frozen=True)
class StructuralNoise:
    """Rates of structural changes (the data set's means; each drawer has their own)."""

    reorder: float = 0.3  # per drawing of 2+ strokes: strokes drawn in another order
    drop: float = 0.05  # per drawing with a minor stroke (see MAX_DROP_SHARE): one left out
    split: float = 0.05  # per stroke at least MIN_SPLIT_LENGTH long: drawn in two pieces
    hook: float = 0.08  # per stroke end: a short tail bent back
    overshoot: float = 0.08  # per stroke end (when it has no hook): runs on past its end
    spread: float = 0.8  # a drawer's rate is the mean times a factor uniform in [1 - spread, 1 + spread]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"StructuralNoise.{f.name} must lie in [0, 1], got {value}")
        if self.hook + self.overshoot > 1.0:
            raise ValueError(f"hook + overshoot rates are per stroke end and must add up to at most 1, "
                             f"got {self.hook} + {self.overshoot}")

    def for_drawer(self, rng: np.random.Generator) -> "StructuralNoise":
        """One person's rates: each mean rate times its own factor in [1 - spread, 1 + spread]."""
        factor = rng.uniform(1.0 - self.spread, 1.0 + self.spread, size=len(EVENTS))
        rates = {name: float(min(1.0, getattr(self, name) * f)) for name, f in zip(EVENTS, factor)}
        total = rates["hook"] + rates["overshoot"]
        if total > 1.0:  # keep the two end events exclusive
            rates["hook"], rates["overshoot"] = rates["hook"] / total, rates["overshoot"] / total
        return replace(self, **rates, spread=0.0)


#: A stroke can be left out only if it holds at most this share of the character's stroke length.
MAX_DROP_SHARE = 0.4
#: Strokes shorter than this (in units of the character's larger side) are never split.
MIN_SPLIT_LENGTH = 0.3
#: Gap left where a stroke is split, and sideways slip of its second piece (character units).
SPLIT_GAP = (0.02, 0.06)
SPLIT_SLIP = 0.015
#: Length of a hook's tail and how far it bends back from the stroke's direction (degrees).
HOOK_LENGTH = (0.04, 0.09)
HOOK_BEND = (110.0, 160.0)
#: How far an overshooting stroke runs on (character units).
OVERSHOOT_LENGTH = (0.03, 0.10)


def perturb(strokes: list[np.ndarray], rates: StructuralNoise, rng: np.random.Generator) -> tuple[list[np.ndarray], dict[str, int]]:
    """One drawer's structural changes to a character's strokes; returns the new strokes and what happened.

    ``strokes`` are in the character's normalised frame; the returned dict counts each
    event of :data:`EVENTS` together with its chances (``"<event>_chances"``), so that a
    test can compare the observed rate with the stated one.
    """
    strokes = [np.asarray(s, dtype=np.float64) for s in strokes]
    log = {name: 0 for name in EVENTS} | {f"{name}_chances": 0 for name in EVENTS}
    if len(strokes) >= 2:
        # (1) another stroke order
        log["reorder_chances"] += 1
        if rng.random() < rates.reorder:
            log["reorder"] += 1
            strokes = _another_order(strokes, rng)
        # (2) a minor stroke left out: short strokes (a dot, a bar) are forgotten more often
        lengths = np.array([polyline_length(s) for s in strokes])
        minor = np.flatnonzero(lengths <= MAX_DROP_SHARE * lengths.sum())
        if len(minor):
            log["drop_chances"] += 1
            if rng.random() < rates.drop:
                log["drop"] += 1
                weight = 1.0 / (lengths[minor] + 0.1)
                strokes.pop(int(minor[rng.choice(len(minor), p=weight / weight.sum())]))
    # (3) strokes drawn in two pieces
    pieces = []
    for s in strokes:
        if polyline_length(s) >= MIN_SPLIT_LENGTH:
            log["split_chances"] += 1
            if rng.random() < rates.split:
                log["split"] += 1
                pieces.extend(_split(s, rng))
                continue
        pieces.append(s)
    # (4, 5) what happens at each stroke end: a hook, an overshoot, or nothing
    out = []
    for s in pieces:
        for end in (0, 1):
            log["hook_chances"] += 1
            log["overshoot_chances"] += 1
            u = rng.random()
            if u < rates.hook:
                log["hook"] += 1
                s = _at_end(s, end, _hook_tail, rng)
            elif u < rates.hook + rates.overshoot:
                log["overshoot"] += 1
                s = _at_end(s, end, _overshoot_tail, rng)
        out.append(s)
    return out, log


def _another_order(strokes: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The strokes in a random order different from the given one."""
    n = len(strokes)
    order = rng.permutation(n)
    if (order == np.arange(n)).all():  # the identity is no change: swap two neighbours instead
        i = int(rng.integers(n - 1))
        order[[i, i + 1]] = order[[i + 1, i]]
    return [strokes[i] for i in order]


def _split(stroke: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Two pieces of a stroke: cut in its middle part, a small gap, the second piece slipped sideways."""
    pts = resample(stroke, 0.01)  # [n, 2] evenly spaced
    length = polyline_length(pts)
    arc = np.linspace(0.0, length, len(pts))
    cut = rng.uniform(0.3, 0.7) * length
    gap = rng.uniform(*SPLIT_GAP)
    first = pts[arc <= cut - gap / 2]
    second = pts[arc >= cut + gap / 2] + rng.normal(0.0, SPLIT_SLIP, size=2)
    if len(first) < 2 or len(second) < 2:  # too short to cut: keep it whole
        return [stroke]
    return [first, second]


def _at_end(stroke: np.ndarray, end: int, tail_fn, rng: np.random.Generator) -> np.ndarray:
    """Attach ``tail_fn``'s tail at the start (``end=0``) or the end (``end=1``) of a stroke."""
    pts = stroke if end == 1 else stroke[::-1]
    tail = tail_fn(pts, rng)  # [k, 2] continuing from pts[-1]
    joined = np.concatenate([pts, tail])
    return joined if end == 1 else joined[::-1]


def _end_direction(pts: np.ndarray, back: float = 0.05) -> np.ndarray:
    """Unit direction of travel at a polyline's last point, over its last ``back`` of length."""
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] < 1e-9:
        return np.array([1.0, 0.0])
    i = int(np.searchsorted(arc, arc[-1] - back, side="right")) - 1
    v = pts[-1] - pts[max(0, min(i, len(pts) - 2))]
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _hook_tail(pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A short tail that bends back from the direction of travel, drawn as a small arc."""
    direction = _end_direction(pts)
    bend = np.deg2rad(rng.uniform(*HOOK_BEND)) * rng.choice([-1.0, 1.0])
    length = rng.uniform(*HOOK_LENGTH)
    turn = bend * np.linspace(0.0, 1.0, 5)[1:]  # the pen turns gradually
    steps = np.stack([np.cos(turn), np.sin(turn)], 1) @ np.array([[direction[0], direction[1]], [-direction[1], direction[0]]])
    return pts[-1] + np.cumsum(steps * length / 4, axis=0)


def _overshoot_tail(pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The stroke running on in the direction it was going."""
    direction = _end_direction(pts)
    return pts[-1] + direction * rng.uniform(*OVERSHOOT_LENGTH) * np.linspace(0.0, 1.0, 4)[1:, None]
