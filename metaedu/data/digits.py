"""scikit-learn's real handwritten digits (1,797 images, 8 x 8, shipped inside the wheel)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from metaedu.data.base import ClassImageSet


#: Share of the canvas a digit's 8 x 8 frame takes when enlarged, so that its
#: strokes have the size and placement of a character in the glyph and Omniglot images.
DIGIT_FILL = 0.6


def load_digits(size: int = 8, fill: float = DIGIT_FILL) -> ClassImageSet:
    """The digits as a class-indexed image set, ink bright, float in [0, 1].

    ``size=28`` puts each digit on the glyphs' canvas: its 8 x 8 frame is enlarged
    (bilinear) to ``fill`` of the side and centred, for one-shot transfer from
    glyphs to real handwriting.
    """
    from sklearn.datasets import load_digits as sk_digits

    if not 0 < fill <= 1:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    bunch = sk_digits()
    images = bunch.images.astype(np.float32) / 16.0  # 0..16 grey levels
    if size != 8:
        inner = max(1, int(round(fill * size)))
        lo = (size - inner) // 2
        canvas = np.zeros((len(images), size, size), dtype=np.float32)
        for i, im in enumerate(images):
            canvas[i, lo : lo + inner, lo : lo + inner] = np.asarray(Image.fromarray(im).resize((inner, inner), Image.BILINEAR))
        images = np.clip(canvas, 0.0, 1.0)
    return ClassImageSet(
        images=torch.from_numpy(images).float()[:, None],
        targets=torch.from_numpy(bunch.target.astype(np.int64)),
        class_names=[str(d) for d in range(10)],
        name=f"sklearn digits {size}x{size}",
    )


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Flat features ``[1797, 64]`` in [0, 1] and labels, for the learned-optimizer MLP."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)
