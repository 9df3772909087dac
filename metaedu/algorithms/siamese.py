"""Siamese networks for one-shot image recognition (Koch, Zemel & Salakhutdinov 2015).

The paper, in order:

1. Twin networks with shared weights embed both images of a pair: h_1 = f(x_1), h_2 = f(x_2)
   (one :class:`~metaedu.nn.backbones.Conv4`, applied to both).
2. The pair's probability of showing the same character is a sigmoid of a weighted L1
   distance, p = sigma(sum_j alpha_j |h_1j - h_2j| + b)       (:meth:`SiameseNet.pair_logits`).
   The weights alpha_j are learned (and may come out negative: a large difference in a
   feature is evidence against "same").
3. Verification training on same / different pairs, y = 1 for the same character,
   with the regularised cross-entropy of the slides,
   L = -[y log p + (1 - y) log(1 - p)] + lambda |w|^2         (:func:`verification_loss`).
   (The slides write the log-likelihood to maximise; we minimise its negative.)
   A training batch takes two drawings of each of B characters and scores all B x B
   pairs across the two halves (:func:`all_pairs_batch`): B same pairs and B(B - 1)
   different ones for the price of 2B embeddings; the two kinds get equal weight.
4. One-shot classification: a query gets the class of the support example it is most
   similar to, argmax_i p(x_hat, x_i). With K shots, a class scores its best shot
                                                               (:meth:`SiameseNet.logits`).

The network never sees an N-way episode in training; only the test turns verification
into classification. Symbols -> names: alpha, b = ``SiameseNet.weighting``,
lambda = ``settings.l2``. Koch et al. use a larger CNN, SGD with momentum and affine
distortions; we use Conv4 and Adam to compare the three methods on one backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from metaedu.checkpoints import resolve
from metaedu.data.base import ClassImageSet
from metaedu.algorithms.metric import MetricModel, evaluate, predict  # noqa: F401 (the API)
from metaedu.evaluation import Score, mean_ci
from metaedu.nn.backbones import Conv4
from metaedu.nn.distances import one_hot_labels
from metaedu.runtime import check_settings, evaluation_mode, seeded
from metaedu.tasks.episodes import EpisodeSampler, check_rotations
from metaedu.training import History, train


@dataclass
class SiameseSettings:
    """Hyper-parameters of a convolutional Siamese network."""

    hidden: int = 64  # Conv4 filters per block = embedding size
    pair_classes: int = 64  # classes per training batch: each gives one same and one different pair
    steps: int = 20000  # training batches
    lr: float = 1e-3  # Adam learning rate
    l2: float = 1e-4  # lambda: weight of the squared-weight penalty in the loss
    rotations: tuple[int, ...] = (0, 90, 180, 270)  # rotated characters as new training classes
    eval_episodes: int = 1000  # test episodes per reported accuracy
    eval_query: int = 5  # query examples per class in test episodes
    eval_pairs: int = 2000  # test pairs for verification accuracy
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "SiameseSettings":
        """A laptop CPU: narrow Conv4, a short run."""
        return cls(hidden=32, pair_classes=64, steps=60, lr=3e-3, rotations=(0,), eval_episodes=300, eval_pairs=1000)

    @classmethod
    def full(cls) -> "SiameseSettings":
        """Many verification pairs on a GPU (Koch et al. train on 30k-150k pairs; this sees 2.5M)."""
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("hidden", "steps", "lr", "eval_episodes", "eval_query", "eval_pairs"),
                       non_negative=("l2",))
        if self.pair_classes < 2:
            raise ValueError(f"SiameseSettings.pair_classes must be at least 2 (a different pair needs two classes), "
                             f"got {self.pair_classes!r}")
        check_rotations(self.rotations)


class SiameseNet(MetricModel):
    """Twin Conv4 encoders (one set of weights) and a weighted-L1 logistic similarity."""

    def __init__(self, settings: SiameseSettings, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.settings = settings
        self.encoder = Conv4(in_channels, settings.hidden, image_size=image_size)
        self.weighting = nn.Linear(self.encoder.out_dim, 1)  # alpha_j and b
        # start from "a larger difference means less alike" (alpha_j < 0), which learning then refines;
        # from random signs, short runs spend most of their steps finding this out
        nn.init.constant_(self.weighting.weight, -1.0 / self.encoder.out_dim)
        nn.init.constant_(self.weighting.bias, 1.0)

    # embed and forward (support and query through the CNN in one call) come from MetricModel

    def pair_logits(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """sum_j alpha_j |a_j - b_j| + b for every pair: ``[tasks, n, D]``, ``[tasks, m, D]`` -> ``[tasks, n, m]``."""
        diff = (z_a[:, :, None, :] - z_b[:, None, :, :]).abs()  # [tasks, n, m, D]
        return self.weighting(diff).squeeze(-1)

    def logits(self, z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor, n_way: int) -> torch.Tensor:
        """Class scores ``[tasks, n_query, n_way]``: the best similarity logit among each class's shots."""
        sim = self.pair_logits(z_query, z_support)  # [tasks, n_query, n_support]
        member = one_hot_labels(y_support, n_way).transpose(1, 2).bool()  # [tasks, n_way, n_support]
        masked = sim[:, :, None, :].masked_fill(~member[:, None], float("-inf"))  # [tasks, n_query, n_way, n_support]
        return masked.amax(-1)


