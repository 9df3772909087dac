"""The three experiments of Yin et al. (2020) on our data: settings, models, training and scores.

* **Pose** (:class:`MemorizationPoseSettings`): glyph pose regression, the paper's table 1 (MSE on new
  characters): MAML, MR-MAML (W), CNP, MR-CNP (W), fine-tuning (FT), FT + weight decay.
* **NME classification** (:class:`MemorizationClassificationSettings`): 20-way 1- and 5-shot glyph episodes
  with one fixed label per class, the paper's table 2: MAML and MR-MAML (W).
* **One-hot sinusoids** (:class:`MemorizationSinusoidSettings`): the paper's table 3, 5- and 10-shot MSE: MAML,
  MR-MAML (A), MR-MAML (W), CNP, MR-CNP (A), MR-CNP (W).

Every model is an :class:`~metaedu.algorithms.memorization.Encoder` (an MLP on the input, on
average-pooled images for glyphs) in front of a task learner: MAML's adapted head (an MLP, the
package's MAML core) or a CNP. A method is a choice of ``method``, ``regularizer``, ``beta``,
``weight_decay`` and ``inner_steps`` in the same settings (:func:`variant`). Training goes through
the package's one loop (:func:`metaedu.training.train`, checkpointed under ``cache_dir()``), and
scores are per task or per episode so that two methods can be compared pairwise.

**Supports replaced** (:func:`support_ablation`): the same trained model is scored with its
task's own support set, with the support set of another task of the same split ("shuffled":
real data that says nothing about this task), and with no support set (MAML: no inner step;
CNP: an empty context). A model that ignores its support set scores the same in all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from metaedu.algorithms.cnp import CNP
from metaedu.algorithms.maml import MAML
from metaedu.algorithms.memorization import REGULARIZERS, Encoder, MetaRegularized
from metaedu.checkpoints import resolve
from metaedu.nn.backbones import MLP
from metaedu.runtime import check_settings, seeded
from metaedu.training import History, train

METHODS = ("maml", "cnp")


@dataclass
class _Common:
    method: str = "maml"  # task learner: "maml" (adapted head) or "cnp"
    regularizer: str = "none"  # "none", "activations" (MR-*(A)) or "weights" (MR-*(W))
    beta: float = 0.0  # weight of the KL term
    weight_decay: float = 0.0  # L2 penalty on the encoder (the weight-decay baseline)
    init_log_var: float = -3.0  # initial log sigma^2 of the Gaussian encoder weights
    encoder_hidden: tuple[int, ...] = (256, 128)  # hidden sizes of the encoder MLP
    z_dim: int = 32  # size of z, the encoder's output
    head_hidden: tuple[int, ...] = (32,)  # hidden sizes of MAML's adapted head
    r_dim: int = 64  # CNP: size of the task representation r
    cnp_hidden: tuple[int, ...] = (64, 64)  # CNP: hidden sizes of h and g
    cnp_learn_std: bool = True  # CNP: predict sigma (True) or fix it at 1, a squared-error loss (False)
    inner_lr: float = 0.01  # MAML: alpha
    inner_steps: int = 2  # MAML: inner steps while meta-training (0: joint training, the fine-tuning baseline)
    test_inner_steps: int = 5  # MAML: inner steps at test time
    meta_batch: int = 10  # tasks per meta-update
    steps: int = 6000  # meta-updates
    cnp_steps: int | None = None  # meta-updates of a CNP (None: ``steps``); CNPs learn to read their context slowly
    outer_lr: float = 2e-3  # Adam's step size
    seed: int = 0  # initialisation and task-sampling seed
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    def __post_init__(self) -> None:
        check_settings(self, positive=("z_dim", "r_dim", "meta_batch", "steps", "inner_lr", "outer_lr", "cnp_steps"),
                       non_negative=("beta", "weight_decay", "inner_steps", "test_inner_steps"),
                       choices={"method": METHODS, "regularizer": REGULARIZERS})
        if self.beta > 0 and self.regularizer == "none":
            raise ValueError(f"{type(self).__name__}.beta > 0 needs regularizer='activations' or 'weights'")

    @property
    def train_steps(self) -> int:
        """Meta-updates for this method: ``cnp_steps`` for a CNP when set, ``steps`` otherwise."""
        return self.cnp_steps if (self.method == "cnp" and self.cnp_steps is not None) else self.steps

    def name(self) -> str:
        """The method's name as the paper writes it (e.g. "MR-MAML (W)", "FT + weight decay")."""
        base = "MAML" if self.method == "maml" else "CNP"
        if self.method == "maml" and self.inner_steps == 0:
            base = "FT"
        if self.regularizer != "none":
            base = f"MR-{base} ({'A' if self.regularizer == 'activations' else 'W'})"
        return base + (" + weight decay" if self.weight_decay else "")


