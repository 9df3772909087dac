"""Invented alphabets: new characters made the way Lake et al.'s model of types imagines them.

Once style variants, look-alikes and blots are left out (:mod:`.selection`), the
fonts hold fewer distinct characters than Omniglot's 1,623. Like Omniglot, whose
50 alphabets include invented scripts, the data set adds alphabets that nobody
wrote before, generated in the spirit of Bayesian Program Learning (Lake et al.
2015): a character is a few strokes taken from a library of strokes people use,
each placed in relation to the ones before it.

An invented **alphabet** has its own look: a vocabulary of strokes drawn from one
script's strokes (some mirrored or turned), its own typical number of strokes,
and its own habits of attaching a stroke where the previous one ended, starting
it on an earlier stroke, or placing it freely. A **character** samples a number
of strokes, the strokes from the vocabulary with a scale each, and a relation for
each stroke after the first.

A candidate character is kept only if it is no blot (:func:`.selection.blot_coverage`),
not too thin, and looks like no character already in the data set
(:data:`.split.NEAR_DUPLICATE_SIMILARITY`), so it adds a class that is new and
links to nothing across the split. The invented characters are the same for every
data seed (:data:`INVENTED_SEED`); only their drawings change with the seed.
"""

from __future__ import annotations

import numpy as np

from metaedu.data.glyphs.fonts import GlyphType, extent, normalised_strokes, polyline_length, resample, stroke_length
from metaedu.data.glyphs.selection import BLOT_COVERAGE, blot_coverage
from metaedu.data.glyphs.split import NEAR_DUPLICATE_SIMILARITY, canonical_images, unit_rows

#: The data set's size: invented alphabets fill up the font characters to this many.
TARGET_CHARACTERS = 1100
#: Seed of the invented alphabets (fixed: the characters do not depend on the data seed).
INVENTED_SEED = 2015
#: Characters per invented alphabet (Omniglot's alphabets hold 14 to 55).
ALPHABET_SIZE = (20, 45)
#: Strokes in an alphabet's vocabulary.
VOCABULARY_SIZE = (12, 30)
#: Most strokes in one character.
MAX_STROKES = 4
#: Library strokes shorter or longer than these (units of their character's larger side) are not used.
STROKE_LENGTH_RANGE = (0.25, 2.2)
#: Total stroke length of an invented character, in units of its larger side: fewer is a mere
#: squiggle, more is dense (the font characters' middle 80% lie between about 1.8 and 4, and real
#: Omniglot characters hold more stroke for their size than the fonts' do).
STROKE_LENGTH_LIMITS = (2.2, 5.0)
#: Invented characters whose smaller side is below this fraction of the larger are left out (slivers).
MIN_ASPECT = 0.3
#: Tries per character before an alphabet is closed with fewer characters.
TRIES_PER_CHARACTER = 40


def stroke_library(types: list[GlyphType]) -> dict[str, list[np.ndarray]]:
    """The strokes of ``types`` by script, each in its character's normalised units, centred on itself."""
    library: dict[str, list[np.ndarray]] = {}
    for t in types:
        for s in normalised_strokes(t.strokes):
            if STROKE_LENGTH_RANGE[0] <= polyline_length(s) <= STROKE_LENGTH_RANGE[1]:
                library.setdefault(t.script, []).append(s - (s.min(0) + s.max(0)) / 2)
    return library