# ----------------------------------------------------------------------------- verification pairs


def pairs_from_episode(eps) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same and different pairs from a 1-shot, 1-query episode batch of B classes.

    Same: (support of class k, query of class k). Different: (support of class k, query of
    class k + 1 mod B). Returns ``x_1``, ``x_2`` ``[tasks, 2B, C, H, W]`` and ``y`` ``[tasks, 2B]``
    (1 = same character), half of each.
    """
    if eps.k_shot != 1 or eps.n_query != 1 or eps.n_way < 2:
        raise ValueError("verification pairs need episodes with n_way >= 2, k_shot = 1 and n_query = 1")
    first = eps.x_support  # [tasks, B, C, H, W]
    other = eps.x_query.roll(-1, dims=1)  # query of the next class
    x_1 = torch.cat([first, first], 1)
    x_2 = torch.cat([eps.x_query, other], 1)
    tasks, b = first.shape[:2]
    y = torch.cat([torch.ones(tasks, b), torch.zeros(tasks, b)], 1).to(first.device)
    return x_1, x_2, y


def pair_probability_logits(model: SiameseNet, x_1: torch.Tensor, x_2: torch.Tensor) -> torch.Tensor:
    """Logit of p(same) for matched pairs ``x_1[t, i]``, ``x_2[t, i]``: ``[tasks, n]``."""
    n = x_1.shape[1]
    z = model.embed(torch.cat([x_1, x_2], 1))  # both twins in one CNN call: [tasks, 2n, D]
    return model.weighting((z[:, :n] - z[:, n:]).abs()).squeeze(-1)


def all_pairs_batch(model: SiameseNet, eps) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of all B x B pairs (support of class i, query of class j) of a 1-shot, 1-query episode batch.

    Returns ``logit``, ``y`` (1 on the diagonal: same character) and ``weight`` (same and different
    pairs each summing to one half per task), all ``[tasks, B, B]``.
    """
    if eps.k_shot != 1 or eps.n_query != 1 or eps.n_way < 2:
        raise ValueError("all-pairs batches need episodes with n_way >= 2, k_shot = 1 and n_query = 1")
    b = eps.n_way
    z = model.embed(torch.cat([eps.x_support, eps.x_query], 1))  # [tasks, 2B, D]
    logit = model.pair_logits(z[:, :b], z[:, b:])  # [tasks, B, B]
    eye = torch.eye(b, device=logit.device).expand_as(logit)
    weight = eye / (2 * b) + (1 - eye) / (2 * b * (b - 1))
    return logit, eye, weight


