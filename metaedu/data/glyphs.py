"""Omniglot-like alphabets drawn from the Hershey stroke fonts: the course's default data.

Real Omniglot (Lake et al. 2015) holds 1,623 characters from 50 alphabets, each
drawn once by 20 people. Each drawing is a set of pen strokes rendered as a
105 x 105 black-and-white image. The Hershey vector fonts (the ``hershey-fonts``
package, no download) give the same kind of object: a character as a list of
pen strokes. We turn them into a data set with the same structure:

* **types** (Lake's word for a character concept): every distinct stroke shape of
  the 32 Hershey fonts, identical shapes across fonts counted once;
* **alphabets**: the characters of one font, split between the background
  (meta-training) and evaluation (meta-testing) sides;
* **tokens**: each character drawn by 20 simulated drawers. A drawer has a
  habit (slant, size, proportions, pen width, how shaky the hand is) kept across
  all characters, and every drawing adds its own motor noise: a smooth warp of
  the strokes, per-stroke displacement, jitter along the stroke, a random
  affine transform and a position on the canvas.

**No leakage between the sides.** The same letter in another font's style (a
Roman "A" and a Gothic "A"), or two glyphs that look alike (Latin "A" and
Greek Alpha, "O" and "0"), must not end up on both sides, or meta-testing would
measure memory rather than learning to learn. Glyphs are linked when they share
a letter of the same script or when their normalised renderings correlate
above :data:`NEAR_DUPLICATE_SIMILARITY`; each connected group of linked glyphs
goes to one side as a whole, and an alphabet is a font's glyphs on one side.

The images are built once per (seed, size) and cached under
:func:`metaedu.runtime.cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from metaedu.data.base import ClassImageSet
from metaedu.runtime import cache_dir

#: Bump when the generator changes, so stale caches are rebuilt.
GENERATOR_VERSION = 2
#: Drawers per character, as in Omniglot.
N_DRAWERS = 20
#: Normalised renderings that correlate above this are treated as the same letter.
NEAR_DUPLICATE_SIMILARITY = 0.92
#: Glyphs whose larger side is below this fraction of their font's typical height are
#: dots, commas and dashes; they are not characters anyone would learn.
MIN_RELATIVE_EXTENT = 0.4
#: Share of linked groups that goes to the evaluation side.
EVALUATION_SHARE = 0.4
#: Alphabets smaller than this are merged into the largest alphabet of the same script and side.
MIN_ALPHABET_SIZE = 8

# Drawing parameters, calibrated so that the images match real Omniglot's statistics
# (``shared/reference/data-formats.md``; checked by ``tests/test_glyphs.py``).
#: Larger side of the character as a fraction of the canvas (median drawer).
CHARACTER_SIZE = 0.47
#: Pen width in pixels on the 105 x 105 canvas: drawers' range.
PEN_WIDTH_RANGE = (6.0, 9.0)
#: Total stroke length of a typical character, in units of its larger side.
TYPICAL_STROKE_LENGTH = 3.0
#: Characters with more stroke length are drawn smaller by (typical / length) ** this.
COMPLEXITY_EXPONENT = 0.8
#: Mean offset of the character from the canvas centre (fraction of the side, + is right/down).
POSITION_MEAN = (-0.015, -0.037)
#: Spread of that offset between drawings.
POSITION_STD = 0.05

#: Script and readable name of each Hershey font used. The six Gothic fonts are left out: their
#: letters are drawn with so many strokes that, with a pen as wide as Omniglot's, they become blots.
FONTS: dict[str, tuple[str, str]] = {
    "futural": ("latin", "Futura light"),
    "futuram": ("latin", "Futura medium"),
    "rowmans": ("latin", "Roman simplex"),
    "rowmand": ("latin", "Roman duplex"),
    "rowmant": ("latin", "Roman triplex"),
    "timesr": ("latin", "Times roman"),
    "timesrb": ("latin", "Times bold"),
    "timesi": ("latin", "Times italic"),
    "timesib": ("latin", "Times bold italic"),
    "scripts": ("latin", "Script simplex"),
    "scriptc": ("latin", "Script complex"),
    "cursive": ("latin", "Cursive"),
    "greek": ("greek", "Greek simplex"),
    "greekc": ("greek", "Greek complex"),
    "greeks": ("greek", "Greek small"),
    "timesg": ("greek", "Times Greek"),
    "cyrillic": ("cyrillic", "Cyrillic"),
    "cyrilc_1": ("cyrillic", "Cyrillic complex"),
    "japanese": ("japanese", "Japanese kana and kanji"),
    "mathlow": ("symbol", "Mathematics lower"),
    "mathupp": ("symbol", "Mathematics upper"),
    "symbolic": ("symbol", "Symbols"),
    "astrology": ("symbol", "Astrology"),
    "meteorology": ("symbol", "Meteorology"),
    "music": ("symbol", "Music"),
    "markers": ("symbol", "Markers"),
}
#: Scripts whose character codes name letters (the same code is the same letter across fonts).
LETTER_SCRIPTS = ("latin", "greek", "cyrillic")

SIDES = ("background", "evaluation")


@dataclass
class GlyphType:
    """One character concept: a stroke shape from a Hershey font."""

    font: str
    code: str
    script: str
    strokes: list[np.ndarray]  # each [n_points, 2], font units, y down

    @property
    def name(self) -> str:
        return f"{self.font}:{self.code}"


# ----------------------------------------------------------------------------- types


def load_glyph_types() -> list[GlyphType]:
    """All distinct, drawable stroke shapes of the Hershey fonts (identical shapes counted once)."""
    from HersheyFonts import HersheyFonts

    fonts = HersheyFonts()
    missing = sorted(set(FONTS) - set(fonts.default_font_names))  # fonts this module relies on
    if missing:
        raise RuntimeError(f"the installed hershey-fonts package lacks the fonts {missing}")
    seen: set[bytes] = set()
    types: list[GlyphType] = []
    for font in FONTS:
        fonts.load_default_font(font)
        glyphs = []
        for code, glyph in fonts.all_glyphs.items():
            strokes = [np.asarray(s, dtype=np.float64) for s in glyph.strokes if len(s) >= 2]
            if strokes:
                glyphs.append((code, strokes))
        heights = [_extent(strokes).max() for _, strokes in glyphs]
        typical = float(np.median(heights))
        for code, strokes in glyphs:
            if _extent(strokes).max() < MIN_RELATIVE_EXTENT * typical:
                continue
            key = _shape_key(strokes)
            if key in seen:
                continue
            seen.add(key)
            types.append(GlyphType(font=font, code=code, script=FONTS[font][0], strokes=single_line(strokes)))
    return types


def single_line(strokes: list[np.ndarray], gap: float = 2.0, covered: float = 0.75) -> list[np.ndarray]:
    """Drop strokes that only thicken another one.

    The duplex, triplex and Gothic fonts draw a thick line as two or three
    parallel pen strokes about a font unit apart. A person with a pen draws it
    once, so a stroke is dropped when ``covered`` of its length lies within
    ``gap`` font units of strokes already kept (longest strokes are kept first).
    """
    order = sorted(range(len(strokes)), key=lambda i: -float(np.linalg.norm(np.diff(strokes[i], axis=0), axis=1).sum()))
    kept: list[int] = []
    kept_points = np.zeros((0, 2))
    for i in order:
        pts = _resample(strokes[i], 0.5)
        if len(kept_points):
            dist = np.sqrt(((pts[:, None, :] - kept_points[None, :, :]) ** 2).sum(-1)).min(1)
            if (dist <= gap).mean() >= covered:
                continue
        kept.append(i)
        kept_points = np.concatenate([kept_points, pts])
    return [strokes[i] for i in sorted(kept)]


def _extent(strokes: list[np.ndarray]) -> np.ndarray:
    points = np.concatenate(strokes)
    return points.max(0) - points.min(0)


def _shape_key(strokes: list[np.ndarray]) -> bytes:
    points = np.concatenate(strokes)
    origin = points.min(0)
    parts = [np.asarray([len(s)], dtype=np.int64).tobytes() + (s - origin).astype(np.int64).tobytes() for s in strokes]
    return b"|".join(parts)


def normalised_strokes(strokes: list[np.ndarray]) -> list[np.ndarray]:
    """Strokes centred on their bounding box, the larger side scaled to 1 (y down)."""
    points = np.concatenate(strokes)
    low, high = points.min(0), points.max(0)
    scale = max(float((high - low).max()), 1e-6)
    centre = (low + high) / 2
    return [(s - centre) / scale for s in strokes]


# ----------------------------------------------------------------------------- split


def canonical_images(types: list[GlyphType], size: int = 24) -> np.ndarray:
    """A clean rendering of each type, ``[n_types, size * size]``, for the near-duplicate check."""
    out = np.zeros((len(types), size * size), dtype=np.float32)
    for i, t in enumerate(types):
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        for s in normalised_strokes(t.strokes):
            pts = [(float(x), float(y)) for x, y in (s * (size - 6) + size / 2)]
            draw.line(pts, fill=255, width=2)
        blurred = np.asarray(img, dtype=np.float32)
        blurred = (blurred + np.roll(blurred, 1, 0) + np.roll(blurred, -1, 0) + np.roll(blurred, 1, 1) + np.roll(blurred, -1, 1)) / 5
        out[i] = blurred.ravel()
    return out


def link_groups(types: list[GlyphType]) -> np.ndarray:
    """Group id of each type: types linked by a shared letter or by looking alike share a group."""
    n = len(types)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    # the same letter of one script in different fonts; digits and signs are shared by all letter scripts
    first_by_key: dict[tuple[str, str], int] = {}
    for i, t in enumerate(types):
        if t.script not in LETTER_SCRIPTS:
            continue
        key = (t.script, t.code) if t.code.isalpha() else ("common", t.code)
        if key in first_by_key:
            union(first_by_key[key], i)
        else:
            first_by_key[key] = i
    # glyphs that look alike, whatever their font
    feats = canonical_images(types)
    feats = feats - feats.mean(1, keepdims=True)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8
    sim = feats @ feats.T
    rows, cols = np.nonzero(np.triu(sim, 1) > NEAR_DUPLICATE_SIMILARITY)
    for i, j in zip(rows, cols):
        union(int(i), int(j))
    roots = np.array([find(i) for i in range(n)])
    _, group = np.unique(roots, return_inverse=True)
    return group


def assign_sides(types: list[GlyphType], groups: np.ndarray) -> np.ndarray:
    """0 (background) or 1 (evaluation) for each type; every linked group goes to one side."""
    sides = np.zeros(len(types), dtype=np.int64)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        first = min(types[i].name for i in members)
        digest = int(hashlib.sha256(first.encode()).hexdigest()[:8], 16)
        sides[members] = 1 if (digest % 1000) < EVALUATION_SHARE * 1000 else 0
    return sides


def make_alphabets(types: list[GlyphType], sides: np.ndarray) -> list[str]:
    """Alphabet name of each type: its font's glyphs on its side, small ones merged within the script."""
    names = [f"{FONTS[t.font][1]} ({'I' if s == 0 else 'II'})" for t, s in zip(types, sides)]
    sizes: dict[str, int] = {}
    for name in names:
        sizes[name] = sizes.get(name, 0) + 1
    merged = []
    for t, s, name in zip(types, sides, names):
        if sizes[name] >= MIN_ALPHABET_SIZE:
            merged.append(name)
            continue
        siblings = [
            (sizes[n], n)
            for n in sizes
            if sizes[n] >= MIN_ALPHABET_SIZE
            and n.endswith(f"({'I' if s == 0 else 'II'})")
            and FONTS[_font_of(n)][0] == t.script
        ]
        merged.append(max(siblings)[1] if siblings else name)
    return merged


