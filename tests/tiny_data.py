"""Tiny data sets for tests that train: a few classes of 16 x 16 noisy prototypes, in groups."""

from __future__ import annotations

import torch

from metaedu.data.base import ClassImageSet


def tiny_images(n_classes: int = 12, per_class: int = 6, side: int = 16, seed: int = 0) -> ClassImageSet:
    """``n_classes`` classes of ``per_class`` noisy copies of a random prototype, three groups (alphabets)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(n_classes, 1, side, side, generator=g)
    noise = 0.2 * torch.rand(n_classes * per_class, 1, side, side, generator=g)
    images = (protos.repeat_interleave(per_class, 0) + noise).clamp(0, 1)
    groups = [f"g{c % 3}" for c in range(n_classes)]
    return ClassImageSet(
        images,
        torch.arange(n_classes).repeat_interleave(per_class),
        [str(c) for c in range(n_classes)],
        groups,
        name="tiny",
    )
