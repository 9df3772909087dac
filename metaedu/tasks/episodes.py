"""N-way K-shot episodes: the unit of meta-learning.

An episode (Ravi & Larochelle's data set D = (D_train, D_test); Vinyals et al.'s
support set S and batch B) is drawn by choosing ``n_way`` classes, giving them
labels 0 .. n_way - 1, and taking ``k_shot`` support and ``n_query`` query
images of each. Episodes come in batches of ``tasks`` so that a meta-batch can
be processed at once:

* ``x_support``: ``[tasks, n_way * k_shot, C, H, W]``, ``y_support``: ``[tasks, n_way * k_shot]``
* ``x_query``: ``[tasks, n_way * n_query, C, H, W]``, ``y_query``: ``[tasks, n_way * n_query]``

Both sets are ordered class by class (``y_support`` is ``0, .., 0, 1, .., 1, ...``),
so ``x_support.view(tasks, n_way, k_shot, ...)`` groups the shots of a class.

**Label shuffling.** By default every episode assigns labels to its classes at
random, so a label means nothing across episodes (mutually exclusive tasks).
With ``shuffle_labels=False`` each class keeps one label for good: classes are
split once into ``n_way`` fixed groups and an episode takes one class from
each group, labelled by its group. A model can then solve every task without
looking at the support set, the memorization problem of Yin et al. (2020).

**Rotations.** ``rotations=(0, 90, 180, 270)`` makes each rotated character a
class of its own, as Vinyals et al. and Santoro et al. do on Omniglot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metaedu.data.base import ClassImageSet, to_float
from metaedu.runtime import get_device


@dataclass
class Episodes:
    """A batch of episodes (see the module docstring for shapes)."""

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    classes: torch.Tensor  # [tasks, n_way] class id behind each label (rotated classes numbered after the originals)
    n_way: int
    k_shot: int
    n_query: int

    @property
    def tasks(self) -> int:
        return self.x_support.shape[0]

    def to(self, device) -> "Episodes":
        return Episodes(
            self.x_support.to(device),
            self.y_support.to(device),
            self.x_query.to(device),
            self.y_query.to(device),
            self.classes,
            self.n_way,
            self.k_shot,
            self.n_query,
        )

    def task(self, i: int) -> "Episodes":
        """Episode ``i`` alone, still with a leading task dimension of 1."""
        sl = slice(i, i + 1)
        return Episodes(
            self.x_support[sl], self.y_support[sl], self.x_query[sl], self.y_query[sl], self.classes[sl],
            self.n_way, self.k_shot, self.n_query,
        )


class EpisodeSampler:
    """Draws batches of N-way K-shot episodes from a class-indexed image set.

    Args:
        data: the images to draw from.
        n_way, k_shot, n_query: classes per episode, support and query images per class.
        rotations: angles in degrees (multiples of 90) that make new classes; ``(0,)`` for none.
        shuffle_labels: random labels per episode (default) or one fixed label per class.
        within_group: draw all classes of an episode from one group (one alphabet), as Lake's runs do.
        device: where the episode tensors are put; the images are moved there once.
        seed: seeds this sampler's own ``torch.Generator`` (sampling never touches the global RNG).
    """

    def __init__(
        self,
        data: ClassImageSet,
        n_way: int,
        k_shot: int,
        n_query: int = 1,
        rotations: tuple[int, ...] = (0,),
        shuffle_labels: bool = True,
        within_group: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        for name, value, low in (("n_way", n_way, 1), ("k_shot", k_shot, 1), ("n_query", n_query, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        check_rotations(rotations)
        if within_group and not shuffle_labels:
            raise ValueError("within_group=True needs shuffle_labels=True (fixed labels draw across all classes)")
        self.data = data
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.rotations = tuple(int(r) % 360 for r in rotations)
        self.shuffle_labels = shuffle_labels
        self.within_group = within_group
        self.device = get_device(device)  # a device this machine lacks is a clear error
        self.generator = torch.Generator().manual_seed(seed)

        counts = data.counts()
        n_classes = data.n_classes * len(self.rotations)
        per_class = self.k_shot + self.n_query
        if self.n_way > n_classes:
            raise ValueError(
                f"cannot draw {self.n_way}-way episodes from {data.name}: it has {n_classes} classes"
                + (f" ({data.n_classes} x {len(self.rotations)} rotations)" if len(self.rotations) > 1 else "")
                + f"; use n_way <= {n_classes}"
            )
        if per_class > int(counts.min()):
            small = int(counts.argmin())
            raise ValueError(
                f"cannot draw k_shot + n_query = {self.k_shot} + {self.n_query} = {per_class} images per class from "
                f"{data.name}: class {data.class_names[small]!r} has only {int(counts.min())} images; "
                f"use k_shot + n_query <= {int(counts.min())}"
            )
        # [n_base_classes, max_count] table of image indices, padded with -1
        order = torch.argsort(data.targets, stable=True)
        self.counts = counts
        table = torch.full((data.n_classes, int(counts.max())), -1, dtype=torch.long)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(len(order)) - starts[data.targets[order]]
        table[data.targets[order], pos] = order
        self.index_table = table
        self.images = data.images.to(self.device)

        if within_group:
            groups = data.group_names()
            self.group_classes = []
            for g in groups:
                base = [c for c, name in enumerate(data.groups) if name == g]
                self.group_classes.append(
                    torch.tensor([b + r * data.n_classes for r in range(len(self.rotations)) for b in base])
                )
            usable = [g for g, cl in zip(groups, self.group_classes) if len(cl) >= self.n_way]
            if not usable:
                largest = max(len(c) for c in self.group_classes)
                raise ValueError(
                    f"cannot draw {self.n_way}-way episodes within one group of {data.name}: "
                    f"the largest group has {largest} classes"
                )
            self.group_classes = [c for c in self.group_classes if len(c) >= self.n_way]
        if not shuffle_labels:
            # fixed label per class: a fixed random split of the classes into n_way groups
            fixed = torch.Generator().manual_seed(seed + 7919)
            label_of = torch.randperm(n_classes, generator=fixed) % self.n_way
            self.label_members = [torch.nonzero(label_of == lab).flatten() for lab in range(self.n_way)]

    @property
    def n_classes(self) -> int:
        return self.data.n_classes * len(self.rotations)

    def _choose_classes(self, tasks: int) -> torch.Tensor:
        g = self.generator
        if not self.shuffle_labels:
            cols = [m[torch.randint(len(m), (tasks,), generator=g)] for m in self.label_members]
            return torch.stack(cols, 1)
        if self.within_group:
            rows = []
            for gi in torch.randint(len(self.group_classes), (tasks,), generator=g).tolist():
                members = self.group_classes[gi]
                rows.append(members[torch.randperm(len(members), generator=g)[: self.n_way]])
            return torch.stack(rows)
        keys = torch.rand(tasks, self.n_classes, generator=g)
        return keys.argsort(1)[:, : self.n_way]

    def sample(self, tasks: int = 1) -> Episodes:
        """Draw ``tasks`` episodes at once."""
        if tasks < 1:
            raise ValueError(f"tasks must be at least 1, got {tasks}")
        n, k, q = self.n_way, self.k_shot, self.n_query
        classes = self._choose_classes(tasks)  # [tasks, n_way]
        base = classes % self.data.n_classes
        rot = classes // self.data.n_classes
        # pick k + q distinct images of each chosen class: random keys, padding sorted last
        counts = self.counts[base]  # [tasks, n_way]
        keys = torch.rand(tasks, n, self.index_table.shape[1], generator=self.generator)
        keys[torch.arange(self.index_table.shape[1]) >= counts[..., None]] = 2.0
        picks = keys.argsort(-1)[..., : k + q]  # [tasks, n_way, k + q]
        idx = torch.gather(self.index_table[base], 2, picks)
        x = to_float(self.images[idx.to(self.device)])  # [tasks, n_way, k + q, C, H, W]
        if len(self.rotations) > 1 or self.rotations[0] != 0:
            quarter = torch.tensor([r // 90 for r in self.rotations])[rot]  # [tasks, n_way]
            x = _rotate(x, quarter.to(self.device))
        labels = torch.arange(n, device=self.device)
        shape = x.shape[3:]
        return Episodes(
            x_support=x[:, :, :k].reshape(tasks, n * k, *shape),
            y_support=labels.repeat_interleave(k).expand(tasks, -1).contiguous(),
            x_query=x[:, :, k:].reshape(tasks, n * q, *shape),
            y_query=labels.repeat_interleave(q).expand(tasks, -1).contiguous(),
            classes=classes,
            n_way=n,
            k_shot=k,
            n_query=q,
        )

    def __iter__(self):
        while True:
            yield self.sample()


def check_rotations(rotations) -> None:
    """Rotations that make new classes must be distinct multiples of 90 degrees (at least one, e.g. ``(0,)``)."""
    if (not isinstance(rotations, (tuple, list)) or not rotations or any(int(r) != r or r % 90 for r in rotations)
            or len(set(r % 360 for r in rotations)) != len(rotations)):
        raise ValueError(f"rotations must be distinct multiples of 90 degrees, got {rotations!r}")


def _rotate(x: torch.Tensor, quarter: torch.Tensor) -> torch.Tensor:
    """Rotate the images of each (task, class) by ``quarter`` x 90 degrees."""
    out = x.clone()
    for turns in range(1, 4):
        mask = quarter == turns
        if mask.any():
            out[mask] = torch.rot90(x[mask], turns, dims=(-2, -1))
    return out