def _font_of(alphabet: str) -> str:
    display = alphabet.rsplit(" (", 1)[0]
    return next(f for f, (_, d) in FONTS.items() if d == display)


# ----------------------------------------------------------------------------- drawing


@dataclass
class Drawer:
    """One simulated person's habits, kept across every character they draw."""

    slant: float  # shear of x by y
    size: float  # multiplies CHARACTER_SIZE
    aspect: float  # width / height stretch
    pen_width: float  # pixels on the 105 canvas
    shakiness: float  # scale of the motor noise
    offset: tuple[float, float]  # habitual position on the canvas (fraction of the side)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Drawer":
        return cls(
            slant=float(rng.normal(0.0, 0.12)),
            size=float(rng.uniform(0.85, 1.12)),
            aspect=float(np.exp(rng.normal(0.0, 0.07))),
            pen_width=float(rng.uniform(*PEN_WIDTH_RANGE)),
            shakiness=float(rng.uniform(0.6, 1.4)),
            offset=(float(rng.normal(POSITION_MEAN[0], 0.02)), float(rng.normal(POSITION_MEAN[1], 0.02))),
        )


def sample_drawers(seed: int, n: int = N_DRAWERS) -> list[Drawer]:
    """The data set's drawers: the same people draw every character."""
    rng = np.random.default_rng([seed, 0])
    return [Drawer.sample(rng) for _ in range(n)]


