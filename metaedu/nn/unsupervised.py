"""Embeddings learned without labels: the first step of CACTUs (Hsu, Levine & Finn 2019).

CACTUs needs an embedding in which images of one character land near each other, learned from
unlabelled images. Two small learners, both built on :class:`~metaedu.nn.backbones.Conv4`:

* **Contrastive** (:class:`ContrastiveEncoder`, :func:`nt_xent`): two random augmentations of
  each image of a batch (:func:`augment`) must pick each other out among the 2B - 1 other views,
  a softmax over cosine similarities divided by a temperature tau,

      l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau),

  averaged over both directions of every positive pair.
* **Autoencoder** (:class:`ConvAutoencoder`): Conv4 down to a code, transposed convolutions back
  to the image, trained on the pixel-wise binary cross-entropy of the reconstruction.

:func:`embed_images` maps a whole image set to its ``[N, D]`` embedding in batches.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from metaedu.nn.backbones import Conv4


def augment(x: torch.Tensor, generator: torch.Generator, shift: float = 0.12, rotate: float = 12.0,
            scale: float = 0.12) -> torch.Tensor:
    """A random affine view of each image: shift (fraction of the width), rotation (degrees), zoom.

    ``x`` ``[B, C, H, W]`` -> ``[B, C, H, W]``; the parameters are drawn from ``generator`` (never
    the global RNG); all three at 0 give the images back unchanged.
    """
    b = x.shape[0]

    def uniform(width: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * 2 - 1) * width

    angle = uniform(rotate) * math.pi / 180
    zoom = 1 + uniform(scale)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, uniform(2 * shift)], 1),
                         torch.stack([sin, cos, uniform(2 * shift)], 1)], 1)  # [B, 2, 3]
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """The contrastive loss of two views ``[B, D]`` of the same B images (row i of each is a positive pair)."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"two views of the same batch must be [B, D] alike, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2B, D]
    sim = z @ z.T / temperature  # [2B, 2B] cosine similarities / tau
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))  # k != i
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)  # the other view of each row
    return F.cross_entropy(sim, partner)


class ContrastiveEncoder(nn.Module):
    """Conv4 (the embedding used for clustering) and a small projection head (used by the loss only)."""

    def __init__(self, hidden: int = 32, projection: int = 64, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.encoder = Conv4(in_channels, hidden, image_size=image_size)
        width = self.encoder.out_dim
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, projection))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def loss(self, x: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
        return nt_xent(self(augment(x, generator)), self(augment(x, generator)), temperature)


class ConvAutoencoder(nn.Module):
    """Conv4 down to a ``code``-dimensional vector and transposed convolutions back to 28 x 28."""

    def __init__(self, hidden: int = 32, code: int = 64, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        if image_size != 28:
            raise ValueError(f"the autoencoder's decoder is built for 28 x 28 images, got {image_size}")
        conv = Conv4(in_channels, hidden, image_size=image_size)
        self.encoder = nn.Sequential(conv, nn.Linear(conv.out_dim, code))
        self.decoder = nn.Sequential(
            nn.Linear(code, hidden * 7 * 7), nn.ReLU(), nn.Unflatten(1, (hidden, 7, 7)),
            nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1), nn.ReLU(),  # 14 x 14
            nn.ConvTranspose2d(hidden, in_channels, 4, stride=2, padding=1),  # 28 x 28 logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits ``[B, C, 28, 28]``."""
        return self.decoder(self.encoder(x))

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None, temperature: float | None = None) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(x), x)


@torch.no_grad()
def embed_images(encoder: nn.Module, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """``encoder`` over float images ``[N, C, H, W]`` in evaluation mode, in batches: ``[N, D]``."""
    was_training = encoder.training
    encoder.eval()
    try:
        return torch.cat([encoder(images[i:i + batch]) for i in range(0, len(images), batch)])
    finally:
        encoder.train(was_training)