@dataclass
class MemorizationPoseSettings(_Common):
    """Glyph pose regression (:class:`~metaedu.tasks.nonexclusive.GlyphPoseTasks`), the paper's pose table."""

    k_shot: int = 15  # support rotations per task (the paper: 15)
    n_query: int = 15  # query rotations per task (the paper: 15)
    train_characters: int = 30  # meta-training characters (the paper: about 50 objects)
    drawings: int = 1  # drawings per character (1: one fixed shape, like the paper's one CAD model per object)
    angle_range: float = 360.0  # relative turns are drawn from [0, angle_range) degrees
    pool: int = 2  # images are average-pooled by this factor before the encoder (28 -> 14)
    r_dim: int = 128  # CNP: size of r
    cnp_hidden: tuple[int, ...] = (128, 128)  # CNP: hidden sizes of h and g
    cnp_learn_std: bool = False  # the paper's pose CNPs are trained with a squared error
    eval_tasks: int = 300  # test tasks behind each reported MSE

    @classmethod
    def quick(cls) -> "MemorizationPoseSettings":
        return cls(steps=3000)

    @classmethod
    def full(cls) -> "MemorizationPoseSettings":
        return cls(train_characters=50, steps=30000, cnp_steps=100000, inner_steps=5, test_inner_steps=20,
                   eval_tasks=600, checkpoint=True)


@dataclass
class MemorizationClassificationSettings(_Common):
    """Non-mutually-exclusive glyph classification (one fixed label per class), the paper's NME Omniglot table."""

    n_way: int = 20  # classes per episode
    k_shot: int = 1  # support images per class while meta-training
    n_query: int = 5  # query images per class
    train_classes: int | None = 100  # meta-training classes (None: every background class not held out)
    pool: int = 2  # images are average-pooled by this factor before the encoder
    z_dim: int = 64  # size of z
    head_hidden: tuple[int, ...] = ()  # a linear 20-way head
    inner_lr: float = 0.1  # alpha (the paper's 20-way value)
    inner_steps: int = 1
    test_inner_steps: int = 5
    meta_batch: int = 8
    eval_episodes: int = 300  # test episodes behind each reported accuracy

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method != "maml":
            raise ValueError("MemorizationClassificationSettings.method: the classification experiment compares MAML variants only (method='maml')")

    @classmethod
    def quick(cls) -> "MemorizationClassificationSettings":
        return cls(steps=2000)

    @classmethod
    def full(cls) -> "MemorizationClassificationSettings":
        return cls(n_query=15, train_classes=None, inner_steps=5, meta_batch=16, steps=30000, eval_episodes=600,
                   checkpoint=True)


@dataclass
class MemorizationSinusoidSettings(_Common):
    """Sinusoids with a one-hot code of the amplitude in the input, the paper's sinusoid table."""

    k_shot: int = 5  # support points per task (the paper: 5 and 10)
    n_query: int = 10  # query points per task
    n_amplitudes: int = 20  # the 20 training amplitudes
    encoder_hidden: tuple[int, ...] = (100,)  # hidden sizes of the encoder MLP
    z_dim: int = 32
    head_hidden: tuple[int, ...] = (100,)  # MAML's adapted head
    inner_lr: float = 0.01
    inner_steps: int = 1
    test_inner_steps: int = 5
    meta_batch: int = 25
    steps: int = 1000
    outer_lr: float = 3e-3
    eval_tasks: int = 500

    @classmethod
    def quick(cls) -> "MemorizationSinusoidSettings":
        return cls()

    @classmethod
    def full(cls) -> "MemorizationSinusoidSettings":
        return cls(steps=50000, outer_lr=1e-3, eval_tasks=1000, checkpoint=True)


def variant(settings, **changes):
    """A copy of ``settings`` with some fields changed (validated again), e.g. ``variant(s, regularizer="weights")``."""
    return replace(settings, **changes)


# ----------------------------------------------------------------------------- building models


def _encoder_net(in_dim: int, settings, pool: int = 1) -> nn.Module:
    layers: list[nn.Module] = [nn.AvgPool2d(pool)] if pool > 1 else []
    layers += [nn.Flatten(), MLP((in_dim, *settings.encoder_hidden, settings.z_dim))]
    return nn.Sequential(*layers)


