"""Omniglot-like alphabets drawn from the Hershey stroke fonts: the course's default data.

Real Omniglot (Lake et al. 2015) holds 1,623 characters from 50 alphabets, each
drawn once by 20 people, rendered as 105 x 105 black-and-white images. This
package builds a data set with the same structure and, as far as it is
measured, the same look (``shared/reference/data-formats.md``):

* **types** (:mod:`.fonts`, :mod:`.selection`, :mod:`.invented`): the distinct characters of
  the Hershey fonts that a person would draw as characters of their own (style variants,
  look-alikes and blots left out), and invented alphabets made the way Lake et al.'s model
  of types imagines new characters;
* **alphabets and sides** (:mod:`.split`): background (meta-training) and evaluation
  (meta-testing) without leakage: the same letter, or two glyphs that look alike, never
  straddle the split;
* **tokens** (:mod:`.drawers`, :mod:`.structure`, :mod:`.render`): each character drawn by the
  same 20 simulated people, each with habits (slant, size, proportions, pen, shakiness, how
  often they drop, split, hook or overshoot a stroke or change the stroke order) and motor
  noise in every drawing, rasterised at 105 x 105 and reduced to 28 x 28;
* **statistics** (:mod:`.statistics`): the reference page's measurements of real Omniglot and
  the same measurements of ours;
* **cache** (:mod:`.cache`): built once per (seed, size) under :func:`metaedu.runtime.cache_dir`,
  keyed by :data:`DATA_VERSION`.

``load_glyphs()`` returns a :class:`GlyphAlphabets`; ``.split("background")`` and
``.split("evaluation")`` give :class:`~metaedu.data.base.ClassImageSet`\\ s.
"""

from metaedu.data.glyphs.cache import DATA_VERSION, cache_paths, load_glyphs
from metaedu.data.glyphs.dataset import GlyphAlphabets, build_glyphs, character_images, draw_character, stroke_descriptor
from metaedu.data.glyphs.drawers import N_DRAWERS, Drawer, draw, sample_drawers
from metaedu.data.glyphs.fonts import FONTS, LETTER_SCRIPTS, GlyphType, load_glyph_types, normalised_strokes, shape_key
from metaedu.data.glyphs.invented import invent_alphabets, new_character
from metaedu.data.glyphs.render import downsample, rasterise
from metaedu.data.glyphs.selection import select_types
from metaedu.data.glyphs.split import NEAR_DUPLICATE_SIMILARITY, SIDES, canonical_images
from metaedu.data.glyphs.structure import StructuralNoise

__all__ = [
    "DATA_VERSION", "FONTS", "LETTER_SCRIPTS", "NEAR_DUPLICATE_SIMILARITY", "N_DRAWERS", "SIDES",
    "Drawer", "GlyphAlphabets", "GlyphType", "StructuralNoise",
    "build_glyphs", "cache_paths", "canonical_images", "character_images", "downsample", "draw", "draw_character",
    "invent_alphabets", "load_glyph_types", "load_glyphs", "new_character", "normalised_strokes", "rasterise",
    "sample_drawers", "select_types", "shape_key", "stroke_descriptor",
]
