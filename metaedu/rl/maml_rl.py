"""MAML with a policy-gradient inner loop on Finn et al.'s 2-D navigation (Finn, Abbeel & Levine, ICML 2017, sec. 3.3).

A task T_i is a goal; its loss is the negative expected return of the policy pi_theta. Read next to
the paper (Alg. 3):

1. sample K trajectories D_i with pi_theta on each of the N tasks of a meta-batch;
2. inner step (eq. 1 with a policy-gradient estimate)::

       theta'_i = theta + alpha * g_i,   g_i = 1/(K H) sum_{k, t} grad log pi_theta(a_t | s_t) (R_t - b_t)

   R_t the discounted return-to-go, b_t a baseline (here: the mean of R_t over the K trajectories
   of the same task at the same time step), H the horizon. ``g_i`` is the gradient of the
   surrogate :func:`surrogate_loss` (with a minus sign), so the step is MAML's inner step on that
   loss: :class:`metaedu.algorithms.maml.MAML` takes it for all tasks at once with the policy's
   functional parameters;
3. sample trajectories D'_i with pi_theta'_i and update theta with the gradient of the same
   surrogate on D'_i through theta'_i (Adam with rate ``outer_lr``; the paper uses TRPO).

The surrogate's gradient is REINFORCE's estimate; differentiating it through theta'_i leaves out the
term of the pre-update sampling distribution's dependence on theta (the paper's estimator does the
same; later work, e.g. ProMP and DiCE, adds it).

The **pretrained** baseline of the paper is one policy trained on all tasks with the same
surrogate, the same number of trajectories and steps, then adapted with the same one step (its
step size tuned on validation goals).

Symbols and names: alpha = ``inner_lr``, beta = ``outer_lr``, N = ``meta_batch``, K = ``episodes``,
H = ``horizon``, gamma = ``discount``. Actions are in units of the environment's ``max_action``
(the policy's mean 1 is a full step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from metaedu.algorithms.maml import MAML
from metaedu.checkpoints import resolve
from metaedu.nn.backbones import MLP
from metaedu.nn.functional import Params, batched_forward, parameter_dict, per_task
from metaedu.nn.gaussian import log_density
from metaedu.rl.envs import PointNavigation
from metaedu.rl.rollout import Trajectories, rollout
from metaedu.runtime import check_settings, seeded
from metaedu.training import History, train

#: seeds of validation goals are offset by this much from the caller's seed (test goals use other offsets)
VALIDATION_OFFSET, TEST_OFFSET = 10_000, 20_000


@dataclass
class MAMLRLSettings:
    """Finn et al.'s 2-D navigation experiment: policy, inner policy-gradient step, meta-training, test."""

    horizon: int = 100  # H, steps of an episode
    episodes: int = 20  # K, trajectories per task and per step (inner and outer)
    meta_batch: int = 20  # N, goals per meta-update
    hidden: tuple[int, ...] = (100, 100)  # the policy's hidden layers (ReLU)
    init_std: float = 1.0  # the policy's initial action standard deviation (in units of max_action)
    inner_lr: float = 0.1  # alpha, the policy-gradient step
    outer_lr: float = 1e-3  # beta, Adam's step on theta
    first_order: bool = False  # drop the second derivatives of the meta-gradient
    discount: float = 0.99  # gamma of the returns-to-go
    steps: int = 500  # meta-updates (the pretrained policy gets as many updates on as many trajectories)
    test_goals: int = 40  # new goals behind every interval
    step_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # the pretrained policy's step sizes tried on validation
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "MAMLRLSettings":
        """Short episodes (goals are at most 5 steps away), a smaller policy, fewer updates."""
        return cls(horizon=10, episodes=10, meta_batch=10, hidden=(32, 32), init_std=0.5, outer_lr=3e-3,
                   steps=300, test_goals=30, inner_lr=0.1)

    @classmethod
    def full(cls) -> "MAMLRLSettings":
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("horizon", "meta_batch", "hidden", "init_std", "inner_lr", "outer_lr",
                                       "discount", "steps", "test_goals", "step_grid"))
        if self.episodes < 2:
            raise ValueError(f"MAMLRLSettings.episodes must be at least 2 (the baseline averages over them), "
                             f"got {self.episodes}")
        if self.discount > 1:
            raise ValueError(f"MAMLRLSettings.discount must be at most 1, got {self.discount}")


