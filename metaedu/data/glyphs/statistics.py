"""Image statistics of handwritten characters, measured as the reference page measures real Omniglot.

The reference figures (``shared/reference/data-formats.md``, 2,000 background
images of real Omniglot at 105 x 105, ink = 1) are :data:`OMNIGLOT_REFERENCE`.
Definitions, per binary image:

* **ink**: share of ink pixels;
* **width**, **height**: the ink's bounding box over the image side;
* **centroid_x**, **centroid_y**: the ink's mean position minus the centre, over the side (+ is right, down);
* **pen**: the median, over ink pixels, of the shorter of the horizontal and the vertical
  ink run through that pixel (:func:`pen_width`);
* **length**: total stroke length in pixels, the ink area over the pen width
  (a stroke of length l drawn with a pen of width w covers about l * w pixels).

At 28 x 28 (grey levels after the bilinear reduction) the page gives a pen of
about 1.4 pixels and a mean ink intensity of 0.079. :func:`grey_pen_width`
carries the pen definition over to grey levels: a run is a stretch of pixels
with any ink, and its width is the ink it holds (the sum of intensities), so a
stroke 1.4 pixels wide reads 1.4 however its edges fall on the pixel grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reference:
    """One row of the reference table."""

    label: str  # what is measured
    p10: float | None  # 10th percentile over images (None: the page gives no spread)
    median: float  # median (for stroke length: the page's typical value)
    p90: float | None  # 90th percentile over images


#: Real Omniglot at 105 x 105 (``shared/reference/data-formats.md``).
OMNIGLOT_REFERENCE: dict[str, Reference] = {
    "ink": Reference("ink fraction", 0.049, 0.077, 0.111),
    "width": Reference("bounding-box width / side", 0.35, 0.54, 0.77),
    "height": Reference("bounding-box height / side", 0.42, 0.57, 0.75),
    "centroid_x": Reference("centroid offset x / side", -0.091, -0.015, 0.064),
    "centroid_y": Reference("centroid offset y / side (+ down)", -0.113, -0.038, 0.037),
    "pen": Reference("pen width (px)", 5.0, 5.0, 6.0),
    "length": Reference("total stroke length (px)", None, 160.0, None),
}
#: The page's figures at 28 x 28: pen width in pixels and mean ink intensity.
OMNIGLOT_28PX = {"pen": 1.4, "ink": 0.079}


def run_lengths(ink: np.ndarray, axis: int) -> np.ndarray:
    """For each pixel of a binary image ``[H, W]``, the length of the ink run through it along ``axis``
    (1: horizontal, 0: vertical); 0 off the ink."""
    a = ink if axis == 1 else ink.T
    edges = np.diff(np.pad(a.astype(np.int8), ((0, 0), (1, 1))), axis=1)  # +1 where a run starts, -1 after it ends
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)  # row-major, so runs pair up in order
    lengths = ends[1] - starts[1]
    out = np.zeros(a.shape, dtype=np.int64)
    out[a.astype(bool)] = np.repeat(lengths, lengths)  # ink pixels in row-major order are the runs in order
    return out if axis == 1 else out.T


def pen_width(ink: np.ndarray) -> float:
    """Median over ink pixels of the shorter of the horizontal and vertical runs through them (pixels)."""
    ink = ink.astype(bool)
    if not ink.any():
        raise ValueError("the image has no ink, so it has no pen width")
    shorter = np.minimum(run_lengths(ink, 1), run_lengths(ink, 0))
    return float(np.median(shorter[ink]))


def image_statistics(binary: np.ndarray) -> dict[str, float]:
    """The reference table's statistics of one binary image ``[n, n]`` (ink = 1)."""
    ink = np.asarray(binary).astype(bool)
    if ink.ndim != 2 or ink.shape[0] != ink.shape[1]:
        raise ValueError(f"expected one square image, got shape {ink.shape}")
    if not ink.any():
        raise ValueError("the image has no ink")
    n = ink.shape[0]
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    ys, xs = np.nonzero(ink)
    pen = pen_width(ink)
    return {
        "ink": float(ink.mean()),
        "width": (cols[-1] - cols[0] + 1) / n,
        "height": (rows[-1] - rows[0] + 1) / n,
        "centroid_x": float((xs.mean() + 0.5) / n - 0.5),
        "centroid_y": float((ys.mean() + 0.5) / n - 0.5),
        "pen": pen,
        "length": float(ink.sum() / pen),
    }


def grey_pen_width(grey: np.ndarray, floor: float = 0.05, core: float = 0.5) -> float:
    """Pen width of a grey image ``[H, W]`` in [0, 1]: the run definition with ink amounts.

    A run is a stretch of pixels brighter than ``floor`` along a row or column; its
    width is the sum of their intensities. Each pixel of a stroke's core (intensity at
    least ``core``) takes the smaller of its row run's and column run's width; the pen
    width is the median over core pixels.
    """
    grey = np.asarray(grey, dtype=np.float64)
    if grey.max() > 1.0 + 1e-9 or grey.min() < 0:
        raise ValueError("grey levels must lie in [0, 1]")
    widths = []
    for axis in (1, 0):
        a = grey if axis == 1 else grey.T
        on = a > floor
        edges = np.diff(np.pad(on.astype(np.int8), ((0, 0), (1, 1))), axis=1)
        starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
        lengths = ends[1] - starts[1]
        mass = np.add.reduceat(a[on], np.concatenate([[0], np.cumsum(lengths)[:-1]])) if len(lengths) else np.zeros(0)
        out = np.zeros(a.shape)
        out[on] = np.repeat(mass, lengths)
        widths.append(out if axis == 1 else out.T)
    cores = grey >= core
    if not cores.any():
        raise ValueError(f"no pixel reaches the core intensity {core}")
    return float(np.median(np.minimum(*widths)[cores]))


def summarise(rows: list[dict[str, float]]) -> dict[str, tuple[float, float, float]]:
    """(p10, median, p90) of each statistic over images."""
    return {k: tuple(float(np.percentile([r[k] for r in rows], q)) for q in (10, 50, 90)) for k in rows[0]}


def comparison_table(ours: dict[str, tuple[float, float, float]], reference: dict[str, Reference] = OMNIGLOT_REFERENCE) -> str:
    """A text table of our p10 / median / p90 beside the reference's, row by row."""

    def fmt(v):
        return "—" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"

    lines = [f"{'statistic (105 x 105)':<36} {'ours p10 / median / p90':>26}   {'reference p10 / median / p90':>30}"]
    for key, ref in reference.items():
        if key not in ours:
            continue
        mine = " / ".join(fmt(v) for v in ours[key])
        theirs = " / ".join(fmt(v) for v in (ref.p10, ref.median, ref.p90))
        lines.append(f"{ref.label:<36} {mine:>26}   {theirs:>30}")
    return "\n".join(lines)
