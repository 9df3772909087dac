"""Episodes with hidden labels, training and per-episode scores of the few-shot GNN."""

from __future__ import annotations

from pathlib import Path

import torch

from metaedu.algorithms.gnn.model import GNN, GNNSettings, episode_loss
from metaedu.checkpoints import resolve
from metaedu.data.base import ClassImageSet
from metaedu.data.embedded import EmbeddedSet
from metaedu.evaluation import episode_accuracies as scored_episodes
from metaedu.evaluation import features_of
from metaedu.runtime import evaluation_mode, seeded
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.training import History, train

# ----------------------------------------------------------------------------- episodes with hidden labels


def prepare(episodes, settings: GNNSettings, labelled_shots: int | None = None):
    """The support set as the GNN sees it: ``(x_support, y_shown, oracle)``.

    The first ``labelled_shots`` shots of each class (the shots are in random order) keep their
    label; the others get -1 (``settings.unlabelled == "keep"``) or are removed ("drop").
    ``oracle`` holds the true labels of the nodes kept.
    """
    shown = settings.shown() if labelled_shots is None else labelled_shots
    k = episodes.k_shot
    if not 1 <= shown <= k:
        raise ValueError(f"labelled_shots must lie in 1..{k} (the episodes' shots), got {shown}")
    shot = torch.arange(episodes.x_support.shape[1], device=episodes.y_support.device) % k  # shot index
    labelled = shot < shown
    if settings.unlabelled == "drop":
        return episodes.x_support[:, labelled], episodes.y_support[:, labelled], episodes.y_support[:, labelled]
    y_shown = torch.where(labelled, episodes.y_support, torch.full_like(episodes.y_support, -1))
    return episodes.x_support, y_shown, episodes.y_support


def episode_logits(model: GNN, episodes, labelled_shots: int | None = None, generator: torch.Generator | None = None,
                   source: ClassImageSet | None = None) -> torch.Tensor:
    """Query scores ``[tasks, n_query_total, K]`` of a batch of episodes, support labels hidden as the settings say.

    ``source``: the set the episodes were drawn from, when it is an :class:`EmbeddedSet` made by
    ``model.encoder`` (then the "images" already are phi's embeddings).
    """
    x_support, y_shown, oracle = prepare(episodes, model.settings, labelled_shots)
    s = x_support.shape[1]
    x = torch.cat([x_support, episodes.x_query], 1)
    if model.feature_dim is None and isinstance(source, EmbeddedSet):
        z = features_of(model.encoder, x, source)  # [tasks, S + Q, D]
    else:
        z = model.embed(x)  # one CNN call: [tasks, S + Q, D]
    return model.logits(z[:, :s], y_shown, z[:, s:], episodes.n_way, oracle=oracle, generator=generator)


# ----------------------------------------------------------------------------- training and testing


def build(settings: GNNSettings, data: ClassImageSet, seed: int = 0) -> GNN:
    """A GNN for ``data``: a Conv4 on images, or graph layers only on an :class:`EmbeddedSet`'s features."""
    with seeded(seed):  # the initial weights depend on the seed only
        if isinstance(data, EmbeddedSet):
            return GNN(settings, feature_dim=data.image_shape[0])
        return GNN(settings, data.image_shape[0], data.image_shape[-1])


def train_gnn(settings: GNNSettings, data: ClassImageSet, device: str | torch.device = "cpu", seed: int = 0,
              checkpoint: str | Path | bool | None = None, progress: bool = True, model: GNN | None = None,
              max_seconds: float | None = None) -> tuple[GNN, History]:
    """Meta-train on episodes of ``data`` (images, or an :class:`EmbeddedSet` for the graph layers alone).

    Each step draws ``settings.tasks`` episodes of ``n_way`` classes with ``k_shot`` support and
    ``train_query`` query images per class, hides labels as the settings say, and takes one Adam
    step on the query cross-entropy. ``checkpoint``: see :func:`metaedu.checkpoints.resolve`.
    """
    device = torch.device(device)
    checkpoint = resolve(checkpoint, "gnn", settings, data, seed, model)
    model = (model if model is not None else build(settings, data, seed)).to(device)
    if model.settings is not settings:
        model.settings = settings
    sampler = EpisodeSampler(data, settings.n_way, settings.k_shot, settings.train_query, device=device, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=settings.lr_halve_every, gamma=0.5)
    model.train()

    def step(i: int) -> dict:
        eps = sampler.sample(settings.tasks)
        out = episode_logits(model, eps, generator=sampler.generator)  # [tasks, n_way * train_query, n_way]
        loss = episode_loss(out, eps.y_query)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.detach(), "accuracy": (out.argmax(-1) == eps.y_query).float().mean() * 100}

    state = {"model": model, "opt": opt, "sched": sched, "sampler": sampler.generator}
    history = train(step, settings.steps, state=state, checkpoint=checkpoint, progress=progress, desc="GNN",
                    max_seconds=max_seconds)
    return model, history


def episode_accuracies(model: GNN, data: ClassImageSet, k_shot: int | None = None, labelled_shots: int | None = None,
                       n_query: int | None = None, n_episodes: int | None = None,
                       device: str | torch.device = "cpu", seed: int = 0) -> torch.Tensor:
    """Query accuracy (%) on each of ``n_episodes`` test episodes of ``data`` (``[n_episodes]``, for paired
    comparisons): ``n_way`` of the model, ``k_shot`` support images per class of which ``labelled_shots``
    are labelled (defaults: the settings'), scored in evaluation mode (active learning takes the arg-max).
    Two calls with the same ``seed`` and sizes see the same episodes.
    """
    s = model.settings
    sampler = EpisodeSampler(data, s.n_way, k_shot or s.k_shot, n_query or s.eval_query, device=device, seed=seed)
    with evaluation_mode(model):
        return scored_episodes(lambda eps: episode_logits(model, eps, labelled_shots, source=data), sampler,
                               n_episodes or s.eval_episodes)
