"""The two baselines of Ravi & Larochelle's table: fine-tune and nearest neighbour.

Both start from the same network, pre-trained as an ordinary classifier over all
meta-training classes at once (no episodes):

* **Baseline-finetune**: take the pre-trained conv blocks, put a fresh (zero) 5-way
  head on top, and train the whole network on D_train with plain gradient descent for
  a fixed number of steps -- exactly the meta-learner's update with f_t = 1 and
  i_t = the step size, started from the pre-trained theta instead of a learned c_0. The step
  size and the number of steps are chosen on meta-validation episodes (below).
* **Baseline-nearest-neighbour**: embed D_train and D_test with the pre-trained conv
  blocks and give each D_test image the label of its nearest D_train image (cosine).

The network is the meta-learner's own learner (:class:`~metaedu.nn.conv_learner.ConvLearner`),
so the comparison is between learning rules, not architectures. Its batch norm follows
the same rule as the learner's: statistics of D_train, applied to D_test as well.

**Choosing the fine-tune step size and step count honestly.** The paper tunes its
baselines' hyper-parameters on validation data. Here :func:`validation_split` holds out
whole background alphabets as a meta-validation set (never the evaluation split, which
is only used for the final table), and :func:`tune_finetune` runs the grid
``BaselineSettings.finetune_lrs`` x ``BaselineSettings.finetune_step_grid`` on validation episodes and
picks the best cell. Pre-training and meta-training use the remaining background alphabets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from metaedu.algorithms.meta_lstm import query_logits
from metaedu.checkpoints import resolve
from metaedu.data.base import ClassImageSet, to_float
from metaedu.nn.conv_learner import ConvLearner
from metaedu.nn.distances import nearest_neighbour
from metaedu.runtime import check_settings
from metaedu.tasks.episodes import Episodes
from metaedu.training import History, train


#: The quick-mode choice of tune_finetune as (k_shot, lr, steps) rows (see BaselineSettings.finetune_chosen):
#: made by ``python scripts/choose_quick_finetune.py``, and checked against a fresh run of it by a test.
QUICK_FINETUNE = ((1, 0.03, 10), (5, 0.1, 20))


@dataclass
class BaselineSettings:
    """Pre-training and fine-tuning hyper-parameters of the baselines."""

    pretrain_steps: int = 300  # Adam steps of whole-set classification
    batch_size: int = 64  # images per pre-training step
    pretrain_lr: float = 3e-3  # Adam learning rate for pre-training
    finetune_lrs: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)  # step sizes tried by tune_finetune
    finetune_step_grid: tuple[int, ...] = (10, 20, 40, 80)  # step counts tried (one run, read at each count)
    tune_episodes: int = 50  # meta-validation episodes per grid cell
    tune_tolerance: float = 0.5  # cells within this many points of the best count as tied; the cheapest wins
    val_fraction: float = 0.15  # share of background classes held out (whole alphabets) for validation
    # (k_shot, lr, steps) that tune_finetune chose on meta-validation episodes for the quick-mode network
    # (seed 0); ``python scripts/choose_quick_finetune.py`` reruns that grid. None: run the grid at run time.
    finetune_chosen: tuple[tuple[int, float, int], ...] | None = None
    tune_query: int = 15  # D_test images per class in the meta-validation episodes of the grid
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "BaselineSettings":
        return cls(finetune_chosen=QUICK_FINETUNE)

    @classmethod
    def full(cls) -> "BaselineSettings":
        return cls(pretrain_steps=20000, batch_size=128, pretrain_lr=1e-3, finetune_lrs=(0.01, 0.03, 0.1, 0.3, 1.0),
                   finetune_step_grid=(10, 20, 50, 100), tune_episodes=200, finetune_chosen=None, checkpoint=True)

    @classmethod
    def reference(cls) -> "BaselineSettings":
        # The meta-learner reference's baselines: full()'s pre-training (cut by the reference's time budget) and a
        # step grid holding the reference's T = 12, so that the meta-learner can start as fine-tuning at T steps.
        return cls(pretrain_steps=20000, batch_size=128, pretrain_lr=1e-3, finetune_lrs=(0.01, 0.03, 0.1, 0.3, 1.0),
                   finetune_step_grid=(6, 12, 24, 48), tune_episodes=100, finetune_chosen=None)

    def __post_init__(self) -> None:
        check_settings(self, positive=("pretrain_steps", "batch_size", "pretrain_lr", "finetune_lrs",
                                       "finetune_step_grid", "tune_episodes", "tune_query"),
                       non_negative=("tune_tolerance",))
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"BaselineSettings.val_fraction must lie in (0, 1), got {self.val_fraction!r}")
        if any(int(n) != n for n in self.finetune_step_grid):
            raise ValueError(f"BaselineSettings.finetune_step_grid must hold whole step counts, "
                             f"got {self.finetune_step_grid!r}")
        for row in self.finetune_chosen or ():
            if len(row) != 3 or row[0] < 1 or not row[1] > 0 or int(row[2]) != row[2] or row[2] < 1:
                raise ValueError(f"BaselineSettings.finetune_chosen holds (k_shot, lr, steps) rows, got {row!r}")


def validation_split(data: ClassImageSet, fraction: float = 0.15, seed: int = 0) -> tuple[ClassImageSet, ClassImageSet]:
    """Hold out whole groups (alphabets) of ``data`` as a meta-validation set.

    Groups are visited in a seeded random order and moved to the validation side until it
    holds at least ``fraction`` of the classes; a group that would overshoot the target by
    more than half is skipped. Returns ``(train, validation)``, disjoint in classes and groups.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must lie in (0, 1), got {fraction}")
    names = data.group_names()
    if len(names) < 2:
        raise ValueError(f"{data.name} has {len(names)} group(s); a validation split needs at least two alphabets")
    target = fraction * data.n_classes
    sizes = {g: data.groups.count(g) for g in names}
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    held: list[str] = []
    for j in order:
        g = names[j]
        total = sum(sizes[h] for h in held)
        if total >= target:
            break
        if total + sizes[g] <= 1.5 * target and len(held) < len(names) - 1:
            held.append(g)
    if not held:
        raise ValueError(f"no alphabet of {data.name} is small enough to hold out {fraction:.0%} of its classes")
    val_classes = [c for c, g in enumerate(data.groups) if g in held]
    train_classes = [c for c, g in enumerate(data.groups) if g not in held]
    return (data.subset_classes(train_classes, name=f"{data.name} (meta-train)"),
            data.subset_classes(val_classes, name=f"{data.name} (meta-validation)"))