class GaussianPolicy(nn.Module):
    """pi_theta(a | s) = N(mu_theta(s), diag sigma^2): an MLP for the mean and a learned log sigma per action."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], init_std: float) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.mean = MLP((obs_dim, *hidden, act_dim))
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_std)).log())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs [n, obs]`` -> ``[n, 2 * act]``: the mean and log sigma of each action."""
        mu = self.mean(obs)
        return torch.cat([mu, self.log_std.expand_as(mu)], -1)


def surrogate_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per task ``-1/n sum log pi(a | s) A``: ``out [tasks, n, 2 * act]`` (mean, log sigma), ``y [tasks, n, act + 1]``
    (the action taken and its advantage) -> ``[tasks]``. Its gradient is minus the policy-gradient estimate."""
    act = y.shape[-1] - 1
    if out.shape[-1] != 2 * act or out.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"policy outputs {tuple(out.shape)} must be [.., 2 * {act}] for (actions, advantages) "
                         f"{tuple(y.shape)}")
    log_prob = log_density(y[..., :act], out[..., :act], 2 * out[..., act:])  # [tasks, n]
    return -(log_prob * y[..., act]).mean(-1)


def returns_to_go(rewards: torch.Tensor, discount: float) -> torch.Tensor:
    """``R_t = sum_{t' >= t} gamma^(t' - t) r_t'`` for ``rewards [..., H]``."""
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + discount * running
        out[..., t] = running
    return out


def policy_data(trajectories: Trajectories, tasks: int, discount: float, max_action: float):
    """A task's trajectories as MAML's (inputs, targets): ``x [tasks, K H, obs]``, ``y [tasks, K H, act + 1]``.

    The copies are ordered task-major (copy ``i * K + k`` is trajectory k of task i). The advantage is the
    return-to-go minus its mean over the task's K trajectories at the same step.
    """
    obs, actions = trajectories.obs[:, :-1], trajectories.actions / max_action  # [N K, H, .]
    g = returns_to_go(trajectories.rewards, discount).view(tasks, -1, trajectories.steps)  # [N, K, H]
    advantage = g - g.mean(1, keepdim=True)
    y = torch.cat([actions.reshape(tasks, -1, actions.shape[-1]), advantage.reshape(tasks, -1, 1)], -1)
    return obs.reshape(tasks, -1, obs.shape[-1]), y


def sample_trajectories(policy: GaussianPolicy, fast: Params, env: PointNavigation, goals: torch.Tensor,
                        episodes: int, generator: torch.Generator) -> Trajectories:
    """K episodes per goal, each goal's with its own weights ``fast`` (``{name: [N, ...]}``), all in one batch."""
    tasks = goals.shape[0]
    if env.num_envs != tasks * episodes:
        raise ValueError(f"the environment must have N * K = {tasks * episodes} copies, has {env.num_envs}")
    env.set_goals(goals.repeat_interleave(episodes, 0))

    def act(t, obs, actions):
        out = batched_forward(policy, fast, obs[:, -1].view(tasks, episodes, -1))  # [N, K, 2 act]
        mu, log_std = out[..., :policy.act_dim], out[..., policy.act_dim:]
        a = mu + log_std.exp() * torch.randn(mu.shape, generator=generator, device=mu.device)
        return (a * env.max_action).flatten(0, 1)

    return rollout(env, act, seed=int(torch.randint(2**31, (1,), generator=generator, device=generator.device)))


def make_learner(settings: MAMLRLSettings, seed: int = 0) -> MAML:
    with seeded(seed):
        policy = GaussianPolicy(2, 2, settings.hidden, settings.init_std)
    return MAML(policy, surrogate_loss, inner_lr=settings.inner_lr, first_order=settings.first_order)


def adapt(learner: MAML, env: PointNavigation, goals: torch.Tensor, settings: MAMLRLSettings,
          generator: torch.Generator, inner_lr: float | None = None, create_graph: bool = False):
    """One policy-gradient step per goal from theta: returns (theta'_i, the trajectories of theta)."""
    tasks = goals.shape[0]
    theta = per_task(parameter_dict(learner.model), tasks)
    before = sample_trajectories(learner.model, {k: v.detach() for k, v in theta.items()}, env, goals,
                                 settings.episodes, generator)
    x, y = policy_data(before, tasks, settings.discount, env.max_action)
    if inner_lr is not None:
        learner.inner_lr = inner_lr
    try:
        fast = learner.adapt(x, y, 1, create_graph=create_graph)
    finally:
        learner.inner_lr = settings.inner_lr
    return fast, before


