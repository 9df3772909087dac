"""Baselines of the one-shot setting: nearest neighbour on pixels, and on features of a pretrained classifier.

Before meta-learning, the obvious ways to classify from one example are
(Lake et al. 2015; Vinyals et al. 2016, "baseline classifier"):

1. **Pixel 1-nearest-neighbour**: label a query with the label of the closest
   support image in raw pixels (Lake et al. report 21.7% on 20-way one-shot Omniglot).
2. **Pretrained features + nearest neighbour**: train an ordinary classifier on
   all background classes (no episodes), drop its last layer, and do nearest
   neighbour (cosine) in its feature space. It learns features of handwriting,
   but was never trained to compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaedu.data.base import ClassImageSet
from metaedu.nn.backbones import Conv4
from metaedu.training import History, train


def nearest_neighbour(z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Label of the nearest support item for each query.

    Shapes: ``z_support [tasks, S, D]``, ``y_support [tasks, S]``, ``z_query [tasks, Q, D]`` -> ``[tasks, Q]``.
    """
    if metric == "euclidean":
        dist = torch.cdist(z_query, z_support)  # [tasks, Q, S]
    elif metric == "cosine":
        dist = -F.normalize(z_query, dim=-1) @ F.normalize(z_support, dim=-1).transpose(1, 2)
    else:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    return torch.gather(y_support, 1, dist.argmin(-1))


def pixel_nearest_neighbour(episodes) -> torch.Tensor:
    """Pixel 1-NN predictions for a batch of episodes, ``[tasks, n_query_total]``."""
    return nearest_neighbour(episodes.x_support.flatten(2), episodes.y_support, episodes.x_query.flatten(2))


@dataclass
class TransferSettings:
    hidden: int = 64  # filters per conv block
    epochs: int = 10  # passes over the background images
    batch_size: int = 128  # images per step
    lr: float = 1e-3  # Adam step size

    @classmethod
    def quick(cls) -> "TransferSettings":
        # Chosen on meta-validation alphabets (lecture 00's split; 5- and 20-way one-shot cosine 1-NN on the
        # features) within about 15 s of one CPU core: 16 filters, 6 passes, Adam at 1e-2 (20-way 83%, batch
        # accuracy about 60%) against the earlier 32 filters, 2 passes, 1e-3 (47%, batch accuracy 5%, the
        # loss far from flat), 16 filters at 3e-3 for 4-8 passes (70-82%) and 24 filters for 4 passes (83%,
        # at 1.5 times the cost). Ten passes gain about one more point.
        return cls(hidden=16, epochs=6, batch_size=128, lr=1e-2)

    @classmethod
    def full(cls) -> "TransferSettings":
        return cls(hidden=64, epochs=30, batch_size=128)


def pretrain_classifier(
    data: ClassImageSet, settings: TransferSettings, device="cpu", seed: int = 0, progress: bool = True
) -> tuple[Conv4, History]:
    """Train Conv4 + linear head to classify all of ``data``'s classes; returns the model and its history."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Conv4(in_channels=data.image_shape[0], hidden=settings.hidden, n_classes=data.n_classes,
                  image_size=data.image_shape[-1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    images = data.float_images().to(device)
    targets = data.targets.to(device)
    steps_per_epoch = max(1, len(targets) // settings.batch_size)
    order = torch.randperm(len(targets), generator=g)

    def step(i: int) -> dict:
        nonlocal order
        j = i % steps_per_epoch
        if j == 0 and i:
            order = torch.randperm(len(targets), generator=g)
        idx = order[j * settings.batch_size : (j + 1) * settings.batch_size].to(device)
        logits = model(images[idx])
        loss = F.cross_entropy(logits, targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss, "accuracy": (logits.argmax(1) == targets[idx]).float().mean()}

    model.train()
    history = train(step, settings.epochs * steps_per_epoch, state={"model": model, "opt": opt},
                    progress=progress, desc="pretraining")
    model.eval()
    return model, history


@torch.no_grad()
def embed(model: Conv4, x: torch.Tensor) -> torch.Tensor:
    """Features (the layer before the head) of ``x [tasks, n, C, H, W]`` -> ``[tasks, n, D]``."""
    was_training = model.training
    model.eval()
    z = model.features(x.flatten(0, 1)).flatten(1)
    model.train(was_training)
    return z.view(x.shape[0], x.shape[1], -1)


def feature_nearest_neighbour(model: Conv4):
    """A predictor for :func:`metaedu.evaluation.episode_accuracy`: cosine 1-NN on pretrained features."""

    def predict(episodes) -> torch.Tensor:
        return nearest_neighbour(embed(model, episodes.x_support), episodes.y_support, embed(model, episodes.x_query), "cosine")

    return predict