def build(settings, in_dim: int, y_dim: int = 1, n_classes: int | None = None, device="cpu") -> MetaRegularized:
    """The model a settings object describes: encoder (with its regularizer) + MAML head or CNP.

    ``in_dim`` is the size of the flattened (pooled) input; ``n_classes`` makes MAML's head a
    classifier (cross-entropy) instead of a regressor.
    """
    with seeded(settings.seed):  # the initialisation; sampling has its own generators
        pool = getattr(settings, "pool", 1)
        z = settings.z_dim
        encoder = Encoder(_encoder_net(in_dim, settings, pool), z, settings.regularizer, z_dim=z,
                          init_log_var=settings.init_log_var)
        if settings.method == "maml":
            out = n_classes or y_dim
            head = MLP((encoder.z_dim, *settings.head_hidden, out))
            learner = MAML(head, "cross_entropy" if n_classes else "mse", settings.inner_lr)
        else:
            learner = CNP(encoder.z_dim, y_dim, settings.r_dim, settings.cnp_hidden, learn_std=settings.cnp_learn_std)
        model = MetaRegularized(encoder, learner, settings.beta, settings.inner_steps, settings.test_inner_steps,
                                settings.weight_decay)
    return model.to(device)


def meta_train(model: MetaRegularized, sampler, settings, checkpoint=None, progress: bool = True,
               desc: str | None = None, device="cpu") -> History:
    """Meta-train with Adam on meta-batches from ``sampler``; logs the data loss and the KL.

    ``checkpoint``: see :func:`metaedu.checkpoints.resolve` (``None``: as ``settings.checkpoint`` says).
    """
    checkpoint = resolve(checkpoint, "memorization", settings, model, getattr(sampler, "data", None),
                         sampler.generator)
    opt = torch.optim.Adam(model.parameters(), lr=settings.outer_lr)
    generator = torch.Generator(device=device).manual_seed(settings.seed + 1)  # the reparameterisation noise

    def step(i: int) -> dict:
        tasks = sampler.sample(settings.meta_batch)
        total, parts = model.loss(tasks, generator)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return {"loss": parts["loss"], "kl": parts["kl"]}

    state = {"model": model, "opt": opt, "sampler": sampler.generator, "noise": generator}
    return train(step, settings.train_steps, state=state, checkpoint=checkpoint, progress=progress,
                 desc=desc or settings.name())


# ----------------------------------------------------------------------------- scores


def _shuffled(tasks):
    """The support sets moved one task along (task i gets task i-1's support set)."""
    return torch.roll(tasks.x_support, 1, 0), torch.roll(tasks.y_support, 1, 0)


def task_errors(model: MetaRegularized, tasks, support: str = "true") -> torch.Tensor:
    """Each task's query MSE ``[tasks]`` with its own support set, another task's, or none.

    ``support`` is ``"true"``, ``"shuffled"`` or ``"none"`` (see the module docstring).
    """
    if support == "true":
        x_s, y_s, steps = tasks.x_support, tasks.y_support, None
    elif support == "shuffled":
        (x_s, y_s), steps = _shuffled(tasks), None
    elif support == "none":
        x_s, y_s, steps = tasks.x_support[:, :0], tasks.y_support[:, :0], 0
    else:
        raise ValueError(f"support must be 'true', 'shuffled' or 'none', got {support!r}")
    if tasks.x_support.shape[0] < 2 and support == "shuffled":
        raise ValueError("a shuffled support set needs at least two tasks")
    if support == "none" and model.is_maml:
        x_s, y_s = tasks.x_support, tasks.y_support  # zero inner steps never look at them
    pred = model.predict(x_s, y_s, tasks.x_query, steps)
    return ((pred - tasks.y_query) ** 2).flatten(1).mean(1).cpu()


def support_ablation(model: MetaRegularized, tasks) -> dict[str, torch.Tensor]:
    """Per-task query MSE with the true, a shuffled and no support set, on the same tasks."""
    return {s: task_errors(model, tasks, s) for s in ("true", "shuffled", "none")}


def ignores_support(err_own: torch.Tensor, err_other: torch.Tensor, margin: float) -> bool:
    """A test for memorization: does replacing the support set raise the error by less than ``margin``?

    ``err_own[i]`` and ``err_other[i]`` are task i's errors with its own and with another (or no)
    support set. True when the whole 95% interval of the mean increase lies below ``margin``.
    """
    from metaedu.evaluation import mean_ci

    if err_own.shape != err_other.shape:
        raise ValueError(f"need the same tasks with both support sets, got {tuple(err_own.shape)} and "
                         f"{tuple(err_other.shape)}")
    diff = mean_ci(err_other - err_own, unit="mse")
    return diff.mean + diff.ci95 < margin


