"""scikit-learn's real handwritten digits (1,797 images, 8 x 8, shipped inside the wheel)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from metaedu.data.base import ClassImageSet


def load_digits(size: int = 8) -> ClassImageSet:
    """The digits as a class-indexed image set, ink bright, float in [0, 1].

    ``size=28`` enlarges them (bilinear) to the glyphs' resolution, for one-shot
    transfer from glyphs to real handwriting.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = bunch.images.astype(np.float32) / 16.0  # 0..16 grey levels
    if size != 8:
        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])
        images = np.clip(images, 0.0, 1.0)
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
