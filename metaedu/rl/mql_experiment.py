"""Meta-Q-Learning's experiment on 2-D navigation, part 1: the context TD3 and its meta-training
(Fakoor et al. 2020); part 2, adaptation to new goals, is :mod:`metaedu.rl.mql_adaptation`.

The question: does reusing the old buffer, weighted by the propensity score, help a new task? The
pieces are :mod:`metaedu.rl.mql`'s (TD3's targets, the propensity weights, the effective sample size,
the proximal term); these two modules run them:

1. **Meta-training** (the multi-task TD3 objective): one actor-critic for all training goals (``train_goals``
   new ones at every collection, so the old buffer covers the goal square), each
   transition's input extended by a context ``z_t`` — the mean of an embedding ``phi(s, a, r, s')`` of the
   transitions before ``t`` in the same episode (a *set* context, the issue's alternative to a GRU; it is
   an MLP, so every network here is an MLP and runs per task through
   :func:`metaedu.nn.functional.batched_forward`). The state is ``(x, y, t / H)``.
2. **A new goal**: ``new_episodes`` episodes of the meta-trained actor with exploration noise.
3. **Adaptation** (eq. 11-12), ``adapt_steps`` Adam steps from theta_meta, for every test goal at once
   (weights with a leading goal dimension), in four arms on the same new data:

   * ``"new_only"``: TD3 on the new transitions alone;
   * ``"uniform"``: plus the whole old buffer with weight 1 (reuse without the propensity score);
   * ``"weighted"``: plus the old buffer weighted by beta, without the proximal term (an ablation);
   * ``"mql"``: plus the old buffer weighted by beta (logistic regression on ``(s, a, r, s')`` and the
     context after it, new = 1, old = 0) and the proximal term ``lambda / 2 ||theta - theta_meta||^2``, lambda = 1 - ESS(beta).

   ``"meta"`` (no adaptation) is scored too. A policy is scored by one deterministic episode on its goal
   (the start and the dynamics are deterministic).

Symbols and names: gamma = ``discount``, sigma = ``target_noise``, c = ``noise_clip``, tau = ``polyak``,
d = ``policy_delay``, beta = the propensity weights (``weights``), lambda = 1 - ``ess``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metaedu.nn.backbones import MLP
from metaedu.nn.functional import Params, batched_forward, per_task
from metaedu.rl.envs import PointNavigation
from metaedu.rl.mql import smoothed_target_action, td3_target
from metaedu.rl.rollout import Trajectories, rollout
from metaedu.runtime import check_settings, seeded



@dataclass
class MQLSettings:
    """The navigation experiment: context TD3, meta-training, new-task data and the three adaptations."""

    horizon: int = 10  # H, steps of an episode (goals are at most 5 steps of 0.1 away)
    train_goals: int = 20  # training tasks per collection (new goals each time)
    hidden: tuple[int, ...] = (64, 64)  # hidden layers of the actor, the critics and phi
    context: int = 16  # size of z
    discount: float = 0.5  # gamma (a short-sighted critic suffices: the reward is dense)
    target_noise: float = 0.2  # sigma of TD3's target smoothing (units of max_action)
    noise_clip: float = 0.5  # c
    explore_noise: float = 0.3  # std of the behaviour policy's Gaussian noise (units of max_action)
    polyak: float = 0.02  # tau of the target networks' running average
    policy_delay: int = 2  # d, critic updates per actor update
    lr: float = 1e-3  # Adam's step in meta-training
    batch_episodes: int = 32  # episodes (of H transitions) per meta-training update
    meta_steps: int = 8000  # meta-training updates (quick mode loads them: metaedu.rl.mql_reference)
    collect_every: int = 100  # updates between collections (one episode per training goal)
    warmup_episodes: int = 4  # episodes per training goal before the first update
    test_goals: int = 20  # new goals behind every interval
    new_episodes: int = 2  # episodes of the new goal before adapting
    adapt_steps: int = 50  # Adam steps of adaptation
    adapt_lr: float = 1e-3  # Adam's step in adaptation
    old_batch_episodes: int = 8  # old episodes per adaptation step
    clip: float = 20.0  # beta is clipped above at this value

    @classmethod
    def quick(cls) -> "MQLSettings":
        return cls()

    @classmethod
    def full(cls) -> "MQLSettings":
        """Longer meta-training and adaptation, more goals (a GPU run of minutes)."""
        return cls(hidden=(256, 256), train_goals=100, meta_steps=20_000, test_goals=100, adapt_steps=500,
                   batch_episodes=128)

    def __post_init__(self) -> None:
        check_settings(self, positive=("horizon", "train_goals", "hidden", "context", "target_noise", "noise_clip",
                                       "explore_noise", "polyak", "policy_delay", "lr", "batch_episodes",
                                       "meta_steps", "collect_every", "warmup_episodes", "test_goals",
                                       "new_episodes", "adapt_steps", "adapt_lr", "old_batch_episodes", "clip"))
        if not 0 <= self.discount < 1:
            raise ValueError(f"MQLSettings.discount must be in [0, 1), got {self.discount}")
        if self.polyak > 1:
            raise ValueError(f"MQLSettings.polyak must be at most 1, got {self.polyak}")


class SetContextTD3(nn.Module):
    """TD3's actor and twin critics reading a set context: ``z_t = mean_{tau < t} phi(s, a, r, s')_tau``.

    Every part is an :class:`MLP`; the functions below take a parameter dict ``{part.name: [tasks, ...]}``.
    """

    def __init__(self, hidden: tuple[int, ...], context: int) -> None:
        super().__init__()
        self.phi = MLP((2 + 2 + 1 + 2, *hidden, context))
        self.actor = MLP((3 + context, *hidden, 2))
        self.q1 = MLP((3 + 2 + context, *hidden, 1))
        self.q2 = MLP((3 + 2 + context, *hidden, 1))


def part(params: Params, name: str) -> Params:
    """The entries of one sub-network, without its prefix (``"q1.net.0.weight"`` -> ``"net.0.weight"``)."""
    return {k[len(name) + 1:]: v for k, v in params.items() if k.startswith(name + ".")}


def forward(model: SetContextTD3, params: Params, name: str, x: torch.Tensor) -> torch.Tensor:
    """Sub-network ``name`` with per-task weights on ``x [tasks, ..., d]`` (any number of middle dimensions)."""
    lead = x.shape[:-1]
    return batched_forward(getattr(model, name), part(params, name), x.reshape(lead[0], -1, x.shape[-1])).reshape(
        *lead, -1)


def contexts(model: SetContextTD3, params: Params, obs, act, rew, max_action: float) -> torch.Tensor:
    """``z_0 .. z_H`` of every episode: ``obs [T, B, H + 1, 2]``, ``act [T, B, H, 2]``, ``rew [T, B, H]`` ->
    ``[T, B, H + 1, context]`` (``z_0 = 0``; ``z_t`` the mean of phi over the first t transitions)."""
    feats = torch.cat([obs[..., :-1, :], act / max_action, rew[..., None], obs[..., 1:, :]], -1)  # [T, B, H, 7]
    phi = forward(model, params, "phi", feats)
    total = torch.cat([torch.zeros_like(phi[..., :1, :]), phi.cumsum(-2)], -2)  # [T, B, H + 1, C]
    count = torch.arange(phi.shape[-2] + 1, device=phi.device).clamp(min=1)[:, None]
    return total / count


def states(obs: torch.Tensor) -> torch.Tensor:
    """``(x, y, t / H)`` for ``obs [..., H + 1, 2]``."""
    h = obs.shape[-2] - 1
    t = torch.arange(h + 1, device=obs.device, dtype=obs.dtype) / h
    return torch.cat([obs, t.expand(obs.shape[:-1])[..., None]], -1)


def act(model: SetContextTD3, params: Params, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The actor's action in ``[-1, 1]^2`` (units of max_action)."""
    return torch.tanh(forward(model, params, "actor", torch.cat([s, z], -1)))


