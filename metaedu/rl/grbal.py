"""Model-based meta-RL for online adaptation: GrBAL and ReBAL (Nagabandi, Clavera, Liu, Fearing, Abbeel,
Levine & Finn, ICLR 2019), with the two baselines of the paper, MB and MB + dynamic evaluation.

Every segment of a trajectory is a task: the last M steps say how the system behaves *now*
(a motor just failed, the terrain changed), and the model adapted to them should predict the
next K steps. Read next to the paper:

1. Meta-objective (eq. 3 / the slides)::

       min_{theta, psi}  E_{tau(t-M, t+K) ~ D} [ L(tau(t, t+K), theta') ],   theta' = u_psi(tau(t-M, t-1), theta)

   with L the negative log-likelihood of the transitions under ``p_theta'`` (:mod:`metaedu.rl.dynamics`).
2. GrBAL's update rule (eq. 4): one gradient step with a learned step size psi::

       theta' = theta + psi * grad_theta 1/M sum_{m=t-M}^{t-1} log p_theta(s_{m+1} | s_m, a_m)

   This is MAML's inner step on the M past transitions, psi a learned step per weight
   (Meta-SGD): :class:`GrBAL` runs it through :class:`metaedu.algorithms.maml.MAML`, all segments
   of a meta-batch at once.
3. ReBAL: a recurrent model reads the M past transitions; its gates are the learned update rule
   (:class:`~metaedu.rl.dynamics.RecurrentDynamics`).
4. Training (Alg. 1): every ``collect_every`` steps collect episodes of new tasks with the current
   adaptive controller and add them to D; every step, N = ``meta_batch`` segments, adapt on
   their first M steps, score on the next K, and update theta (rate beta = ``outer_lr``) and psi
   (rate eta = ``psi_lr``) with Adam.
5. Test time (Alg. 2): at every step adapt theta* to the last M steps, plan with the adapted
   model (:func:`metaedu.rl.mpc.plan`), execute the first action.

Baselines (same data, same number of gradient steps, same planner): **MB** fits one model to all
transitions and never adapts; **MB + dynamic evaluation** starts from MB's model and, at every
test step, takes ``de_steps`` plain gradient steps (rate ``de_lr``) on the last M transitions,
continuing from its previous weights (online fine-tuning).

Symbols and names: M = ``past``, K = ``future``, N = ``meta_batch``, psi = ``GrBAL.learner.inner_lrs``
(initial value ``inner_lr``), beta = ``outer_lr``, eta = ``psi_lr``, H = ``horizon``,
n_A = ``candidates``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from metaedu.algorithms.maml import MAML
from metaedu.nn.functional import batched_forward, parameter_dict, per_task
from metaedu.rl.dynamics import DynamicsModel, RecurrentDynamics, SegmentBuffer, Segments, gaussian_nll
from metaedu.rl.mpc import Planner, plan
from metaedu.runtime import check_settings, seeded

METHODS = ("mb", "mb_de", "grbal", "rebal")
#: MB + dynamic evaluation's step size in quick mode, chosen on validation tasks by
#: ``scripts/choose_quick_de_lr.py`` (the best of 1e-5 ... 3e-2: larger online steps lowered the return)
QUICK_DE_LR = 1e-5
NAMES = {"mb": "MB", "mb_de": "MB + dynamic evaluation", "grbal": "GrBAL", "rebal": "ReBAL"}


@dataclass
class GrBALSettings:
    """The experiment of Nagabandi et al.: data, models, meta-training, planner and the test of all four methods."""

    env: str = "half_cheetah"  # "motor_pendulum", "half_cheetah" (disabled joint) or "ant" (crippled leg)
    episode_steps: int = 1000  # steps of an episode (max_path_length)
    random_episodes: int = 4  # episodes of random actions before any training
    collect_every: int = 2000  # n_S: gradient steps between collections with the current controller (0: never)
    collect_episodes: int = 4  # episodes added to D at each collection (num_rollouts)
    hidden: tuple[int, ...] = (512, 512)  # the model's hidden layers
    past: int = 16  # M, steps that adapt the model
    future: int = 16  # K, steps the adapted model is scored on
    meta_batch: int = 20  # N, segments per gradient step (MB: N * (M + K) transitions)
    steps: int = 100000  # gradient steps (50 collections of 2000 in full mode)
    outer_lr: float = 1e-3  # beta, Adam's step for theta
    inner_lr: float = 0.01  # the initial psi (GrBAL's learned step sizes)
    psi_lr: float = 1e-3  # eta, Adam's step for psi
    memory: int = 64  # ReBAL: size of the GRU's state
    de_lr: float = 0.01  # MB + dynamic evaluation: step size of the online gradient steps
    de_steps: int = 1  # MB + dynamic evaluation: gradient steps per time step
    horizon: int = 10  # H, planning horizon
    candidates: int = 1000  # n_A, action sequences per planning step
    planner: str = "random"  # "random" (random shooting, the paper's) or "cem"
    cem_iterations: int = 5  # CEM refits (planner = "cem")
    test_episodes: int = 10  # test episodes (seeds) behind every interval
    fail_step: int = 500  # test: the step at which the motor fails
    fail_group: int = 0  # test: which motors fail (an index into the environment's groups: a joint, a leg)
    fail_gain: float = 0.0  # test: their gain after the failure (0: disabled, -1: reversed)
    start_angle: float = 0.3  # motor pendulum, test episodes: the start is within this angle of upright
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "GrBALSettings":
        """The motor pendulum, 100-step episodes, two collections with the controller, a smaller model."""
        return cls(env="motor_pendulum", episode_steps=100, random_episodes=256, collect_every=150,
                   collect_episodes=12, hidden=(64, 64), meta_batch=32, steps=400, outer_lr=3e-3, psi_lr=3e-3,
                   inner_lr=0.05, memory=32, de_lr=QUICK_DE_LR, horizon=10, candidates=200, test_episodes=12,
                   fail_step=30, fail_gain=-1.0)

    @classmethod
    def full(cls) -> "GrBALSettings":
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("episode_steps", "random_episodes", "collect_episodes", "hidden", "past",
                                       "future", "meta_batch", "steps", "outer_lr", "inner_lr", "psi_lr", "memory",
                                       "de_lr", "de_steps", "horizon", "candidates", "cem_iterations",
                                       "test_episodes"),
                       non_negative=("collect_every", "fail_step", "fail_group", "start_angle"),
                       choices={"env": ("motor_pendulum", "half_cheetah", "ant"), "planner": ("random", "cem")})
        if self.past + self.future > self.episode_steps:
            raise ValueError(f"GrBALSettings.past + future ({self.past + self.future}) must fit in episode_steps "
                             f"({self.episode_steps})")
        if self.fail_step >= self.episode_steps:
            raise ValueError(f"GrBALSettings.fail_step must come before the end of the episode ({self.episode_steps} "
                             f"steps), got {self.fail_step}")

    def make_planner(self, low: float = -1.0, high: float = 1.0) -> Planner:
        return Planner(self.horizon, self.candidates, self.planner, self.cem_iterations, low=low, high=high)


# ----------------------------------------------------------------------------- the models


class GrBAL(nn.Module):
    """theta (a :class:`DynamicsModel`) and psi (Meta-SGD step sizes of the MAML core) of eq. 4."""

    def __init__(self, dynamics: DynamicsModel, inner_lr: float) -> None:
        super().__init__()
        self.dynamics = dynamics
        self.learner = MAML(dynamics.net, gaussian_nll, inner_lr=inner_lr, meta_sgd=True)

    def adapt(self, x_past: torch.Tensor, y_past: torch.Tensor, create_graph: bool = False):
        """theta' for every segment: ``x_past [B, M, obs + act]``, ``y_past [B, M, obs]`` -> ``{name: [B, ...]}``."""
        return self.learner.adapt(x_past, y_past, 1, create_graph=create_graph)

    def meta_loss(self, segments: Segments) -> torch.Tensor:
        """The meta-objective on a batch of segments (adapt on the past M, NLL of the next K)."""
        return self.learner.meta_loss(segments, steps=1)[0]