def tune_adaptation(model: MetaRegularized, tasks, lrs, steps) -> tuple[float, int, float]:
    """The inner step size and number of steps with the lowest query MSE on ``tasks`` (meta-validation).

    For a fairly tuned fine-tuning baseline; returns ``(lr, steps, mse)`` and leaves the model set to them.
    """
    if not model.is_maml:
        raise ValueError("only a gradient-based learner has a step size to tune")
    best = None
    for lr in lrs:
        model.learner.inner_lr = float(lr)
        for n in steps:
            pred = model.predict(tasks.x_support, tasks.y_support, tasks.x_query, n)
            mse = float(((pred - tasks.y_query) ** 2).mean())
            if best is None or mse < best[2]:
                best = (float(lr), int(n), mse)
    model.learner.inner_lr, model.test_inner_steps = best[0], best[1]
    return best


def episode_accuracies(model: MetaRegularized, episodes, support: str = "true") -> torch.Tensor:
    """Each episode's query accuracy (%) ``[episodes]`` with its own, a shuffled or no support set."""
    if support == "true":
        x_s, y_s, steps = episodes.x_support, episodes.y_support, None
    elif support == "shuffled":
        (x_s, y_s), steps = _shuffled(episodes), None
    elif support == "none":
        x_s, y_s, steps = episodes.x_support, episodes.y_support, 0
    else:
        raise ValueError(f"support must be 'true', 'shuffled' or 'none', got {support!r}")
    logits = model.predict(x_s, y_s, episodes.x_query, steps)
    return (logits.argmax(-1) == episodes.y_query).float().mean(1).cpu() * 100


# ----------------------------------------------------------------------------- data splits

#: Background characters held out for choosing beta and other settings (meta-validation).
VALIDATION_CHARACTERS = 100


def glyph_splits(glyphs, n_train: int | None, seed: int = 0) -> dict:
    """Meta-train, meta-validation and meta-test characters.

    A fixed random order of the background characters gives the first ``n_train`` for
    meta-training (all but the validation ones when ``None``) and the last
    :data:`VALIDATION_CHARACTERS` for meta-validation; meta-testing uses the evaluation
    alphabets (characters and alphabets never seen in training).
    """
    background = glyphs.split("background")
    order = torch.randperm(background.n_classes, generator=torch.Generator().manual_seed(seed + 2020))
    available = background.n_classes - VALIDATION_CHARACTERS
    n_train = available if n_train is None else int(n_train)
    if not 1 <= n_train <= available:
        raise ValueError(f"n_train must be between 1 and {available} (the background characters not held out "
                         f"for validation), got {n_train}")
    return {"train": background.subset_classes(order[:n_train], name="glyphs/meta-train"),
            "validation": background.subset_classes(order[-VALIDATION_CHARACTERS:], name="glyphs/meta-validation"),
            "test": glyphs.split("evaluation")}


def sampler(experiment: str, settings, data=None, exclusive: bool = False, test: bool = False, seed: int = 0,
            device="cpu"):
    """The task sampler of an experiment ("pose", "classification" or "sinusoid") on ``data``.

    ``exclusive`` switches to mutually exclusive tasks (a new offset per task, shuffled labels, a
    random code); ``test`` gives the sinusoids' meta-test tasks (amplitudes from the whole interval).
    """
    from metaedu.tasks.nonexclusive import GlyphPoseTasks, OneHotSinusoidTasks, glyph_classification

    if experiment == "pose":
        return GlyphPoseTasks(data, settings.k_shot, settings.n_query, settings.angle_range, exclusive,
                              settings.drawings, device=device, seed=seed)
    if experiment == "classification":
        return glyph_classification(data, settings.n_way, settings.k_shot, settings.n_query, exclusive, device, seed)
    if experiment == "sinusoid":
        return OneHotSinusoidTasks(settings.k_shot, settings.n_query, settings.n_amplitudes, test, exclusive,
                                   device=device, seed=seed)
    raise ValueError(f"experiment must be 'pose', 'classification' or 'sinusoid', got {experiment!r}")


def input_dim(experiment: str, settings) -> int:
    """Size of the encoder's flattened input: pooled 28 x 28 glyphs, or (u, one-hot code)."""
    if experiment == "sinusoid":
        return 1 + settings.n_amplitudes
    side = 28 // settings.pool
    return side * side
