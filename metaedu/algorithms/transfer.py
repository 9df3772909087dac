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

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from metaedu.checkpoints import resolve
from metaedu.data.base import ClassImageSet
from metaedu.nn.backbones import Conv4
from metaedu.nn.distances import nearest_neighbour
from metaedu.runtime import check_settings, evaluation_mode, seeded
from metaedu.training import History, train


def pixel_nearest_neighbour(episodes) -> torch.Tensor:
    """Pixel 1-NN predictions for a batch of episodes, ``[tasks, n_query_total]``."""
    return nearest_neighbour(episodes.x_support.flatten(2), episodes.y_support, episodes.x_query.flatten(2))


@dataclass
class TransferSettings:
    """The pretrained classifier whose features the nearest-neighbour baseline compares."""

    hidden: int = 64  # filters per conv block
    epochs: int = 10  # passes over the background images
    batch_size: int = 128  # images per step
    lr: float = 1e-3  # Adam step size
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "TransferSettings":
        # Chosen on meta-validation alphabets (lecture 00's split; 5- and 20-way one-shot cosine 1-NN on the
        # features) within about 15 s of one CPU core: 16 filters, 6 passes, Adam at 1e-2 (20-way 83%, batch
        # accuracy about 60%) against the earlier 32 filters, 2 passes, 1e-3 (47%, batch accuracy 5%, the
        # loss far from flat), 16 filters at 3e-3 for 4-8 passes (70-82%) and 24 filters for 4 passes (83%,
        # at 1.5 times the cost). Ten passes gain about one more point. (Measured on glyph data version 2; on
        # version 3 the same settings give 84.5% 20-way on meta-validation, batch accuracy 76% in the last pass.)
        return cls(hidden=16, epochs=6, batch_size=128, lr=1e-2)

    @classmethod
    def full(cls) -> "TransferSettings":
        return cls(hidden=64, epochs=30, batch_size=128, checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("hidden", "epochs", "batch_size", "lr"))


def pretrain_classifier(
    data: ClassImageSet, settings: TransferSettings, device="cpu", seed: int = 0, progress: bool = True,
    checkpoint: str | Path | bool | None = None,
) -> tuple[Conv4, History]:
    """Train Conv4 + linear head to classify all of ``data``'s classes; returns the model (in evaluation
    mode) and its history. ``checkpoint``: see :func:`metaedu.checkpoints.resolve`."""
    checkpoint = resolve(checkpoint, "transfer", settings, data, seed)
    g = torch.Generator().manual_seed(seed)
    with seeded(seed):  # the initial weights depend on the seed only
        model = Conv4(in_channels=data.image_shape[0], hidden=settings.hidden, n_classes=data.n_classes,
                      image_size=data.image_shape[-1])
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    images = data.float_images().to(device)
    targets = data.targets.to(device)
    steps_per_epoch = max(1, len(targets) // settings.batch_size)
    order = torch.randperm(len(targets), generator=g)  # this epoch's order, redrawn in place (a checkpointed tensor)

    def step(i: int) -> dict:
        j = i % steps_per_epoch
        if j == 0 and i:
            order.copy_(torch.randperm(len(targets), generator=g))
        idx = order[j * settings.batch_size : (j + 1) * settings.batch_size].to(device)
        logits = model(images[idx])
        loss = F.cross_entropy(logits, targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss, "accuracy": (logits.argmax(1) == targets[idx]).float().mean()}

    model.train()
    history = train(step, settings.epochs * steps_per_epoch, state={"model": model, "opt": opt, "order": order,
                                                                     "generator": g},
                    checkpoint=checkpoint, progress=progress, desc="pretraining")
    model.eval()
    return model, history


@torch.no_grad()
def embed(model: Conv4, x: torch.Tensor) -> torch.Tensor:
    """Features (the layer before the head, evaluation mode) of ``x [tasks, n, C, H, W]`` -> ``[tasks, n, D]``."""
    with evaluation_mode(model):
        z = model.features(x.flatten(0, 1)).flatten(1)
    return z.view(x.shape[0], x.shape[1], -1)


def feature_nearest_neighbour(model: Conv4):
    """A predictor for :func:`metaedu.evaluation.episode_accuracy`: cosine 1-NN on pretrained features."""

    def predict(episodes) -> torch.Tensor:
        return nearest_neighbour(embed(model, episodes.x_support), episodes.y_support, embed(model, episodes.x_query), "cosine")

    return predict
