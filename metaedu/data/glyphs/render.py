"""The one rasteriser: pen strokes to binary images (PIL), and the bilinear reduction to 28 x 28.

A drawing is a list of strokes, each ``[n, 2]`` in canvas fractions (0..1,
y down). The pen is round: PIL draws each stroke as a wide line at
:data:`SUPERSAMPLE` times the resolution, with a disc at both ends and at every
sharp turn, and the image is reduced by averaging blocks and thresholded at one
half. The result is binary like Omniglot's 105 x 105 scans, and the pen width
need not be a whole number of pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

#: Drawings are drawn this many times larger and then reduced (sub-pixel pen widths).
SUPERSAMPLE = 4
#: A stroke turning by more than this (degrees) at a point gets a disc there (a round joint).
ROUND_JOINT_DEGREES = 60.0


def rasterise(drawings: list[list[np.ndarray]], pen_widths, size: int = 105) -> np.ndarray:
    """Binary images ``[len(drawings), size, size]`` uint8 (ink = 1).

    ``drawings[d]`` is a list of strokes ``[n, 2]`` in canvas fractions;
    ``pen_widths[d]`` is the pen's diameter in pixels of the ``size`` image (one
    number for all drawings is fine). Ink outside the canvas is cut off.
    """
    widths = np.broadcast_to(np.asarray(pen_widths, dtype=np.float64), (len(drawings),))
    if len(drawings) and widths.min() <= 0:
        raise ValueError(f"pen widths must be positive, got {widths.min()}")
    big = size * SUPERSAMPLE
    out = np.zeros((len(drawings), size, size), dtype=np.uint8)
    for d, strokes in enumerate(drawings):
        img = Image.new("L", (big, big), 0)
        pen = ImageDraw.Draw(img)
        width = widths[d] * SUPERSAMPLE
        radius = width / 2
        for stroke in strokes:
            pts = np.asarray(stroke, dtype=np.float64) * big  # [n, 2] pixels of the large image
            pen.line(pts.ravel().tolist(), fill=255, width=max(1, int(round(width))))
            for x, y in pts[_round_points(pts)].tolist():
                pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
        out[d] = np.asarray(img.reduce(SUPERSAMPLE)) >= 128
    return out


def _round_points(pts: np.ndarray) -> np.ndarray:
    """Indices of a polyline's two ends and of the points where it turns sharply."""
    keep = np.zeros(len(pts), dtype=bool)
    keep[[0, -1]] = True
    if len(pts) > 2:
        a, b = pts[1:-1] - pts[:-2], pts[2:] - pts[1:-1]  # [n - 2, 2] incoming and outgoing directions
        norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos = (a * b).sum(1) / np.maximum(norm, 1e-12)
        keep[1:-1] = (cos < np.cos(np.deg2rad(ROUND_JOINT_DEGREES))) & (norm > 0)
    return np.flatnonzero(keep)


def downsample(binary: np.ndarray, size: int) -> np.ndarray:
    """Binary images ``[..., H, W]`` reduced with bilinear filtering, as 0..255 grey levels (uint8)."""
    flat = binary.reshape(-1, *binary.shape[-2:])
    out = [np.asarray(Image.fromarray(b.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)) for b in flat]
    return np.stack(out).reshape(*binary.shape[:-2], size, size).astype(np.uint8)
