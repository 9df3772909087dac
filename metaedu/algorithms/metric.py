"""What the three metric-learning methods share: the episode's forward pass, episodic training,
scoring and prediction.

Siamese networks, Matching Networks and Prototypical Networks differ only in how they compare
embeddings (:meth:`MetricModel.logits`); each module defines that and its loss. The rest is here,
written once:

* :class:`MetricModel`: an ``encoder`` f, and ``forward(episodes)``, which embeds the support and
  query images in one CNN call and returns ``logits(z_support, y_support, z_query, n_way)``.
* :func:`train_on_episodes`: Adam on the episode loss of meta-batches of training episodes drawn
  like test episodes (Vinyals et al.'s "train as you test"), through :func:`metaedu.training.train`.
* :func:`evaluate` and :func:`predict`: accuracy with its 95% interval over test episodes, and the
  query scores of a batch of episodes, both in evaluation mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from metaedu import distributed
from metaedu.data.base import ClassImageSet
from metaedu.evaluation import Score, evaluate_metric_model
from metaedu.nn.distances import encode
from metaedu.runtime import evaluation_mode
from metaedu.tasks.episodes import EpisodeSampler, Episodes
from metaedu.training import History, train


class MetricModel(nn.Module):
    """An embedding network ``encoder`` and a rule comparing embeddings (``logits``, defined by each method).

    ``forward(episodes)`` gives the query scores ``[tasks, n_query_total, n_way]``.
    """

    encoder: nn.Module

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[tasks, n, C, H, W]`` -> ``[tasks, n, D]``."""
        return encode(self.encoder, x)

    def logits(
        self, z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Class scores ``[tasks, n_query, n_way]`` of the queries, given the embedded support set."""
        raise NotImplementedError(f"{type(self).__name__} must define logits()")

    def forward(self, episodes: Episodes) -> torch.Tensor:
        n_support = episodes.x_support.shape[1]
        # support and query through the CNN in one call: [tasks, n_support + n_query_total, D]
        z = self.embed(torch.cat([episodes.x_support, episodes.x_query], 1))
        return self.logits(z[:, :n_support], episodes.y_support, z[:, n_support:], episodes.n_way)


def train_on_episodes(
    model: MetricModel,
    settings,
    data: ClassImageSet,
    episode_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: str | torch.device = "cpu",
    seed: int = 0,
    checkpoint: Path | None = None,
    progress: bool = True,
    desc: str = "meta-training",
    lr_halve_every: int | None = None,
    max_seconds: float | None = None,
    sampler=None,
) -> History:
    """Episodic training of ``model`` on ``data``; returns the History (``loss``, ``accuracy``).

    Each step draws ``settings.tasks`` episodes of ``settings.train_way`` classes with
    ``train_shot`` support and ``train_query`` query images (``settings.rotations`` as new
    classes), takes one Adam step (``settings.lr``) on ``episode_loss(model(episodes), y_query)``,
    and, with ``lr_halve_every``, halves the learning rate every that many steps.
    ``checkpoint`` is a file already resolved by :func:`metaedu.checkpoints.resolve`.
    ``sampler`` replaces those episodes of ``data`` by any sampler with ``sample(tasks)`` and a
    ``generator`` (e.g. the constructed tasks of CACTUs); ``data`` is then unused.
    """
    device = torch.device(device)
    model.to(device)
    if sampler is None:
        sampler = EpisodeSampler(
            data,
            settings.train_way,
            settings.train_shot,
            settings.train_query,
            rotations=settings.rotations,
            device=device,
            seed=distributed.rank_seed(seed),  # under torchrun: each rank its own episodes
        )
    adam = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.StepLR(adam, step_size=lr_halve_every, gamma=0.5) if lr_halve_every else None
    distributed.broadcast_parameters(model)
    opt = distributed.synchronized(adam)  # the gradients averaged over ranks before each step
    episodes_per_rank = distributed.local_batch(settings.tasks)
    model.train()

    def step(i: int) -> dict:
        eps = sampler.sample(episodes_per_rank)
        out = model(eps)  # [tasks, n_way * n_query, n_way]
        loss = episode_loss(out, eps.y_query)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        return {"loss": loss.detach(), "accuracy": (out.argmax(-1) == eps.y_query).float().mean()}

    state = {"model": model, "opt": opt, "sampler": sampler.generator}
    if sched is not None:
        state["sched"] = sched
    return train(
        step, settings.steps, state=state, checkpoint=checkpoint, progress=progress, desc=desc, max_seconds=max_seconds
    )


def evaluate(
    model: MetricModel,
    data: ClassImageSet,
    n_way: int,
    k_shot: int,
    n_query: int | None = None,
    n_episodes: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Score:
    """Accuracy (%) and 95% interval on ``n_way``-way ``k_shot``-shot test episodes of ``data``.

    ``data`` is an image set or, much faster, ``metaedu.data.embedded.embed_set(model.encoder, data)``;
    the query count and the number of episodes default to the model's ``settings.eval_query`` and
    ``settings.eval_episodes``.
    """
    s = model.settings
    return evaluate_metric_model(
        model, data, n_way, k_shot, n_query or s.eval_query, n_episodes or s.eval_episodes, device=device, seed=seed
    )


@torch.no_grad()
def predict(model: MetricModel, episodes: Episodes) -> torch.Tensor:
    """Query scores of a batch of episodes in evaluation mode, ``[tasks, n_query_total, n_way]``."""
    with evaluation_mode(model):
        return model(episodes)
