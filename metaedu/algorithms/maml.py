"""MAML's experiments: the learners of the paper's two settings, meta-training, the pretrained baseline, evaluation.

The method itself (the inner loop, the meta-gradient, first-order MAML, Meta-SGD, ANIL) is
:mod:`metaedu.algorithms.maml_core`, to be read next to the paper; the settings are
:mod:`metaedu.algorithms.maml_settings`. This module re-exports both, so ``maml.MAML``,
``maml.GlyphSettings`` and ``maml.meta_train`` are the one set of names the lectures use.
"""


from __future__ import annotations

import torch
from torch import nn

from metaedu.checkpoints import resolve
from metaedu import distributed
from metaedu.evaluation import Score, mean_ci, regression_mse
from metaedu.evaluation import episode_accuracies as evaluation_accuracies
from metaedu.nn.backbones import MLP, Conv4
from metaedu.nn.functional import (
    batched_forward,
    parameter_dict,
)
from metaedu.training import History, train

from metaedu.algorithms.maml_core import (  # noqa: F401 (the method, part of this module's API)
    LOSSES,
    MAML,
    head_names,
    inner_step,
    meta_gradient_of,
    per_task_meta_loss,
    task_loss,
)
from metaedu.algorithms.maml_settings import GlyphSettings, SinusoidSettings, TwentyWayGlyphSettings  # noqa: F401


# ----------------------------------------------------------------------------- building and training


def sinusoid_learner(settings: SinusoidSettings, device="cpu") -> MAML:
    """Finn's regressor: an MLP 1-hidden-1 with ReLUs, wrapped in the settings' MAML variant."""
    model = MLP((1, *settings.hidden, 1)).to(device)
    return MAML(model, "mse", settings.inner_lr, settings.first_order, settings.meta_sgd, settings.anil,
                plan=settings.plan).to(device)


def glyph_learner(settings: GlyphSettings, in_channels: int = 1, image_size: int = 28, device="cpu") -> MAML:
    """Conv4 with an ``n_way`` head and batch statistics only, wrapped in the settings' MAML variant."""
    model = Conv4(in_channels, settings.hidden, settings.n_way, track_running_stats=False, image_size=image_size)
    return MAML(model.to(device), "cross_entropy", settings.inner_lr, settings.first_order,
                settings.meta_sgd, settings.anil, plan=settings.plan).to(device)


def meta_train(learner: MAML, sampler, settings, checkpoint=None, progress: bool = True, desc: str = "MAML",
               max_seconds: float | None = None) -> History:
    """Meta-train with Adam (eq. 3) on meta-batches from ``sampler`` (``SinusoidTasks`` or ``EpisodeSampler``).

    Logs the meta-loss (query loss after adaptation) and, for classification,
    the query accuracy after adaptation. ``checkpoint``: see :func:`metaedu.checkpoints.resolve`
    (``None``: as ``settings.checkpoint`` says).
    """
    checkpoint = resolve(checkpoint, "maml", settings, learner, getattr(sampler, "data", None), sampler.generator)
    # under torchrun each rank adapts its share of the meta-batch; the gradients are averaged (metaedu.distributed)
    distributed.broadcast_parameters(learner)
    opt = distributed.synchronized(torch.optim.Adam(learner.parameters(), lr=settings.outer_lr))
    tasks_per_rank = distributed.local_batch(settings.meta_batch)

    def step(i: int) -> dict:
        tasks = sampler.sample(tasks_per_rank)
        opt.zero_grad(set_to_none=True)
        loss, out = learner.meta_gradient(tasks, settings.inner_steps)
        opt.step()
        metrics = {"loss": loss.detach()}
        if learner.loss == "cross_entropy":
            metrics["accuracy"] = (out.argmax(-1) == tasks.y_query).float().mean().detach() * 100
        return metrics

    state = {"learner": learner, "opt": opt, "sampler": sampler.generator}
    return train(step, settings.steps, state=state, checkpoint=checkpoint, progress=progress, desc=desc,
                 max_seconds=max_seconds)