def _resample(stroke: np.ndarray, spacing: float) -> np.ndarray:
    """Points every ``spacing`` along a polyline (the end points kept)."""
    seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] < 1e-9:
        return stroke[:1].repeat(2, 0)
    n = max(2, int(np.ceil(arc[-1] / spacing)) + 1)
    t = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(t, arc, stroke[:, 0]), np.interp(t, arc, stroke[:, 1])], axis=1)


@dataclass
class PenPath:
    """A character's strokes as one array of closely spaced pen positions."""

    points: np.ndarray  # [P, 2] normalised (larger side 1, centred, y down)
    stroke: np.ndarray  # [P] which stroke each point belongs to
    progress: np.ndarray  # [P] 0 at a stroke's start, 1 at its end
    length: float  # total stroke length in units of the larger side

    @classmethod
    def from_strokes(cls, strokes: list[np.ndarray], spacing: float = 0.015) -> "PenPath":
        norm = normalised_strokes(strokes)
        parts = [_resample(s, spacing) for s in norm]
        return cls(
            points=np.concatenate(parts),
            stroke=np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)]),
            progress=np.concatenate([np.linspace(0.0, 1.0, len(p)) for p in parts]),
            length=sum(float(np.linalg.norm(np.diff(s, axis=0), axis=1).sum()) for s in norm),
        )

    def split(self, points: np.ndarray) -> list[np.ndarray]:
        """Cut an array of drawn points ``[P, 2]`` back into strokes."""
        return [points[self.stroke == i] for i in range(int(self.stroke.max()) + 1)]


