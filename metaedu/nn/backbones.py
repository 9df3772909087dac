"""Backbones shared by the lectures: the four-block CNN of the few-shot papers, and an MLP.

Conv4 (Vinyals et al., Snell et al., Finn et al.): four blocks of
3x3 convolution with ``hidden`` filters, batch normalisation, ReLU and 2x2 max
pooling. A 28 x 28 glyph becomes a 64-dimensional embedding (28 -> 14 -> 7 -> 3 -> 1).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, track_running_stats: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels, track_running_stats=track_running_stats),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Four conv blocks, flattened; an optional linear head gives class scores.

    Args:
        in_channels: image channels (1 for glyphs).
        hidden: filters per block (64 in the papers).
        n_classes: size of a linear head on the embedding; ``None`` for an embedding network.
        track_running_stats: ``False`` makes batch norm always use the current batch's
            statistics (what MAML-style inner loops need: no statistics leak between tasks).
    Shapes: ``[B, C, H, W]`` -> ``[B, hidden * (H // 16) * (W // 16)]`` (or ``[B, n_classes]``).
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, n_classes: int | None = None, track_running_stats: bool = True, image_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(in_channels, hidden, track_running_stats),
            conv_block(hidden, hidden, track_running_stats),
            conv_block(hidden, hidden, track_running_stats),
            conv_block(hidden, hidden, track_running_stats),
        )
        side = image_size
        for _ in range(4):
            side //= 2
        self.out_dim = hidden * max(side, 1) ** 2
        self.head = nn.Linear(self.out_dim, n_classes) if n_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x).flatten(1)
        return self.head(z) if self.head is not None else z


class MLP(nn.Module):
    """Fully connected network, e.g. Finn's 1-40-40-1 sinusoid regressor."""

    def __init__(self, sizes: tuple[int, ...] = (1, 40, 40, 1), activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def flatten_tasks(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[tasks, n, ...]`` -> ``[tasks * n, ...]`` plus the leading shape to undo it."""
    return x.reshape(-1, *x.shape[2:]), (x.shape[0], x.shape[1])


def unflatten_tasks(z: torch.Tensor, lead: tuple[int, int]) -> torch.Tensor:
    return z.reshape(*lead, *z.shape[1:])
