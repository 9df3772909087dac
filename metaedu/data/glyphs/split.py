"""Background and evaluation sides without leakage, and the alphabets on each side.

The same letter in another font's style (a Roman "A" and a Script "A"), or two
glyphs that look alike (Latin "A" and Greek Alpha), must not end up on both
sides, or meta-testing would measure memory rather than learning to learn.
Glyphs are linked when they write the same letter of a script, when they belong
to the same invented alphabet, or when their normalised renderings correlate
above :data:`NEAR_DUPLICATE_SIMILARITY`; each connected group of linked glyphs
goes to one side as a whole, and an alphabet is a font's (or an invented
alphabet's) glyphs on one side.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageFilter

from metaedu.data.glyphs.fonts import FONTS, GlyphType, normalised_strokes
from metaedu.data.glyphs.render import rasterise

SIDES = ("background", "evaluation")
#: Normalised renderings that correlate above this are treated as the same letter.
NEAR_DUPLICATE_SIMILARITY = 0.92
#: Share of linked groups that goes to the evaluation side.
EVALUATION_SHARE = 0.4
#: Alphabets smaller than this are merged into the largest alphabet of the same script and side.
MIN_ALPHABET_SIZE = 8


def canonical_images(types: list[GlyphType], size: int = 24) -> np.ndarray:
    """A clean, slightly blurred rendering of each type, ``[n_types, size * size]`` float32, for shape comparisons."""
    drawings = [[s * (size - 6) / size + 0.5 for s in normalised_strokes(t.strokes)] for t in types]
    binary = rasterise(drawings, 2.0, size)
    blurred = [np.asarray(Image.fromarray(b * 255).filter(ImageFilter.BoxBlur(1)), dtype=np.float32) for b in binary]
    return np.stack(blurred).reshape(len(types), -1) if blurred else np.zeros((0, size * size), np.float32)


def unit_rows(feats: np.ndarray) -> np.ndarray:
    """Rows shifted to zero mean and scaled to unit length (their dot products are correlations)."""
    feats = feats - feats.mean(1, keepdims=True)
    return feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)


def similarity(feats: np.ndarray) -> np.ndarray:
    """Correlation of every pair of rows, ``[n, n]``, with zeros on the diagonal."""
    feats = unit_rows(feats)
    sim = feats @ feats.T
    np.fill_diagonal(sim, 0.0)
    return sim


def link_groups(types: list[GlyphType]) -> np.ndarray:
    """Group id of each type: types linked by a shared letter or alphabet, or by looking alike, share a group."""
    parent = np.arange(len(types))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first_by_key: dict[tuple, int] = {}
    for i, t in enumerate(types):
        key = t.letter or (("alphabet", t.alphabet) if t.alphabet else None)
        if key is None:
            continue
        if key in first_by_key:
            union(first_by_key[key], i)
        else:
            first_by_key[key] = i
    rows, cols = np.nonzero(np.triu(similarity(canonical_images(types)), 1) > NEAR_DUPLICATE_SIMILARITY)
    for i, j in zip(rows, cols):
        union(int(i), int(j))
    roots = np.array([find(i) for i in range(len(types))])
    return np.unique(roots, return_inverse=True)[1]


def assign_sides(types: list[GlyphType], groups: np.ndarray) -> np.ndarray:
    """0 (background) or 1 (evaluation) for each type; every linked group goes to one side.

    Groups of font glyphs go by a hash of their first name (stable when other glyphs come
    or go); invented alphabets then go one by one to the side that brings the evaluation
    side's share of characters closest to :data:`EVALUATION_SHARE`.
    """
    sides = np.zeros(len(types), dtype=np.int64)
    invented = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if all(types[i].alphabet for i in members):
            invented.append(members)
            continue
        first = min(types[i].name for i in members)
        digest = int(hashlib.sha256(first.encode()).hexdigest()[:8], 16)
        sides[members] = 1 if (digest % 1000) < EVALUATION_SHARE * 1000 else 0
    assigned = len(types) - sum(len(m) for m in invented)
    evaluation = int(sides.sum())
    for members in sorted(invented, key=lambda m: min(types[i].name for i in m)):
        to_evaluation = abs((evaluation + len(members)) / (assigned + len(members)) - EVALUATION_SHARE)
        to_background = abs(evaluation / (assigned + len(members)) - EVALUATION_SHARE)
        if to_evaluation < to_background:
            sides[members] = 1
            evaluation += len(members)
        assigned += len(members)
    return sides


def alphabet_display_name(t: GlyphType) -> str:
    """The readable name of a type's alphabet, before the side is added."""
    return t.alphabet or FONTS[t.font][1]


def make_alphabets(types: list[GlyphType], sides: np.ndarray) -> list[str]:
    """Alphabet name of each type: its font's (or invented alphabet's) glyphs on its side, small ones
    merged into the largest alphabet of the same script and side."""
    mark = ("I", "II")
    names = [f"{alphabet_display_name(t)} ({mark[s]})" for t, s in zip(types, sides)]
    sizes: dict[str, int] = {}
    for name in names:
        sizes[name] = sizes.get(name, 0) + 1
    script_of = {name: t.script for t, name in zip(types, names)}
    merged = []
    for t, s, name in zip(types, sides, names):
        if sizes[name] >= MIN_ALPHABET_SIZE:
            merged.append(name)
            continue
        siblings = [(sizes[n], n) for n in sizes
                    if sizes[n] >= MIN_ALPHABET_SIZE and n.endswith(f"({mark[s]})") and script_of[n] == t.script]
        merged.append(max(siblings)[1] if siblings else name)
    return merged