def complexity_scale(length: float) -> float:
    """How much smaller than average a character is drawn because it has more ink.

    People draw a many-stroke character more compactly than a two-stroke one;
    this keeps the share of ink per image in real Omniglot's range.
    """
    return float(np.clip((TYPICAL_STROKE_LENGTH / max(length, 1e-6)) ** COMPLEXITY_EXPONENT, 0.6, 1.35))


def draw(path: PenPath, drawers: list[Drawer], rng: np.random.Generator) -> np.ndarray:
    """Each drawer draws the character once: pen positions ``[D, P, 2]`` in canvas fractions (0..1, y down).

    A drawing is the normalised path (1) bent by a smooth random warp, (2) with
    each stroke placed a little off and (3) wobbling along its length as a hand
    does, then (4) slanted, rotated, stretched and scaled by the drawer's habit
    and this drawing's noise, and (5) put somewhere near the canvas centre.
    """
    d = len(drawers)
    shaky = np.array([dr.shakiness for dr in drawers])[:, None, None]  # [D, 1, 1]
    n_strokes = int(path.stroke.max()) + 1
    pts = path.points[None]  # [1, P, 2]
    # (1) smooth warp: proportions drift, curves bulge
    freq = rng.normal(0.0, 2.0, size=(d, 2, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(d, 1, 2))
    amp = 0.025 * shaky * rng.uniform(0.5, 1.0, size=(d, 1, 2))
    pts = pts + amp * np.sin(2 * np.pi * np.einsum("dij,pj->dpi", freq, path.points) + phase)
    # (2) each stroke starts a little off
    pts = pts + (rng.normal(0.0, 0.015, size=(d, n_strokes, 2)) * shaky)[:, path.stroke]
    # (3) a random walk along each stroke that returns to its aim at the end
    walk = np.cumsum(rng.normal(0.0, 0.004, size=(d,) + path.points.shape) * shaky, axis=1)
    first = np.searchsorted(path.stroke, np.arange(n_strokes))
    last = np.append(first[1:], len(path.stroke)) - 1
    walk = walk - walk[:, first][:, path.stroke]
    walk = walk - path.progress[None, :, None] * walk[:, last][:, path.stroke]
    pts = pts + walk
    # (4) affine: the drawer's slant and aspect plus this drawing's rotation, shear and scale
    angle = rng.normal(0.0, 0.08, size=d)
    shear = np.array([dr.slant for dr in drawers]) + rng.normal(0.0, 0.05, size=d)
    scale = (
        CHARACTER_SIZE
        * complexity_scale(path.length)
        * np.array([dr.size for dr in drawers])
        * np.exp(rng.normal(0.0, 0.06, size=d))
    )
    aspect = np.array([dr.aspect for dr in drawers]) * np.exp(rng.normal(0.0, 0.05, size=d))
    cos, sin = np.cos(angle), np.sin(angle)
    affine = np.stack(
        [
            np.stack([cos * aspect, (cos * shear * aspect - sin / aspect)], -1),
            np.stack([sin * aspect, (sin * shear * aspect + cos / aspect)], -1),
        ],
        -2,
    ) * scale[:, None, None]  # [D, 2, 2] = rotation @ shear @ diag(aspect, 1/aspect) * scale
    pts = np.einsum("dij,dpj->dpi", affine, pts)
    # (5) position: the drawer's habit plus this drawing's placement
    offset = np.array([dr.offset for dr in drawers]) + rng.normal(0.0, POSITION_STD, size=(d, 2)) + 0.5
    return pts + offset[:, None, :]


def new_character(types: list[GlyphType], rng: np.random.Generator, n_strokes: int | None = None) -> GlyphType:
    """A character nobody has seen: strokes borrowed from existing characters, recombined.

    In the spirit of Lake et al.'s generative model of types: choose how many
    strokes (1 to 4), take each from a random character, and place it either
    freely or starting where the previous stroke ended.
    """
    n_strokes = n_strokes or int(rng.integers(1, 5))
    strokes: list[np.ndarray] = []
    for k in range(n_strokes):
        donor = types[int(rng.integers(len(types)))]
        stroke = normalised_strokes(donor.strokes)[int(rng.integers(len(donor.strokes)))]
        stroke = stroke - stroke[0]
        if k and rng.random() < 0.5:
            start = strokes[-1][-1]  # attached: begins where the last one ended
        else:
            start = rng.uniform(-0.4, 0.4, size=2)
        strokes.append(stroke + start)
    return GlyphType(font="new", code=f"new{int(rng.integers(1_000_000))}", script="new", strokes=strokes)


def render(points: np.ndarray, pen_widths, size: int = 105) -> np.ndarray:
    """Rasterise pen positions ``[D, P, 2]`` (canvas fractions) into binary images ``[D, size, size]`` (ink = 1).

    The pen is a disc of diameter ``pen_widths[d]`` (pixels at 105 x 105, scaled to
    ``size``) stamped at every pen position, which gives round ends and joints.
    Positions must be closely spaced (:class:`PenPath` uses 1.5% of the character).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 2:
        points = points[None]
    d = points.shape[0]
    radius = np.broadcast_to(np.asarray(pen_widths, dtype=np.float64), (d,)) * size / 105 / 2  # [D]
    reach = int(np.ceil(radius.max()))
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    dy, dx = dy.ravel(), dx.ravel()
    inside = (dy**2 + dx**2)[None, :] <= radius[:, None] ** 2  # [D, S]
    centre = np.round(points * size).astype(np.int64)  # [D, P, 2] as (x, y)
    ys = centre[..., 1:2] + dy  # [D, P, S]
    xs = centre[..., 0:1] + dx
    ok = inside[:, None, :] & (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
    flat = (np.arange(d)[:, None, None] * size + ys) * size + xs
    images = np.zeros(d * size * size, dtype=np.uint8)
    images[flat[ok]] = 1
    return images.reshape(d, size, size)


def downsample(binary: np.ndarray, size: int) -> np.ndarray:
    """Binary images ``[..., H, W]`` reduced with bilinear filtering, as 0..255 grey levels."""
    flat = binary.reshape(-1, *binary.shape[-2:])
    out = [np.asarray(Image.fromarray(b * 255).resize((size, size), Image.BILINEAR)) for b in flat]
    return np.stack(out).reshape(*binary.shape[:-2], size, size).astype(np.uint8)


# ----------------------------------------------------------------------------- data set


@dataclass
class GlyphAlphabets:
    """The built data set.

    Attributes:
        images: ``[n_characters, N_DRAWERS, size, size]`` uint8; ink is 255 (grey levels at 28 x 28,
            0/255 at 105 x 105).
        types: the character concept behind each row (font, code, strokes).
        alphabets: alphabet name of each character.
        sides: ``"background"`` or ``"evaluation"`` for each character.
        seed, size, build_seconds: how it was made.
    """

    images: np.ndarray
    types: list[GlyphType]
    alphabets: list[str]
    sides: list[str]
    seed: int
    size: int
    build_seconds: float = 0.0
    load_seconds: float = 0.0

    @property
    def n_characters(self) -> int:
        return len(self.types)

    def alphabet_names(self, side: str | None = None) -> list[str]:
        return list(dict.fromkeys(a for a, s in zip(self.alphabets, self.sides) if side in (None, s)))

    def split(self, side: str) -> ClassImageSet:
        """The characters of one side as a class-indexed image set (``[N, 1, H, W]`` uint8)."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        keep = [i for i, s in enumerate(self.sides) if s == side]
        imgs = torch.from_numpy(self.images[keep]).reshape(-1, 1, self.size, self.size)
        targets = torch.arange(len(keep)).repeat_interleave(N_DRAWERS)
        return ClassImageSet(
            images=imgs,
            targets=targets,
            class_names=[self.types[i].name for i in keep],
            groups=[self.alphabets[i] for i in keep],
            name=f"glyphs/{side}",
        )

    def descriptors(self, side: str | None = None) -> torch.Tensor:
        """Class metadata that holds no image: alphabet one-hot and stroke descriptors.

        Used as the class embedding input for zero-shot prototypes (Snell et al.).
        Rows follow :meth:`split`'s class order for that side.
        """
        names = self.alphabet_names()
        rows = []
        for t, a, s in zip(self.types, self.alphabets, self.sides):
            if side not in (None, s):
                continue
            onehot = np.zeros(len(names), dtype=np.float32)
            onehot[names.index(a)] = 1.0
            rows.append(np.concatenate([onehot, stroke_descriptor(t.strokes)]))
        return torch.from_numpy(np.stack(rows))

    def summary(self) -> str:
        lines = [
            f"{self.n_characters} characters x {N_DRAWERS} drawers at {self.size}x{self.size} "
            f"(seed {self.seed}, {self.images.nbytes / 2**20:.1f} MiB)"
        ]
        for side in SIDES:
            n = sum(s == side for s in self.sides)
            lines.append(f"  {side}: {n} characters in {len(self.alphabet_names(side))} alphabets")
        return "\n".join(lines)


def stroke_descriptor(strokes: list[np.ndarray]) -> np.ndarray:
    """A fixed-length description of a character's strokes (no pixels): 24 numbers.

    Number of strokes, total and longest stroke length, bounding-box aspect, mean
    start and end points, and a histogram of stroke directions (8 bins) and of
    ink position (3 x 3 grid).
    """
    norm = normalised_strokes(strokes)
    pts = np.concatenate([_resample(s, 0.02) for s in norm])
    lengths = [float(np.linalg.norm(np.diff(s, axis=0), axis=1).sum()) for s in norm]
    ext = _extent(norm)
    starts = np.mean([s[0] for s in norm], axis=0)
    ends = np.mean([s[-1] for s in norm], axis=0)
    seg = np.concatenate([np.diff(s, axis=0) for s in norm])
    seg_len = np.linalg.norm(seg, axis=1)
    angle = np.arctan2(seg[:, 1], seg[:, 0]) % np.pi
    direction = np.histogram(angle, bins=8, range=(0, np.pi), weights=seg_len)[0]
    direction = direction / max(direction.sum(), 1e-9)
    cell = np.clip(((pts + 0.5) * 3).astype(int), 0, 2)
    grid = np.bincount(cell[:, 1] * 3 + cell[:, 0], minlength=9).astype(np.float64)
    grid /= grid.sum()
    head = [len(norm) / 5.0, sum(lengths) / 5.0, max(lengths) / 2.0, float(ext[0] / max(ext[1], 1e-6))]
    return np.concatenate([head, starts, ends, direction, grid[:9]]).astype(np.float32)[:24]


def character_images(glyph: GlyphType, index: int, seed: int, size: int = 28, drawers: list[Drawer] | None = None) -> np.ndarray:
    """The 20 drawings of one character, ``[N_DRAWERS, size, size]`` uint8 (ink 255).

    Drawn at 105 x 105 (binary, like Omniglot's scans) and reduced bilinearly to ``size``.
    ``index`` is the character's row in the data set; it seeds its drawings.
    """
    drawers = drawers or sample_drawers(seed)
    rng = np.random.default_rng([seed, 1, index])
    binary = render(draw(PenPath.from_strokes(glyph.strokes), drawers, rng), [d.pen_width for d in drawers])
    return binary * 255 if size == 105 else downsample(binary, size)


def build_glyphs(seed: int = 0, size: int = 28) -> GlyphAlphabets:
    """Build the data set (no cache); see :func:`load_glyphs`."""
    if size < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {size}")
    start = time.perf_counter()
    types = load_glyph_types()
    groups = link_groups(types)
    side_ids = assign_sides(types, groups)
    alphabets = make_alphabets(types, side_ids)
    order = sorted(range(len(types)), key=lambda i: (side_ids[i], alphabets[i], i))
    types = [types[i] for i in order]
    alphabets = [alphabets[i] for i in order]
    sides = [SIDES[side_ids[i]] for i in order]

    drawers = sample_drawers(seed)
    images = np.zeros((len(types), N_DRAWERS, size, size), dtype=np.uint8)
    for c, t in enumerate(types):
        images[c] = character_images(t, c, seed, size, drawers)
    return GlyphAlphabets(
        images=images,
        types=types,
        alphabets=alphabets,
        sides=sides,
        seed=seed,
        size=size,
        build_seconds=time.perf_counter() - start,
    )


def _cache_paths(seed: int, size: int, root: Path | None) -> tuple[Path, Path]:
    folder = (root or cache_dir()) / "glyphs"
    stem = f"glyphs-v{GENERATOR_VERSION}-seed{seed}-{size}px"
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def load_glyphs(seed: int = 0, size: int = 28, cache: bool = True, root: Path | None = None) -> GlyphAlphabets:
    """The glyph alphabets at ``size`` x ``size`` (28 by default, 105 like Omniglot's originals).

    Built on first use (about half a minute on a laptop) and cached; later calls load
    from the cache. Deterministic for a seed.
    """
    if not cache:
        return build_glyphs(seed, size)
    array_path, meta_path = _cache_paths(seed, size, root)
    if array_path.exists() and meta_path.exists():
        start = time.perf_counter()
        try:
            with np.load(array_path) as f:
                images = f["images"]
            meta = json.loads(meta_path.read_text())
        except Exception as err:  # a damaged cache is rebuilt, not trusted
            array_path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            print(f"glyph cache {array_path} was unreadable ({err.__class__.__name__}); rebuilding")
        else:
            data = GlyphAlphabets(
                images=images,
                types=[
                    GlyphType(font=t["font"], code=t["code"], script=t["script"], strokes=[np.asarray(s, dtype=np.float64) for s in t["strokes"]])
                    for t in meta["types"]
                ],
                alphabets=meta["alphabets"],
                sides=meta["sides"],
                seed=seed,
                size=size,
                build_seconds=meta["build_seconds"],
            )
            data.load_seconds = time.perf_counter() - start
            return data
    data = build_glyphs(seed, size)
    array_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = array_path.with_name(f"{array_path.stem}.{os.getpid()}.tmp.npz")  # concurrent builders never collide
    np.savez(tmp, images=data.images)
    tmp.replace(array_path)
    meta_tmp = meta_path.with_name(f"{meta_path.stem}.{os.getpid()}.tmp")
    meta_tmp.write_text(
        json.dumps(
            {
                "types": [
                    {"font": t.font, "code": t.code, "script": t.script, "strokes": [s.tolist() for s in t.strokes]}
                    for t in data.types
                ],
                "alphabets": data.alphabets,
                "sides": data.sides,
                "build_seconds": data.build_seconds,
                "generator_version": GENERATOR_VERSION,
            }
        )
    )
    meta_tmp.replace(meta_path)
    return data