def pretrain(
    learner: ConvLearner, data: ClassImageSet, settings: BaselineSettings, device="cpu", seed: int = 0,
    progress: bool = True, checkpoint: str | Path | bool | None = None, max_seconds: float | None = None,
) -> tuple[torch.Tensor, History]:
    """Train the learner's conv blocks (with an ``n_classes``-way head) to classify every image of ``data``.

    ``max_seconds`` stops after the step that uses up this much wall time (``history.steps_done``).

    Returns the pre-trained theta for ``learner`` (its conv blocks, a zero ``n_way`` head), ``[P]``,
    and the training History. ``checkpoint``: see :func:`metaedu.checkpoints.resolve`.
    """
    checkpoint = resolve(checkpoint, "baselines_pretrain", settings, data, seed,
                         (learner.filters, learner.blocks, learner.in_channels, learner.image_size))
    whole = ConvLearner(data.n_classes, learner.filters, learner.blocks, learner.in_channels, learner.image_size)
    gen = torch.Generator().manual_seed(seed)
    theta = whole.init(gen).to(device).requires_grad_(True)  # [P_whole]
    opt = torch.optim.Adam([theta], lr=settings.pretrain_lr)
    images, targets = data.images.to(device), data.targets.to(device)

    def step(_i: int) -> dict:
        idx = torch.randint(len(targets), (settings.batch_size,), generator=gen).to(device)
        x = to_float(images[idx])[None]  # [1, batch, C, H, W]
        logits = whole.logits(theta[None], x)[0]  # [batch, n_classes]
        loss = F.cross_entropy(logits, targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "acc": (logits.argmax(-1) == targets[idx]).float().mean() * 100}

    history = train(step, settings.pretrain_steps, state={"theta": theta, "opt": opt, "generator": gen},
                    checkpoint=checkpoint, progress=progress, desc="pre-training",
                    max_seconds=max_seconds)
    body = theta.detach()[: whole.offsets["head.weight"].start]  # conv and batch-norm parameters
    head = torch.zeros(learner.n_params - body.numel(), device=device)
    return torch.cat([body, head]), history


def sgd(learner: ConvLearner, theta0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int,
        forget: float = 1.0) -> torch.Tensor:
    """``steps`` of plain gradient descent on each task's D_train: theta <- theta - lr * grad L.

    Args:
        theta0: ``[P]`` (the same start for every task) or ``[tasks, P]``.
        x: ``[tasks, n, C, H, W]``; y: ``[tasks, n]``.
        forget: keep this share of theta at each step, theta <- forget * theta - lr * grad L: the
            meta-learner's cell update with both gates held fixed (1.0: plain gradient descent).
    Returns: ``[tasks, P]``.
    """
    if not 0.0 < forget <= 1.0:
        raise ValueError(f"forget is a forget-gate value and must lie in (0, 1], got {forget}")
    theta = theta0.expand(x.shape[0], -1) if theta0.dim() == 1 else theta0
    for _ in range(steps):
        current = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(learner.task_losses(current, x, y).sum(), current)
        theta = current.detach() - lr * grad if forget == 1.0 else forget * current.detach() - lr * grad
    return theta