def pretrain(model: nn.Module, sampler, settings: SinusoidSettings, progress: bool = True,
             checkpoint=None) -> History:
    """The paper's "pretrained" baseline: one network fit to all tasks jointly (no inner loop).

    Every point of every sampled task is a training example; the best such
    network predicts roughly the average sinusoid, which is close to zero.
    ``checkpoint``: see :func:`metaedu.checkpoints.resolve`.
    """
    checkpoint = resolve(checkpoint, "maml_pretrain", settings, model, getattr(sampler, "data", None),
                         sampler.generator)
    opt = torch.optim.Adam(model.parameters(), lr=settings.outer_lr)

    def step(i: int) -> dict:
        tasks = sampler.sample(settings.meta_batch)
        x = torch.cat([tasks.x_support, tasks.x_query], 1)  # [tasks, k + q, 1]
        y = torch.cat([tasks.y_support, tasks.y_query], 1)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    return train(step, settings.pretrain_steps, state={"model": model, "opt": opt, "sampler": sampler.generator},
                 checkpoint=checkpoint, progress=progress, desc="pretrained baseline")


# ----------------------------------------------------------------------------- evaluation


def evaluate_regression(learner: MAML, sampler, steps: int, n_tasks: int = 600) -> Score:
    """Query MSE after ``steps`` inner steps on ``n_tasks`` new tasks, with its 95% interval."""
    return regression_mse(lambda t: learner.predict(t.x_support, t.y_support, t.x_query, steps), sampler, n_tasks)


def episode_accuracies(learner: MAML, sampler, steps: int, n_episodes: int = 600, batch: int = 50) -> torch.Tensor:
    """Query accuracy (%) after ``steps`` inner steps on each of ``n_episodes`` test episodes: ``[n_episodes]``.

    Another method scored on a sampler with the same seed sees the same episodes (a paired comparison).
    """
    return evaluation_accuracies(lambda e: learner.predict(e.x_support, e.y_support, e.x_query, steps), sampler,
                                 n_episodes, batch)


def evaluate_episodes(learner: MAML, sampler, steps: int, n_episodes: int = 600, batch: int = 50) -> Score:
    """Query accuracy (%) after ``steps`` inner steps on ``n_episodes`` test episodes, with its 95% interval."""
    return mean_ci(episode_accuracies(learner, sampler, steps, n_episodes, batch))


def task_mse_by_steps(learner: MAML, tasks, max_steps: int) -> torch.Tensor:
    """Each task's query MSE after 0, 1, ..., ``max_steps`` inner steps: ``[max_steps + 1, tasks]`` on the CPU.

    Two learners given the same ``tasks`` are scored task by task, so their difference at a
    step is a paired comparison (``metaedu.verdicts.paired``).
    """
    with torch.enable_grad():
        path = learner.adapt(tasks.x_support, tasks.y_support, max_steps, create_graph=False, keep_path=True)
    rows = []
    with torch.no_grad():
        for fast in path:
            out = batched_forward(learner.model, fast, tasks.x_query)  # [tasks, n_query, 1]
            rows.append(task_loss(out, tasks.y_query, "mse").cpu())  # [tasks]
    return torch.stack(rows)


def mse_by_steps(learner: MAML, tasks, max_steps: int) -> list[Score]:
    """Query MSE (with 95% interval over ``tasks``) after 0, 1, ..., ``max_steps`` inner steps."""
    return [mean_ci(row, unit="mse") for row in task_mse_by_steps(learner, tasks, max_steps)]


def parameter_change(learner: MAML, tasks, steps: int) -> dict[str, float]:
    """How far adaptation moves each weight tensor: mean over tasks of ||theta'_i - theta|| / ||theta||.

    Under ANIL the body's entries are zero by construction; under MAML they show
    how much of the adaptation happens in the body (Raghu et al.'s question).
    """
    theta = parameter_dict(learner.model)
    fast = learner.adapt(tasks.x_support, tasks.y_support, steps, create_graph=False)
    change = {}
    with torch.no_grad():
        for name, p in theta.items():
            diff = (fast[name] - p).flatten(1).norm(dim=1)  # [tasks]
            change[name] = float((diff / p.norm().clamp_min(1e-12)).mean())
    return change