def verification_loss(model: SiameseNet, logit: torch.Tensor, y: torch.Tensor,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """-[y log p + (1 - y) log(1 - p)] averaged over pairs (or weighted, weights summing to 1 per task),
    plus lambda * sum of squared weights of the network."""
    if weight is None:
        bce = nn.functional.binary_cross_entropy_with_logits(logit, y)
    else:
        per_pair = nn.functional.binary_cross_entropy_with_logits(logit, y, reduction="none")
        bce = (per_pair * weight).sum() / logit.shape[0]
    penalty = sum(p.pow(2).sum() for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1)
    return bce + model.settings.l2 * penalty


# ----------------------------------------------------------------------------- training and testing


def train_siamese(
    settings: SiameseSettings,
    data: ClassImageSet,
    device: str | torch.device = "cpu",
    seed: int = 0,
    checkpoint: str | Path | bool | None = None,
    progress: bool = True,
) -> tuple[SiameseNet, History]:
    """Verification training on same / different pairs of ``data``; returns the model and its history.

    ``checkpoint``: see :func:`metaedu.checkpoints.resolve` (``None``: as ``settings.checkpoint`` says).
    """
    device = torch.device(device)
    checkpoint = resolve(checkpoint, "siamese", settings, data, seed)
    with seeded(seed):  # the initial weights depend on the seed only
        model = SiameseNet(settings, data.image_shape[0], data.image_shape[-1])
    model = model.to(device)
    sampler = EpisodeSampler(data, settings.pair_classes, 1, 1, rotations=settings.rotations, device=device, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    model.train()

    def step(i: int) -> dict:
        logit, y, weight = all_pairs_batch(model, sampler.sample(1))  # [1, B, B] each
        loss = verification_loss(model, logit, y, weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        right = ((logit > 0).float() == y).float()
        return {"loss": loss.detach(), "verification": (right * weight).sum() / weight.sum()}

    history = train(step, settings.steps, state={"model": model, "opt": opt, "sampler": sampler.generator},
                    checkpoint=checkpoint, progress=progress, desc="Siamese")
    return model, history


@torch.no_grad()
def verification_scores(model: SiameseNet, data: ClassImageSet, n_pairs: int | None = None,
                        device: str | torch.device = "cpu", seed: int = 0, batch_classes: int = 50):
    """p(same) and the truth for ``n_pairs`` fresh pairs of ``data`` (half same, half different).

    Returns ``(p, y)``, both ``[n_pairs]`` on the CPU (for accuracy and an ROC curve).
    """
    n_pairs = n_pairs or model.settings.eval_pairs
    batch_classes = min(batch_classes, data.n_classes)
    sampler = EpisodeSampler(data, batch_classes, 1, 1, device=device, seed=seed)
    ps, ys = [], []
    with evaluation_mode(model):
        while sum(len(y) for y in ys) < n_pairs:
            x_1, x_2, y = pairs_from_episode(sampler.sample(1))
            ps.append(torch.sigmoid(pair_probability_logits(model, x_1, x_2)).flatten().cpu())
            ys.append(y.flatten().cpu())
    return torch.cat(ps)[:n_pairs], torch.cat(ys)[:n_pairs]


def verification_accuracy(model: SiameseNet, data: ClassImageSet, n_pairs: int | None = None,
                          device: str | torch.device = "cpu", seed: int = 0) -> Score:
    """Share (%) of test pairs judged right at p = 0.5, with its 95% interval over pairs."""
    p, y = verification_scores(model, data, n_pairs, device, seed)
    return accuracy_of_scores(p, y)


def accuracy_of_scores(p: torch.Tensor, y: torch.Tensor) -> Score:
    """Share (%) of pairs with p(same) on the right side of 0.5, with its 95% interval over pairs."""
    return mean_ci(((p > 0.5).float() == y).float() * 100)


# evaluate(model, data, n_way, k_shot, ...) (N-way K-shot accuracy) and predict(model, episodes) (class scores
# in evaluation mode) are the metric-learning trio's shared ones (metaedu.algorithms.metric), imported above.