def finetune_predictor(learner: ConvLearner, theta_pre: torch.Tensor, lr: float, steps: int):
    """``predict(episodes) -> logits`` of Baseline-finetune (``steps`` of step size ``lr``), for ``episode_accuracy``."""

    def predict(episodes: Episodes) -> torch.Tensor:
        theta = sgd(learner, theta_pre, episodes.x_support, episodes.y_support, lr, steps)
        return query_logits(learner, theta, episodes)

    return predict


@dataclass
class Tuning:
    """The outcome of :func:`tune_finetune`: the chosen cell and every cell's validation accuracy."""

    lr: float  # chosen step size
    steps: int  # chosen step count
    accuracy: dict[tuple[float, int], float]  # (lr, steps) -> mean validation accuracy (%)
    k_shot: int  # the episodes it was chosen on


def tune_finetune(
    learner: ConvLearner, theta_pre: torch.Tensor, validation: ClassImageSet, settings: BaselineSettings, k_shot: int,
    device="cpu", seed: int = 0,
) -> Tuning:
    """Grid-search the fine-tune step size and step count on meta-validation episodes.

    Every step size runs once for ``max(finetune_step_grid)`` steps on the same
    ``tune_episodes`` episodes; the query accuracy is read after each count of the grid.
    Among the cells within ``tune_tolerance`` points of the best, the one with the fewest
    steps wins (then the higher accuracy). Never pass the evaluation split.
    """
    from metaedu.tasks.episodes import EpisodeSampler

    grid = sorted(set(int(n) for n in settings.finetune_step_grid))
    if not grid or grid[0] < 1 or not settings.finetune_lrs:
        raise ValueError(f"tune_finetune needs step counts >= 1 and step sizes, got {settings.finetune_step_grid}, "
                         f"{settings.finetune_lrs}")
    episodes = EpisodeSampler(validation, learner.n_way, k_shot, settings.tune_query, device=device,
                              seed=seed).sample(settings.tune_episodes)
    accuracy = {}
    for lr in settings.finetune_lrs:
        theta, done = theta_pre, 0
        for steps in grid:
            theta = sgd(learner, theta, episodes.x_support, episodes.y_support, lr, steps - done)
            done = steps
            with torch.no_grad():
                pred = query_logits(learner, theta, episodes).argmax(-1)
            accuracy[lr, steps] = float((pred == episodes.y_query).float().mean() * 100)
    top = max(accuracy.values())
    near = [cell for cell, acc in accuracy.items() if acc >= top - settings.tune_tolerance]
    best = min(near, key=lambda cell: (cell[1], -accuracy[cell], cell[0]))
    return Tuning(best[0], best[1], accuracy, k_shot)


def finetune_hyperparameters(
    learner: ConvLearner, theta_pre: torch.Tensor, validation: ClassImageSet, settings: BaselineSettings, k_shot: int,
    device="cpu", seed: int = 0,
) -> Tuning:
    """The fine-tune step size and step count for ``k_shot`` episodes.

    The choice stored in ``settings.finetune_chosen`` (made earlier by :func:`tune_finetune` on
    the same meta-validation episodes; its ``accuracy`` is then empty), or a fresh grid search.
    """
    for shots, lr, steps in settings.finetune_chosen or ():
        if shots == k_shot:
            return Tuning(lr, steps, {}, k_shot)
    return tune_finetune(learner, theta_pre, validation, settings, k_shot, device=device, seed=seed)


def nearest_neighbour_predictor(learner: ConvLearner, theta_pre: torch.Tensor):
    """``predict(episodes) -> labels`` of Baseline-nearest-neighbour (cosine similarity of embeddings)."""

    def predict(episodes: Episodes) -> torch.Tensor:
        n_s = episodes.x_support.shape[1]
        x = torch.cat([episodes.x_support, episodes.x_query], dim=1)
        theta = theta_pre.expand(episodes.tasks, -1)
        z = learner.features(theta, x, n_stats=n_s)  # [tasks, n_s + n_q, D], D_test normalised by D_train's statistics
        return nearest_neighbour(z[:, :n_s], episodes.y_support, z[:, n_s:], "cosine")  # [tasks, n_q]

    return predict