def build(method: str, settings: GrBALSettings, obs_dim: int, act_dim: int, seed: int = 0) -> nn.Module:
    """A fresh model for ``method`` (``"mb"`` and ``"mb_de"`` share MB's model), weights drawn from ``seed``."""
    with seeded(seed):
        if method in ("mb", "mb_de"):
            return DynamicsModel(obs_dim, act_dim, settings.hidden)
        if method == "grbal":
            return GrBAL(DynamicsModel(obs_dim, act_dim, settings.hidden), settings.inner_lr)
        if method == "rebal":
            return RecurrentDynamics(obs_dim, act_dim, settings.hidden, settings.memory)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def normaliser_of(model: nn.Module):
    return model.dynamics.norm if isinstance(model, GrBAL) else model.norm


def training_loss(method: str, model: nn.Module, buffer: SegmentBuffer, settings: GrBALSettings,
                  generator: torch.Generator) -> torch.Tensor:
    """One meta-batch's loss: MB on N (M + K) single transitions, GrBAL and ReBAL on N segments."""
    norm = normaliser_of(model)
    if method in ("mb", "mb_de"):
        x, y = buffer.sample_transitions(settings.meta_batch * (settings.past + settings.future), norm, generator)
        return gaussian_nll(model(x)[None], y[None]).mean()
    segments = buffer.sample_segments(settings.meta_batch, settings.past, settings.future, norm, generator)
    if method == "grbal":
        return model.meta_loss(segments)
    h = model.context(segments.x_support, segments.y_support)  # ReBAL: read the past M steps
    return gaussian_nll(model(segments.x_query, h), segments.y_query).mean()


