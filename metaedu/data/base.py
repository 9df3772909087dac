"""The one data type every image source returns: a class-indexed image set."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ClassImageSet:
    """Labelled images grouped by class.

    Attributes:
        images: ``[N, C, H, W]`` tensor, ``uint8`` (0..255) or float in [0, 1]; ink is bright.
        targets: ``[N]`` class index of each image, in ``0 .. n_classes - 1``.
        class_names: one name per class.
        groups: for each class, the group it belongs to (an alphabet for glyphs and
            Omniglot); episodes may be drawn within one group (Lake's runs do).
        name: a short description for tables and error messages.
    """

    images: torch.Tensor
    targets: torch.Tensor
    class_names: list[str]
    groups: list[str] = field(default_factory=list)
    name: str = "images"

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.targets.shape != (self.images.shape[0],):
            raise ValueError(
                f"{self.name}: {self.images.shape[0]} images but targets of shape {tuple(self.targets.shape)}"
            )
        self.targets = self.targets.long()
        n = len(self.class_names)
        if len(self.targets) and (int(self.targets.min()) < 0 or int(self.targets.max()) >= n):
            raise ValueError(f"{self.name}: targets must lie in 0..{n - 1}")
        if not self.groups:
            self.groups = ["all"] * n
        if len(self.groups) != n:
            raise ValueError(f"{self.name}: {len(self.groups)} groups for {n} classes")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def counts(self) -> torch.Tensor:
        """Number of images of each class, ``[n_classes]``."""
        return torch.bincount(self.targets, minlength=self.n_classes)

    def float_images(self) -> torch.Tensor:
        """Images as float32 in [0, 1]."""
        return to_float(self.images)

    def subset_classes(self, classes, name: str | None = None) -> "ClassImageSet":
        """The set restricted to some classes, renumbered ``0 .. len(classes) - 1`` in the order given."""
        classes = [int(c) for c in classes]
        remap = torch.full((self.n_classes,), -1, dtype=torch.long)
        remap[torch.tensor(classes, dtype=torch.long)] = torch.arange(len(classes))
        keep = remap[self.targets] >= 0
        return ClassImageSet(
            images=self.images[keep],
            targets=remap[self.targets[keep]],
            class_names=[self.class_names[c] for c in classes],
            groups=[self.groups[c] for c in classes],
            name=name or self.name,
        )

    def group_names(self) -> list[str]:
        """The distinct groups, in order of first appearance."""
        return list(dict.fromkeys(self.groups))

    def __repr__(self) -> str:
        counts = self.counts()
        return (
            f"ClassImageSet({self.name!r}: {self.n_classes} classes in {len(self.group_names())} groups, "
            f"{len(self.targets)} images of shape {self.image_shape}, "
            f"{int(counts.min())}..{int(counts.max())} per class)"
        )


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float images to float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()