class AlphabetStyle:
    """The look of one invented alphabet: a stroke vocabulary, a typical stroke count, relation habits."""

    def __init__(self, library: dict[str, list[np.ndarray]], rng: np.random.Generator) -> None:
        scripts = sorted(s for s, strokes in library.items() if len(strokes) >= VOCABULARY_SIZE[1])
        if not scripts:
            raise ValueError(f"the stroke library needs a script with at least {VOCABULARY_SIZE[1]} strokes")
        self.script = scripts[int(rng.integers(len(scripts)))]
        donor = library[self.script]
        picks = rng.choice(len(donor), size=int(rng.integers(VOCABULARY_SIZE[0], VOCABULARY_SIZE[1] + 1)), replace=False)
        self.vocabulary = [_mirror_or_turn(donor[int(i)], rng) for i in picks]
        self.extra_strokes = float(rng.uniform(1.2, 2.5))  # mean number of strokes after the first
        self.p_end = float(rng.uniform(0.2, 0.5))  # a stroke starts where the previous one ended
        self.p_along = float(rng.uniform(0.1, 0.35))  # ... or somewhere on an earlier stroke (else anywhere)

    def character(self, rng: np.random.Generator, n_strokes: int | None = None) -> list[np.ndarray]:
        """One new character's strokes (not normalised)."""
        n = n_strokes or 1 + min(int(rng.poisson(self.extra_strokes)), MAX_STROKES - 1)
        strokes: list[np.ndarray] = []
        for k in range(n):
            s = self.vocabulary[int(rng.integers(len(self.vocabulary)))] * rng.uniform(0.6, 1.0)
            if rng.random() < 0.5:
                s = s[::-1]  # drawn from its other end
            u = rng.random()
            if k and u < self.p_end:
                s = s - s[0] + strokes[-1][-1]
            elif k and u < self.p_end + self.p_along:
                on = resample(strokes[int(rng.integers(k))], 0.05)
                s = s - s[0] + on[int(rng.integers(len(on)))]
            else:
                s = s + rng.uniform(-0.35, 0.35, size=2)
            strokes.append(s)
        return strokes


def _mirror_or_turn(stroke: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A library stroke as an alphabet adopts it: as it is, mirrored, or turned by a right angle."""
    u = rng.random()
    if u < 0.25:
        return stroke * np.array([-1.0, 1.0])
    if u < 0.45:
        return stroke[:, ::-1] * np.array([1.0, -1.0])
    return stroke


def acceptable(strokes: list[np.ndarray]) -> bool:
    """Neither a squiggle nor dense, not a sliver, not a blot at 28 x 28."""
    norm = normalised_strokes(strokes)
    ext = extent(norm)
    length = stroke_length(norm)
    if not STROKE_LENGTH_LIMITS[0] <= length <= STROKE_LENGTH_LIMITS[1] or ext.min() < MIN_ASPECT * ext.max():
        return False
    return blot_coverage(GlyphType("new", "", "new", norm)) <= BLOT_COVERAGE


def invent_alphabets(existing: list[GlyphType], target: int = TARGET_CHARACTERS, seed: int = INVENTED_SEED) -> list[GlyphType]:
    """Invented characters, alphabet by alphabet, until ``existing`` plus them number ``target``.

    The result depends on the set of ``existing`` characters, not on their order.
    """
    rng = np.random.default_rng(seed)
    existing = sorted(existing, key=lambda t: t.name)
    library = stroke_library(existing)
    feats = unit_rows(canonical_images(existing))  # [n, d] shapes already in the data set
    invented: list[GlyphType] = []
    alphabet = 0
    while len(existing) + len(invented) < target:
        alphabet += 1
        style = AlphabetStyle(library, rng)
        name = f"Invented alphabet {alphabet}"
        wanted = min(int(rng.integers(ALPHABET_SIZE[0], ALPHABET_SIZE[1] + 1)), target - len(existing) - len(invented))
        made, tries = 0, 0
        while made < wanted and tries < TRIES_PER_CHARACTER * wanted:
            tries += 1
            strokes = style.character(rng)
            if not acceptable(strokes):
                continue
            candidate = GlyphType("invented", f"{alphabet:02d}.{made + 1:02d}", "invented", normalised_strokes(strokes), alphabet=name)
            f = unit_rows(canonical_images([candidate]))
            if len(feats) and float((feats @ f[0]).max()) > NEAR_DUPLICATE_SIMILARITY:
                continue
            invented.append(candidate)
            feats = np.concatenate([feats, f])
            made += 1
        if made == 0:
            raise RuntimeError(f"invented alphabet {alphabet} could not make a single acceptable character")
    return invented


def new_character(types: list[GlyphType], rng: np.random.Generator, n_strokes: int | None = None) -> GlyphType:
    """One character nobody has seen, in the style of a fresh invented alphabet (strokes from ``types``)."""
    style = AlphabetStyle(stroke_library(types), rng)
    for _ in range(TRIES_PER_CHARACTER):
        strokes = style.character(rng, n_strokes)
        if acceptable(strokes):
            break
    return GlyphType(font="new", code=f"new{int(rng.integers(1_000_000))}", script="new", strokes=normalised_strokes(strokes))