def train_policy(method: str, settings: MAMLRLSettings, seed: int = 0, device="cpu", checkpoint=None,
                 progress: bool = True) -> tuple[MAML, History]:
    """``"maml"``: Alg. 3; ``"pretrained"``: the surrogate on all tasks without adaptation, on as many trajectories."""
    if method not in ("maml", "pretrained"):
        raise ValueError(f"method must be 'maml' or 'pretrained', got {method!r}")
    checkpoint = resolve(checkpoint, f"maml_rl_{method}", settings, seed)
    learner = make_learner(settings, seed).to(device)
    generator = torch.Generator(device).manual_seed(seed)
    n, k = settings.meta_batch, settings.episodes
    env = PointNavigation(n * k, settings.horizon, device)
    opt = torch.optim.Adam(learner.parameters(), lr=settings.outer_lr)

    def step(i: int) -> dict:
        goals = PointNavigation.sample_goals(n, generator, device)
        if method == "maml":
            fast, before = adapt(learner, env, goals, settings, generator, create_graph=not settings.first_order)
            after = sample_trajectories(learner.model, {k_: v.detach() for k_, v in fast.items()}, env, goals, k,
                                        generator)
            x, y = policy_data(after, n, settings.discount, env.max_action)
            loss = learner.task_losses(fast, x, y)[0].mean()
        else:  # the same 2 N K trajectories per update, all with theta
            theta = per_task(parameter_dict(learner.model), n)
            frozen = {k_: v.detach() for k_, v in theta.items()}
            batches = [sample_trajectories(learner.model, frozen, env, goals, k, generator) for _ in range(2)]
            parts = [policy_data(b, n, settings.discount, env.max_action) for b in batches]
            x, y = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
            loss = learner.task_losses(theta, x, y)[0].mean()
            after = batches[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "return": after.returns().mean()}

    history = train(step, settings.steps, state={"learner": learner, "opt": opt, "generator": generator},
                    checkpoint=checkpoint, progress=progress, desc=f"MAML-RL ({method})")
    return learner, history


@torch.no_grad()
def returns_after_step(learner: MAML, goals: torch.Tensor, settings: MAMLRLSettings, seed: int,
                       inner_lr: float | None = None) -> tuple[torch.Tensor, torch.Tensor, Trajectories, Trajectories]:
    """Mean return per goal ``[N]`` before and after one policy-gradient step, and both sets of trajectories."""
    n, k = goals.shape[0], settings.episodes
    env = PointNavigation(n * k, settings.horizon, goals.device)
    generator = torch.Generator(goals.device).manual_seed(seed)
    with torch.enable_grad():
        fast, before = adapt(learner, env, goals, settings, generator, inner_lr)
    after = sample_trajectories(learner.model, {k_: v.detach() for k_, v in fast.items()}, env, goals, k, generator)
    return before.returns().view(n, k).mean(1), after.returns().view(n, k).mean(1), before, after


def goals_for(settings: MAMLRLSettings, seed: int, split: str, device="cpu") -> torch.Tensor:
    """New goals for ``"validation"`` or ``"test"`` (seeds apart from each other and from training's)."""
    offsets = {"validation": VALIDATION_OFFSET, "test": TEST_OFFSET}
    if split not in offsets:
        raise ValueError(f"split must be 'validation' or 'test', got {split!r}")
    return PointNavigation.sample_goals(settings.test_goals, torch.Generator(device).manual_seed(seed + offsets[split]),
                                        device)


def tune_step(learner: MAML, settings: MAMLRLSettings, seed: int = 0) -> tuple[float, dict[float, float]]:
    """The step size in ``step_grid`` with the best mean return after one step on validation goals."""
    goals = goals_for(settings, seed, "validation")
    scores = {lr: float(returns_after_step(learner, goals, settings, seed + VALIDATION_OFFSET, lr)[1].mean())
              for lr in settings.step_grid}
    return max(scores, key=scores.get), scores
