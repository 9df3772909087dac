"""Simulated people: habits kept across characters, motor noise in every drawing.

A drawing of a character (its strokes normalised: larger side 1, centred, y
down) is made in the order of Lake et al.'s token model: the drawer's
structural changes (:mod:`.structure`), then

1. a smooth random warp (proportions drift, curves bulge);
2. each stroke placed a little off, later strokes drifting further from where the
   first ones set the frame (so the stroke order shows);
3. a wobble along each stroke that returns to its aim at the end;
4. an affine map: the drawer's slant and proportions plus this drawing's rotation,
   shear and scale;
5. a position near the canvas centre (the drawer's habit plus this drawing's).

The numbers below are calibrated so that the 105 x 105 images match real
Omniglot's statistics (:mod:`.statistics`; ``benchmarks/glyph_statistics.py``
prints the comparison, ``tests/test_glyphs.py`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaedu.data.glyphs.fonts import normalised_strokes, resample, stroke_length
from metaedu.data.glyphs.structure import StructuralNoise, perturb

#: Drawers per character, as in Omniglot.
N_DRAWERS = 20
#: Larger side of a character as a fraction of the canvas, for a drawer of average size.
CHARACTER_SIZE = 0.55
#: Pen diameter in pixels on the 105 x 105 canvas: the drawers' range.
PEN_WIDTH_RANGE = (4.5, 5.2)
#: Total stroke length of a typical character, in units of its larger side.
TYPICAL_STROKE_LENGTH = 3.0
#: A character with more stroke length is drawn smaller by (typical / length) ** this (and larger if less).
COMPLEXITY_EXPONENT = 0.3
#: Mean offset of the character from the canvas centre (fraction of the side, + is right/down).
POSITION_MEAN = (-0.028, -0.034)
#: Spread of that offset between drawings of one drawer.
POSITION_STD = 0.04
#: Spacing of pen positions along a stroke, in units of the character's larger side.
PATH_SPACING = 0.03
#: Standard deviation of the wobble's steps between pen positions (character units).
WOBBLE_STEP = 0.0057
#: The mean rates of structural changes (each drawer has their own around them).
STRUCTURAL_NOISE = StructuralNoise()


@dataclass
class Drawer:
    """One simulated person's habits, kept across every character they draw."""

    slant: float  # shear of x by y
    size: float  # multiplies CHARACTER_SIZE
    aspect: float  # width / height stretch
    pen_width: float  # pen diameter in pixels on the 105 canvas
    shakiness: float  # scale of the motor noise
    offset: tuple[float, float]  # habitual position on the canvas (fraction of the side)
    structure: StructuralNoise  # this person's rates of structural changes

    @classmethod
    def sample(cls, rng: np.random.Generator, structure: StructuralNoise = STRUCTURAL_NOISE) -> "Drawer":
        return cls(
            slant=float(rng.normal(0.0, 0.12)),
            size=float(rng.uniform(0.85, 1.15)),
            aspect=float(np.exp(rng.normal(0.0, 0.08))),
            pen_width=float(rng.uniform(*PEN_WIDTH_RANGE)),
            shakiness=float(rng.uniform(0.6, 1.4)),
            offset=(float(rng.normal(POSITION_MEAN[0], 0.025)), float(rng.normal(POSITION_MEAN[1], 0.025))),
            structure=structure.for_drawer(rng),
        )


def sample_drawers(seed: int, n: int = N_DRAWERS, structure: StructuralNoise = STRUCTURAL_NOISE) -> list[Drawer]:
    """The data set's drawers: the same people draw every character."""
    rng = np.random.default_rng([seed, 0])
    return [Drawer.sample(rng, structure) for _ in range(n)]


def complexity_scale(length: float) -> float:
    """How much smaller than average a character is drawn because it has more ink (larger if less)."""
    return float(np.clip((TYPICAL_STROKE_LENGTH / max(length, 1e-6)) ** COMPLEXITY_EXPONENT, 0.75, 1.25))


def draw(strokes: list[np.ndarray], drawer: Drawer, rng: np.random.Generator) -> tuple[list[np.ndarray], dict[str, int]]:
    """One drawing of a character by ``drawer``: strokes in canvas fractions (0..1, y down), and the
    structural changes made (see :func:`metaedu.data.glyphs.structure.perturb`)."""
    norm = normalised_strokes(strokes)
    size = CHARACTER_SIZE * complexity_scale(stroke_length(norm))
    changed, log = perturb(norm, drawer.structure, rng)
    shaky = drawer.shakiness
    parts = [resample(s, PATH_SPACING) for s in changed]
    pts = np.concatenate(parts)  # [P, 2] every pen position of the drawing
    counts = np.array([len(p) for p in parts])
    stroke = np.repeat(np.arange(len(parts)), counts)  # [P] which stroke each position belongs to
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [S] index of each stroke's first position
    last = first + counts - 1
    # (1) smooth warp of the whole character
    freq = rng.normal(0.0, 2.0, size=(2, 2))
    phase = rng.uniform(0, 2 * np.pi, size=2)
    amp = 0.025 * shaky * rng.uniform(0.5, 1.0, size=2)
    pts = pts + amp * np.sin(2 * np.pi * pts @ freq.T + phase)
    # (2) stroke placement: an offset of its own plus a drift that grows with each stroke drawn
    drift = np.cumsum(rng.normal(0.0, 0.012, size=(len(parts), 2)), axis=0)
    drift -= drift[0]  # the first stroke sets the frame
    own = rng.normal(0.0, 0.012, size=(len(parts), 2))
    pts = pts + ((own + drift) * shaky)[stroke]
    # (3) a wobble along each stroke, pinned at both of its ends
    walk = np.cumsum(rng.normal(0.0, WOBBLE_STEP * shaky, size=pts.shape), axis=0)  # [P, 2]
    walk -= walk[first][stroke]
    progress = (np.arange(len(pts)) - first[stroke]) / np.maximum(counts - 1, 1)[stroke]  # [P] 0 at a stroke's start, 1 at its end
    pts = pts + walk - progress[:, None] * walk[last][stroke]
    # (4) affine: the drawer's slant and aspect, this drawing's rotation, shear and scale
    angle = rng.normal(0.0, 0.08)
    shear = drawer.slant + rng.normal(0.0, 0.05)
    scale = size * drawer.size * np.exp(rng.normal(0.0, 0.08))
    aspect = drawer.aspect * np.exp(rng.normal(0.0, 0.06))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    affine = scale * rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([aspect, 1.0 / aspect])  # [2, 2]
    # (5) where on the canvas
    offset = np.asarray(drawer.offset) + rng.normal(0.0, POSITION_STD, size=2) + 0.5
    pts = pts @ affine.T + offset
    return np.split(pts, first[1:]), log
