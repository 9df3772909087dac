"""A small CNN classifier whose parameters are one flat vector per task: the meta-learner LSTM's learner.

Ravi & Larochelle's meta-learner updates every coordinate of the learner's parameters theta
as a row of one batch, so theta is stored flat, ``[P]`` (``[tasks, P]`` for a meta-batch, each
task its own learner), and the network is written as explicit functional layers around it:
``blocks`` x [3x3 conv, batch norm, ReLU, 2x2 max-pool], then a linear head. The tasks of a
batch run together through :func:`metaedu.nn.functional.grouped_conv_blocks`, the same
grouped convolutions as Conv4 with per-task weights. The fine-tune and nearest-neighbour
baselines (:mod:`metaedu.algorithms.baselines`) use the same learner, so that lecture 02
compares learning rules, not architectures.

Batch norm never uses statistics collected across episodes: ``logits(theta, x, n_stats)``
normalises with the statistics of the first ``n_stats`` images of each task (pass the support
set first to classify the queries with the support set's statistics, no transduction).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from metaedu.nn.functional import grouped_conv_blocks


class ConvLearner:
    """The learner M(x; theta), written as explicit functional layers.

    ``blocks`` x [3x3 conv (``filters``), batch norm, ReLU, 2x2 max-pool], then a linear
    layer to ``n_way`` scores. theta is a flat vector ``[P]`` (``[tasks, P]`` for a
    meta-batch; each task has its own learner), laid out in the order of an
    ``nn.Sequential`` of the same layers: conv weight, conv bias, bn weight, bn bias per
    block, then the head's weight and bias. The tasks of a batch run together as one
    grouped convolution.
    """

    def __init__(
        self, n_way: int, filters: int = 16, blocks: int = 4, in_channels: int = 1, image_size: int = 28
    ) -> None:
        for name, value in (("n_way", n_way), ("filters", filters), ("blocks", blocks), ("in_channels", in_channels)):
            if int(value) != value or value < 1:
                raise ValueError(f"ConvLearner: {name} must be a positive integer, got {value!r}")
        side = image_size
        for _ in range(blocks):
            side //= 2
        if side < 1:
            raise ValueError(
                f"ConvLearner: {blocks} blocks halve a {image_size}-pixel image to nothing; use fewer blocks"
            )
        self.n_way, self.filters, self.blocks = n_way, filters, blocks
        self.in_channels, self.image_size = in_channels, image_size
        self.feature_dim = filters * side * side
        self.shapes: dict[str, tuple[int, ...]] = {}
        c_in = in_channels
        for b in range(1, blocks + 1):
            self.shapes[f"conv{b}.weight"] = (filters, c_in, 3, 3)
            self.shapes[f"conv{b}.bias"] = (filters,)
            self.shapes[f"bn{b}.weight"] = (filters,)
            self.shapes[f"bn{b}.bias"] = (filters,)
            c_in = filters
        self.shapes["head.weight"] = (n_way, self.feature_dim)
        self.shapes["head.bias"] = (n_way,)
        self.offsets: dict[str, slice] = {}
        start = 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            self.offsets[name] = slice(start, start + size)
            start += size
        self.n_params = start

    def layers(self) -> dict[str, slice]:
        """Coordinate ranges of each layer of the learner (for per-layer gate plots)."""
        out = {}
        for b in range(1, self.blocks + 1):
            out[f"block {b}"] = slice(self.offsets[f"conv{b}.weight"].start, self.offsets[f"bn{b}.bias"].stop)
        out["output"] = slice(self.offsets["head.weight"].start, self.n_params)
        return out

    def init(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh theta ``[P]``: He-normal convs, unit/zero batch norm, small head, zero biases."""
        parts = []
        for name, shape in self.shapes.items():
            if name.startswith("conv") and name.endswith("weight"):
                fan_in = shape[1] * 9
                parts.append(torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in))
            elif name == "head.weight":
                parts.append(torch.randn(shape, generator=generator) / math.sqrt(shape[1]))
            elif name.startswith("bn") and name.endswith("weight"):
                parts.append(torch.ones(shape))
            else:
                parts.append(torch.zeros(shape))
        return torch.cat([p.flatten() for p in parts])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[tasks, P]`` -> ``{name: [tasks, *shape]}`` (views, no copies)."""
        if theta.dim() != 2 or theta.shape[1] != self.n_params:
            raise ValueError(f"theta must be [tasks, {self.n_params}], got shape {tuple(theta.shape)}")
        return {name: theta[:, sl].reshape(theta.shape[0], *self.shapes[name]) for name, sl in self.offsets.items()}

    def logits(self, theta: torch.Tensor, x: torch.Tensor, n_stats: int | None = None) -> torch.Tensor:
        """Class scores of each task's learner on its own images.

        Args:
            theta: ``[tasks, P]``.
            x: ``[tasks, n, C, H, W]``.
            n_stats: batch norm statistics come from the first ``n_stats`` images of each
                task (``None``: all of them). Pass ``n_support`` with ``x = [support; query]``
                to normalise D_test with D_train's statistics.
        Returns: ``[tasks, n, n_way]``.
        """
        z = self.features(theta, x, n_stats)  # [tasks, n, feature_dim]
        p = self.unflatten(theta)
        return torch.einsum("tnd,tcd->tnc", z, p["head.weight"]) + p["head.bias"][:, None, :]

    def features(self, theta: torch.Tensor, x: torch.Tensor, n_stats: int | None = None) -> torch.Tensor:
        """The conv blocks alone (the head's part of theta is ignored): ``[tasks, n, feature_dim]``."""
        if x.dim() != 5 or x.shape[0] != theta.shape[0]:
            raise ValueError(f"x must be [tasks={theta.shape[0]}, n, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[2] != self.in_channels or x.shape[3] != self.image_size or x.shape[4] != self.image_size:
            raise ValueError(
                f"the learner expects {self.in_channels}x{self.image_size}x{self.image_size} images, got {tuple(x.shape[2:])}"
            )
        p = self.unflatten(theta)
        blocks = [
            (p[f"conv{b}.weight"], p[f"conv{b}.bias"], p[f"bn{b}.weight"], p[f"bn{b}.bias"])
            for b in range(1, self.blocks + 1)
        ]
        # channels-last memory order on every device: about twice as fast for these narrow convolutions on CPU
        return grouped_conv_blocks(x, blocks, n_stats=n_stats, channels_last=True)  # [tasks, n, feature_dim]

    def task_losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of each task's learner on its images: ``[tasks]``."""
        logits = self.logits(theta, x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)
