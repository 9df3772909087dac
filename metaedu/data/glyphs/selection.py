"""Which font glyphs are characters a person would draw as characters of their own.

Fonts hold glyphs that make poor handwritten characters:

* **blots**: shapes so dense that at 28 x 28, drawn at the data set's size with its
  pen, ink covers more than :data:`BLOT_COVERAGE` of the character's square box
  (many-stroke kanji, filled blocks); people would not tell them apart at that size;
* **style variants**: the same letter in another font that differs only by serifs,
  stroke thickness or an italic slant and swash (Roman, Times and Futura "A"). A person
  writes one "A"; two classes that differ only in typography teach a model to read
  typography. Two glyphs of one letter are variants when their renderings, blurred so
  that serifs vanish and with the best of several slants, correlate at least
  :data:`STYLE_SIMILARITY`; a script "A" and a print "A" stay apart;
* **look-alikes**: glyphs of different letters or symbols with the same shape once
  size is set aside ("o" and "O", "l" and "|"): their normalised renderings correlate
  above :data:`LOOK_ALIKE_SIMILARITY`.

Fonts are visited in :data:`~.fonts.FONTS` order (simple single-line fonts first); a
glyph that is a variant of any glyph of its letter met before it, kept or not, is left
out, and of look-alikes the first is kept. :func:`select_types` returns the kept
glyphs and how many each rule removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from metaedu.data.glyphs.drawers import CHARACTER_SIZE, PEN_WIDTH_RANGE, complexity_scale
from metaedu.data.glyphs.fonts import FONTS, GlyphType, normalised_strokes, stroke_length
from metaedu.data.glyphs.render import downsample, rasterise
from metaedu.data.glyphs.split import NEAR_DUPLICATE_SIMILARITY, canonical_images, similarity

#: Ink share of the character's square box at 28 x 28 above which a glyph reads as a blot.
BLOT_COVERAGE = 0.45
#: Correlation of slant-corrected, blurred renderings at which two glyphs of one letter are style variants.
STYLE_SIMILARITY = 0.65
#: Slants (shear of x by y) tried when comparing two glyphs of one letter.
STYLE_SHEARS = (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3)
#: Correlation of normalised renderings at which two glyphs are the same shape: the split's
#: near-duplicate threshold, so no two kept glyphs are what the split would call one letter.
LOOK_ALIKE_SIMILARITY = NEAR_DUPLICATE_SIMILARITY


@dataclass
class SelectionReport:
    """How many glyphs each rule left out."""

    candidates: int
    blots: int
    style_variants: int
    look_alikes: int
    kept: int

    def __str__(self) -> str:
        return (f"{self.candidates} distinct font glyphs: {self.blots} blots, {self.style_variants} style variants "
                f"and {self.look_alikes} look-alikes left out, {self.kept} kept")


def blot_coverage(glyph: GlyphType) -> float:
    """Share of its square box that the character's ink covers at 28 x 28, drawn at the data set's
    size for it and with the drawers' median pen (clean: no motor noise)."""
    norm = normalised_strokes(glyph.strokes)
    size = CHARACTER_SIZE * complexity_scale(stroke_length(norm))
    binary = rasterise([[s * size + 0.5 for s in norm]], float(np.mean(PEN_WIDTH_RANGE)), 105)
    grey = downsample(binary, 28)[0] / 255.0
    return float(grey.sum() / (size * 28) ** 2)


def style_features(glyph: GlyphType, shears=STYLE_SHEARS, size: int = 28) -> np.ndarray:
    """Blurred renderings of a glyph under each slant, ``[len(shears), size * size]``, zero mean, unit norm."""
    norm = normalised_strokes(glyph.strokes)
    drawings = []
    for shear in shears:
        slanted = normalised_strokes([s - shear * s[:, 1:2] * np.array([1.0, 0.0]) for s in norm])
        drawings.append([s * 0.8 + 0.5 for s in slanted])
    binary = rasterise(drawings, 1.5, size)
    feats = np.stack([np.asarray(Image.fromarray(b * 255).filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)
                      for b in binary]).reshape(len(shears), -1)
    feats -= feats.mean(1, keepdims=True)
    return feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)


def style_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Best correlation of one glyph upright with the other under any slant (both ways round)."""
    upright = STYLE_SHEARS.index(0.0)
    return float(max((b @ a[upright]).max(), (a @ b[upright]).max()))


def select_types(candidates: list[GlyphType]) -> tuple[list[GlyphType], SelectionReport]:
    """The glyphs a person would draw as characters of their own (see the module docstring)."""
    rank = {font: i for i, font in enumerate(FONTS)}
    order = sorted(range(len(candidates)), key=lambda i: (rank.get(candidates[i].font, len(rank)), i))
    drawable = [i for i in order if blot_coverage(candidates[i]) <= BLOT_COVERAGE]
    blots = len(candidates) - len(drawable)
    # style variants: within one letter, a glyph is kept only if it differs from every glyph of that
    # letter met before it, kept or not (so a bold italic "A" goes with the italic "A" it resembles)
    features: dict[int, np.ndarray] = {}
    seen_by_letter: dict[tuple[str, str], list[int]] = {}
    distinct = []
    for i in drawable:
        letter = candidates[i].letter
        if letter is not None:
            features[i] = style_features(candidates[i])
            earlier = seen_by_letter.setdefault(letter, [])
            variant = any(style_similarity(features[i], features[j]) >= STYLE_SIMILARITY for j in earlier)
            earlier.append(i)
            if variant:
                continue
        distinct.append(i)
    style_variants = len(drawable) - len(distinct)
    # look-alikes: the same shape under another code or in another font
    sim = similarity(canonical_images([candidates[i] for i in distinct]))
    kept: list[int] = []
    for a in range(len(distinct)):
        if kept and sim[a, kept].max() > LOOK_ALIKE_SIMILARITY:
            continue
        kept.append(a)
    chosen = sorted(distinct[a] for a in kept)  # back in the fonts' order
    report = SelectionReport(len(candidates), blots, style_variants, len(distinct) - len(kept), len(chosen))
    return [candidates[i] for i in chosen], report
