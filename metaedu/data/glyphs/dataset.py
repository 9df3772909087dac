"""The built data set: characters x drawers images with their alphabets and sides."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from metaedu.data.base import ClassImageSet
from metaedu.data.glyphs.drawers import N_DRAWERS, Drawer, draw, sample_drawers
from metaedu.data.glyphs.fonts import GlyphType, extent, load_glyph_types, normalised_strokes, polyline_length, resample
from metaedu.data.glyphs.invented import invent_alphabets
from metaedu.data.glyphs.render import downsample, rasterise
from metaedu.data.glyphs.selection import select_types
from metaedu.data.glyphs.split import SIDES, assign_sides, link_groups, make_alphabets


@dataclass
class GlyphAlphabets:
    """The built data set.

    Attributes:
        images: ``[n_characters, N_DRAWERS, size, size]`` uint8; ink is 255 (grey levels at 28 x 28,
            0/255 at 105 x 105).
        types: the character concept behind each row (font or invented alphabet, code, strokes).
        alphabets: alphabet name of each character.
        sides: ``"background"`` or ``"evaluation"`` for each character.
        seed, size, build_seconds: how it was made; ``selection``: how many font glyphs each rule left out.
    """

    images: np.ndarray
    types: list[GlyphType]
    alphabets: list[str]
    sides: list[str]
    seed: int
    size: int
    build_seconds: float = 0.0
    load_seconds: float = 0.0
    selection: dict[str, int] = field(default_factory=dict)

    @property
    def n_characters(self) -> int:
        return len(self.types)

    @property
    def n_invented(self) -> int:
        return sum(t.alphabet is not None for t in self.types)

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
            f"{self.n_characters} characters ({self.n_characters - self.n_invented} from fonts, {self.n_invented} invented) "
            f"x {N_DRAWERS} drawers at {self.size}x{self.size} (seed {self.seed}, {self.images.nbytes / 2**20:.1f} MiB)"
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
    pts = np.concatenate([resample(s, 0.02) for s in norm])
    lengths = [polyline_length(s) for s in norm]
    ext = extent(norm)
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


def draw_character(glyph: GlyphType, index: int, seed: int, drawers: list[Drawer] | None = None) -> tuple[np.ndarray, list[dict]]:
    """The drawings of one character at 105 x 105, binary ``[N_DRAWERS, 105, 105]`` (ink 1), and each
    drawing's structural changes. ``index`` is the character's row in the data set; it seeds its drawings."""
    drawers = drawers or sample_drawers(seed)
    rng = np.random.default_rng([seed, 1, index])
    drawings, logs = zip(*(draw(glyph.strokes, d, rng) for d in drawers))
    return rasterise(list(drawings), [d.pen_width for d in drawers], 105), list(logs)


def character_images(glyph: GlyphType, index: int, seed: int, size: int = 28, drawers: list[Drawer] | None = None) -> np.ndarray:
    """The 20 drawings of one character, ``[N_DRAWERS, size, size]`` uint8 (ink 255).

    Drawn at 105 x 105 (binary, like Omniglot's scans) and reduced bilinearly to ``size``.
    ``index`` is the character's row in the data set; it seeds its drawings.
    """
    binary, _ = draw_character(glyph, index, seed, drawers)
    return binary * 255 if size == 105 else downsample(binary, size)


def build_glyphs(seed: int = 0, size: int = 28) -> GlyphAlphabets:
    """Build the data set (no cache); see :func:`metaedu.data.glyphs.load_glyphs`."""
    if size < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {size}")
    start = time.perf_counter()
    fonts, report = select_types(load_glyph_types())
    types = fonts + invent_alphabets(fonts)
    side_ids = assign_sides(types, link_groups(types))
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
        selection=vars(report),
    )