def critics(model, params, s, a, z) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([s, a, z], -1)
    return forward(model, params, "q1", x)[..., 0], forward(model, params, "q2", x)[..., 0]


def _views(episodes: Trajectories, tasks: int, max_action: float):
    """Episodes laid out task-major as ``obs [T, B, H + 1, 2]``, actions in units of max_action ``[T, B, H, 2]``,
    rewards ``[T, B, H]``."""
    obs = episodes.obs.view(tasks, -1, *episodes.obs.shape[1:])
    a = (episodes.actions / max_action).view(tasks, -1, *episodes.actions.shape[1:])
    return obs, a, episodes.rewards.view(tasks, -1, episodes.rewards.shape[-1])


def critic_losses(model, params: Params, target: Params, episodes: Trajectories, tasks: int, settings: MQLSettings,
                  generator: torch.Generator, max_action: float) -> torch.Tensor:
    """TD3's critic loss ``(Q_1 - y)^2 + (Q_2 - y)^2`` of every transition, ``[T, B H]``, of episodes laid out
    task-major (``tasks`` groups). The target ``y`` uses the target weights for the context too."""
    obs, a, rew = _views(episodes, tasks, max_action)
    s = states(obs)
    with torch.no_grad():
        z_next = contexts(model, target, obs, a * max_action, rew, max_action)[..., 1:, :]
        noise = settings.target_noise * torch.randn(a.shape, generator=generator, device=a.device)
        a_next = smoothed_target_action(act(model, target, s[..., 1:, :], z_next), noise, settings.noise_clip, 1.0)
        nq1, nq2 = critics(model, target, s[..., 1:, :], a_next, z_next)
        done = torch.zeros_like(rew)
        done[..., -1] = 1.0  # the episode ends: nothing to bootstrap from
        y = td3_target(rew.flatten(), done.flatten(), nq1.flatten(), nq2.flatten(), settings.discount).view_as(rew)
    z = contexts(model, params, obs, a * max_action, rew, max_action)[..., :-1, :]
    q1, q2 = critics(model, params, s[..., :-1, :], a, z)
    return ((q1 - y) ** 2 + (q2 - y) ** 2).flatten(1)


