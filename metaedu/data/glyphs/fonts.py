"""Character types from the Hershey stroke fonts, and the geometry of stroke lists.

A *type* (Lake et al.'s word for a character concept) is a list of pen strokes,
each a polyline ``[n_points, 2]`` with y pointing down. The Hershey fonts (the
``hershey-fonts`` package, no download) give about 3,170 glyphs in 32 fonts;
:func:`load_glyph_types` keeps the distinct, drawable ones of the fonts in
:data:`FONTS`. Which of those a person would actually draw as a character of its
own is decided later (:mod:`.selection`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Script and readable name of each Hershey font used. The six Gothic fonts are left out: they
#: draw a letter's outline with two or three parallel strokes, which is not how a pen writes it.
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
#: Glyphs whose larger side is below this fraction of their font's typical height are
#: dots, commas and dashes; they are not characters anyone would learn.
MIN_RELATIVE_EXTENT = 0.4


@dataclass
class GlyphType:
    """One character concept: a list of pen strokes (from a Hershey font, or invented)."""

    font: str
    code: str
    script: str
    strokes: list[np.ndarray]  # each [n_points, 2], any units, y down
    alphabet: str | None = None  # an invented character's alphabet (font glyphs: None, their font names it)

    @property
    def name(self) -> str:
        return f"{self.font}:{self.code}"

    @property
    def letter(self) -> tuple[str, str] | None:
        """The letter this glyph writes, shared by every font of its script; None outside letter scripts.

        Digits and signs (non-alphabetic codes) are one letter for all letter scripts.
        """
        if self.script not in LETTER_SCRIPTS:
            return None
        return (self.script, self.code) if self.code.isalpha() else ("common", self.code)


def load_glyph_types() -> list[GlyphType]:
    """All distinct, drawable stroke shapes of the fonts in :data:`FONTS` (identical shapes counted once)."""
    from HersheyFonts import HersheyFonts

    fonts = HersheyFonts()
    missing = sorted(set(FONTS) - set(fonts.default_font_names))
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
        typical = float(np.median([extent(strokes).max() for _, strokes in glyphs]))
        for code, strokes in glyphs:
            if extent(strokes).max() < MIN_RELATIVE_EXTENT * typical:
                continue
            key = shape_key(strokes)
            if key in seen:
                continue
            seen.add(key)
            types.append(GlyphType(font=font, code=code, script=FONTS[font][0], strokes=single_line(strokes)))
    return types


def single_line(strokes: list[np.ndarray], gap: float = 2.0, covered: float = 0.75) -> list[np.ndarray]:
    """Drop strokes that only thicken another one.

    The duplex and triplex fonts draw a thick line as two or three parallel pen
    strokes about a font unit apart. A person with a pen draws it once, so a
    stroke is dropped when ``covered`` of its length lies within ``gap`` font
    units of strokes already kept (longest strokes are kept first).
    """
    order = sorted(range(len(strokes)), key=lambda i: -polyline_length(strokes[i]))
    kept: list[int] = []
    kept_points = np.zeros((0, 2))
    for i in order:
        pts = resample(strokes[i], 0.5)
        if len(kept_points):
            dist = np.sqrt(((pts[:, None, :] - kept_points[None, :, :]) ** 2).sum(-1)).min(1)
            if (dist <= gap).mean() >= covered:
                continue
        kept.append(i)
        kept_points = np.concatenate([kept_points, pts])
    return [strokes[i] for i in sorted(kept)]


# ----------------------------------------------------------------------------- geometry


def extent(strokes: list[np.ndarray]) -> np.ndarray:
    """Width and height of the strokes' bounding box, ``[2]``."""
    points = np.concatenate(strokes)
    return points.max(0) - points.min(0)


def polyline_length(stroke: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(stroke, axis=0), axis=1).sum())


def stroke_length(strokes: list[np.ndarray]) -> float:
    """Total pen travel of a stroke list (in its own units)."""
    return sum(polyline_length(s) for s in strokes)


def shape_key(strokes: list[np.ndarray]) -> bytes:
    """Bytes that are equal exactly when two glyphs have the same strokes up to a shift."""
    origin = np.concatenate(strokes).min(0)
    parts = [np.asarray([len(s)], dtype=np.int64).tobytes() + (s - origin).astype(np.int64).tobytes() for s in strokes]
    return b"|".join(parts)


def normalised_strokes(strokes: list[np.ndarray]) -> list[np.ndarray]:
    """Strokes centred on their bounding box, the larger side scaled to 1 (y down)."""
    points = np.concatenate(strokes)
    low, high = points.min(0), points.max(0)
    scale = max(float((high - low).max()), 1e-6)
    centre = (low + high) / 2
    return [(s - centre) / scale for s in strokes]


def resample(stroke: np.ndarray, spacing: float) -> np.ndarray:
    """Points every ``spacing`` along a polyline (the end points kept); ``[n, 2]`` with n >= 2."""
    seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] < 1e-9:
        return stroke[:1].repeat(2, 0)
    n = max(2, int(np.ceil(arc[-1] / spacing)) + 1)
    t = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(t, arc, stroke[:, 0]), np.interp(t, arc, stroke[:, 1])], axis=1)