# ----------------------------------------------------------------------------- test time (Alg. 2)


class AdaptiveMPC:
    """Alg. 2 for any of the four methods: adapt to the last M steps (or not), plan, return the first action.

    Called by :func:`~metaedu.rl.rollout.rollout` as ``controller(t, obs [B, t + 1, obs], actions [B, t, act])``.
    """

    def __init__(self, method: str, model: nn.Module, env, settings: GrBALSettings, generator: torch.Generator,
                 de_lr: float | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method, self.model, self.env, self.settings, self.generator = method, model, env, settings, generator
        self.norm = normaliser_of(model)
        low, high = float(env.single_action_space.low[0]), float(env.single_action_space.high[0])
        self.planner = settings.make_planner(low, high)
        self.de = MAML(model.net, gaussian_nll, inner_lr=de_lr or settings.de_lr) if method == "mb_de" else None
        self.fast = None  # dynamic evaluation's weights, carried from step to step

    def past(self, obs: torch.Tensor, actions: torch.Tensor):
        """The last ``min(t, M)`` transitions, normalised: ``x [B, m, obs + act]``, ``y [B, m, obs]``."""
        m = min(actions.shape[1], self.settings.past)
        s, a, s_next = obs[:, -m - 1:-1], actions[:, actions.shape[1] - m:], obs[:, -m:]
        return self.norm.inputs(s, a), self.norm.targets(s, s_next)

    def predictor(self, obs: torch.Tensor, actions: torch.Tensor):
        """The model the planner uses at this step: ``predict(s [B, n, obs], a [B, n, act]) -> s' [B, n, obs]``."""
        b, t = obs.shape[0], actions.shape[1]
        if self.method == "rebal":
            x, y = self.past(obs, actions) if t else (None, None)
            h = self.model.context(x, y) if t else torch.zeros(b, self.model.gru.hidden_size, device=obs.device)
            return lambda s, a: self.norm.next_obs(s, self.model(self.norm.inputs(s, a), h)[..., : s.shape[-1]])
        net = self.model.dynamics.net if self.method == "grbal" else self.model.net
        fast = per_task(parameter_dict(net), b)
        if t and self.method == "grbal":
            with torch.enable_grad():
                fast = {k: v.detach() for k, v in self.model.adapt(*self.past(obs, actions)).items()}
        elif t and self.method == "mb_de":
            with torch.enable_grad():
                # a constant start (the MAML core would let gradients flow into it, and views of theta made
                # under the rollout's no_grad would not connect to the graph)
                start = {k: v.detach() for k, v in (fast if self.fast is None else self.fast).items()}
                self.fast = {k: v.detach() for k, v in
                             self.de.adapt(*self.past(obs, actions), self.settings.de_steps, create_graph=False,
                                           start=start).items()}
            fast = self.fast
        return lambda s, a: self.norm.next_obs(s, batched_forward(net, fast, self.norm.inputs(s, a))[..., : s.shape[-1]])

    def __call__(self, t: int, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if t == 0:
            self.fast = None  # a new episode
        predict = self.predictor(obs, actions)
        return plan(predict, self.env.reward, obs[:, -1], actions.shape[-1], self.planner, self.generator)