def actor_losses(model, params: Params, episodes: Trajectories, tasks: int, max_action: float) -> torch.Tensor:
    """TD3's actor loss ``-Q_1(s, mu(s, z), z)`` of every transition ``[T, B H]`` (the context detached: the
    critic's loss trains phi)."""
    obs, a, rew = _views(episodes, tasks, max_action)
    s = states(obs)[..., :-1, :]
    with torch.no_grad():
        z = contexts(model, params, obs, a * max_action, rew, max_action)[..., :-1, :]
    return -critics(model, params, s, act(model, params, s, z), z)[0].flatten(1)


class ContextController:
    """Alg. 2's behaviour policy: the actor on the context of the episode so far, plus Gaussian noise."""

    def __init__(self, model, params: Params, tasks: int, settings: MQLSettings, max_action: float,
                 generator: torch.Generator | None = None, noise: float = 0.0) -> None:
        self.model, self.params, self.tasks, self.settings = model, params, tasks, settings
        self.max_action, self.generator, self.noise = max_action, generator, noise

    def __call__(self, t, obs, actions, rewards):
        b = obs.shape[0]
        o = obs.view(self.tasks, -1, t + 1, 2)
        if t:
            z = contexts(self.model, self.params, o, actions.view(self.tasks, -1, t, 2),
                         rewards.view(self.tasks, -1, t), self.max_action)[..., -1, :]
        else:
            z = torch.zeros(self.tasks, b // self.tasks, self.settings.context, device=obs.device)
        tt = torch.full_like(o[..., -1, :1], t / self.settings.horizon)
        a = act(self.model, self.params, torch.cat([o[..., -1, :], tt], -1), z)
        if self.noise:
            a = a + self.noise * torch.randn(a.shape, generator=self.generator, device=a.device)
        return (a.clamp(-1, 1) * self.max_action).reshape(b, 2)


def run_episodes(model, params: Params, goals: torch.Tensor, episodes: int, settings: MQLSettings,
                 generator: torch.Generator, noise: float = 0.0) -> Trajectories:
    """``episodes`` episodes per goal, goal-major; the weights ``params`` have a leading dimension of one
    (shared by all goals) or of ``goals [G, 2]``'s G (goal i with ``params[..][i]``)."""
    tasks = next(iter(params.values())).shape[0]
    if tasks not in (1, goals.shape[0]):
        raise ValueError(f"params must be shared (leading dimension 1) or one set per goal ({goals.shape[0]}), "
                         f"got {tasks}")
    env = PointNavigation(goals.shape[0] * episodes, settings.horizon, goals.device)
    env.set_goals(goals.repeat_interleave(episodes, 0))
    controller = ContextController(model, params, tasks, settings, env.max_action, generator, noise)
    seed = int(torch.randint(2**31, (1,), generator=generator, device=generator.device))
    return rollout(env, controller, seed=seed, with_rewards=True)


def build(settings: MQLSettings, seed: int = 0, device="cpu") -> SetContextTD3:
    with seeded(seed):
        return SetContextTD3(settings.hidden, settings.context).to(device)


def polyak_update(target: Params, params: Params, rate: float) -> None:
    with torch.no_grad():
        for k in target:
            target[k].lerp_(params[k], rate)


def meta_train(settings: MQLSettings, seed: int = 0, device="cpu"):
    """Multi-task TD3 with a set context; every collection runs one episode on each of ``train_goals`` new goals
    (the warm-up ``warmup_episodes`` on each of its goals), all drawn from ``seed``.

    Returns ``(model, theta_meta [leading dimension 1], the old buffer, its goals [n_episodes, 2],
    mean return of each collection's episodes)``.
    """
    generator = torch.Generator(device).manual_seed(seed)
    model = build(settings, seed, device)
    params = {k: v.detach().clone().requires_grad_() for k, v in per_task(dict(model.named_parameters()), 1).items()}
    target = {k: v.detach().clone() for k, v in params.items()}
    critic_keys = [k for k in params if not k.startswith("actor.")]
    opt_critic = torch.optim.Adam([params[k] for k in critic_keys], lr=settings.lr)
    opt_actor = torch.optim.Adam([params[k] for k in params if k.startswith("actor.")], lr=settings.lr)
    max_action = PointNavigation(1).max_action

    def collect(episodes: int) -> tuple[Trajectories, torch.Tensor]:
        goals = PointNavigation.sample_goals(settings.train_goals, generator, device)  # new tasks each time
        frozen = {k: v.detach() for k, v in params.items()}
        return (run_episodes(model, frozen, goals, episodes, settings, generator, settings.explore_noise),
                goals.repeat_interleave(episodes, 0))

    first, first_goals = collect(settings.warmup_episodes)
    parts, owners = [first], [first_goals]
    curve = [float(parts[0].returns().mean())]
    for i in range(settings.meta_steps):
        if i and i % settings.collect_every == 0:
            episodes, goals = collect(1)
            parts.append(episodes)
            owners.append(goals)
            curve.append(float(parts[-1].returns().mean()))
            buffer = Trajectories.cat(parts)
        elif i == 0:
            buffer = Trajectories.cat(parts)
        pick = torch.randint(buffer.obs.shape[0], (settings.batch_episodes,), generator=generator, device=device)
        batch = Trajectories(buffer.obs[pick], buffer.actions[pick], buffer.rewards[pick])
        critic = critic_losses(model, params, target, batch, 1, settings, generator, max_action)
        opt_critic.zero_grad(set_to_none=True)
        critic.mean().backward(inputs=[params[k] for k in critic_keys])
        opt_critic.step()
        if i % settings.policy_delay == 0:
            actor = actor_losses(model, params, batch, 1, max_action)
            opt_actor.zero_grad(set_to_none=True)
            actor.mean().backward(inputs=[params[k] for k in params if k.startswith("actor.")])
            opt_actor.step()
            polyak_update(target, params, settings.polyak)
    theta = {k: v.detach() for k, v in params.items()}
    return model, theta, Trajectories.cat(parts), torch.cat(owners), curve
