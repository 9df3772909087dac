"""Meta-Q-Learning's experiment, part 2: adapting theta_meta to new goals in four arms (eq. 11-12), all goals
at once (every weight with a leading goal dimension). See :mod:`metaedu.rl.mql_experiment` for the arms and
the symbols.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metaedu.nn.functional import Params
from metaedu.rl.envs import PointNavigation
from metaedu.rl.mql import effective_sample_size, propensity_weights
from metaedu.rl.mql_experiment import (MQLSettings, SetContextTD3, actor_losses, contexts, critic_losses, polyak_update,
                                      run_episodes)
from metaedu.rl.rollout import Trajectories

ARMS = ("meta", "new_only", "uniform", "weighted", "mql")
NAMES = {"meta": "meta-trained, no adaptation", "new_only": "adapted on new data only",
         "uniform": "+ old buffer, weight 1", "weighted": "+ old buffer weighted by beta",
         "mql": "MQL: + weighted old buffer + proximal term"}
#: seeds of test goals are offset by this much from the caller's seed
TEST_OFFSET = 30_000


def transition_features(episodes: Trajectories, max_action: float) -> torch.Tensor:
    """``(s, a, r, s')`` of every transition, ``[episodes, H, 7]`` (what the propensity score reads)."""
    return torch.cat([episodes.obs[:, :-1], episodes.actions / max_action, episodes.rewards[..., None],
                      episodes.obs[:, 1:]], -1)


@torch.no_grad()
def propensity_features(model: SetContextTD3, theta: Params, episodes: Trajectories, max_action: float) -> torch.Tensor:
    """What the propensity score reads for each transition ``[episodes, H, 7 + context]``: the transition
    ``(s, a, r, s')`` and theta_meta's context after it, ``z_{t+1}`` (MQL's classifier reads the context)."""
    z = contexts(model, theta, episodes.obs[None], episodes.actions[None], episodes.rewards[None], max_action)[0]
    return torch.cat([transition_features(episodes, max_action), z[:, 1:]], -1)


def proximal_per_task(params: Params, anchor: Params, keys: list[str]) -> torch.Tensor:
    """``1/2 ||theta_g - theta_meta||^2`` over the entries ``keys``, for every task g: ``[tasks]``."""
    return 0.5 * sum(((params[k] - anchor[k]) ** 2).flatten(1).sum(1) for k in keys)


@dataclass
class AdaptationResult:
    """Returns on the test goals of every arm (``[G]`` each, same goals), and the weights behind MQL's arm."""

    returns: dict[str, torch.Tensor]  # arm -> [G] return of one deterministic episode after adapting
    ess: torch.Tensor  # [G] effective sample size of beta over the old buffer
    weights: torch.Tensor  # [G, n_old_episodes, H] beta of every old transition, per goal
    new_data: Trajectories  # the new goals' episodes (goal-major, new_episodes each)


def adapt(model: SetContextTD3, theta: Params, old: Trajectories, goals: torch.Tensor, settings: MQLSettings,
          seed: int, arms: tuple[str, ...] = ARMS) -> AdaptationResult:
    """Collect ``new_episodes`` on each goal with theta_meta, adapt in every arm of ``arms`` and score each."""
    g, device = goals.shape[0], goals.device
    generator = torch.Generator(device).manual_seed(seed)
    max_action = PointNavigation(1).max_action
    new = run_episodes(model, theta, goals, settings.new_episodes, settings, generator, settings.explore_noise)
    old_f = propensity_features(model, theta, old, max_action)  # [N, H, d]
    new_f = propensity_features(model, theta, new, max_action)
    new_f = new_f.reshape(g, -1, new_f.shape[-1])  # [G, E H, d]
    beta = torch.stack([propensity_weights(new_f[i], old_f.flatten(0, 1), clip=settings.clip) for i in range(g)])
    ess = torch.stack([effective_sample_size(b) for b in beta])
    beta = beta.view(g, *old_f.shape[:2])  # [G, N, H]
    lam = 1 - ess  # [G]
    anchor = {k: v.expand(g, *v.shape[1:]) for k, v in theta.items()}
    actor_keys = [k for k in theta if k.startswith("actor.")]
    critic_keys = [k for k in theta if not k.startswith("actor.")]
    returns = {}
    for arm in arms:
        if arm not in ARMS:
            raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
        params = anchor
        if arm != "meta":
            params = adapted(model, anchor, old, new, beta, lam, arm, settings, generator, actor_keys, critic_keys)
        score_gen = torch.Generator(device).manual_seed(seed + 1)
        returns[arm] = run_episodes(model, params, goals, 1, settings, score_gen).returns()
    return AdaptationResult(returns, ess, beta, new)


def adapted(model, anchor: Params, old: Trajectories, new: Trajectories, beta, lam, arm: str, settings: MQLSettings,
            generator: torch.Generator, actor_keys: list[str], critic_keys: list[str]) -> Params:
    """``adapt_steps`` of TD3 per goal from theta_meta in one arm (see the module docstring)."""
    g = lam.shape[0]
    max_action = PointNavigation(1).max_action
    params = {k: v.detach().clone().requires_grad_() for k, v in anchor.items()}
    target = {k: v.detach().clone() for k, v in anchor.items()}
    opt_critic = torch.optim.Adam([params[k] for k in critic_keys], lr=settings.adapt_lr)
    opt_actor = torch.optim.Adam([params[k] for k in actor_keys], lr=settings.adapt_lr)
    reuse = arm in ("uniform", "weighted", "mql")
    for i in range(settings.adapt_steps):
        pick = torch.randint(old.obs.shape[0], (g, settings.old_batch_episodes), generator=generator,
                             device=lam.device)  # [G, B] old episodes, each goal its own
        batch = Trajectories(old.obs[pick].flatten(0, 1), old.actions[pick].flatten(0, 1),
                             old.rewards[pick].flatten(0, 1))
        w = beta.gather(1, pick[..., None].expand(-1, -1, beta.shape[-1])).flatten(1) if arm in ("weighted", "mql") else 1.0

        c = critic_losses(model, params, target, new, g, settings, generator, max_action).mean(1)  # [G]
        if reuse:
            c = c + (w * critic_losses(model, params, target, batch, g, settings, generator, max_action)).mean(1)
        if arm == "mql":
            c = c + lam * proximal_per_task(params, anchor, critic_keys)
        opt_critic.zero_grad(set_to_none=True)
        c.sum().backward(inputs=[params[k] for k in critic_keys])
        opt_critic.step()
        if i % settings.policy_delay == 0:
            actor = actor_losses(model, params, new, g, max_action).mean(1)
            if reuse:
                actor = actor + (w * actor_losses(model, params, batch, g, max_action)).mean(1)
            if arm == "mql":
                actor = actor + lam * proximal_per_task(params, anchor, actor_keys)
            actor = actor.sum()
            opt_actor.zero_grad(set_to_none=True)
            actor.backward(inputs=[params[k] for k in actor_keys])
            opt_actor.step()
            polyak_update(target, params, settings.polyak)
    return {k: v.detach() for k, v in params.items()}


def test_goals(settings: MQLSettings, seed: int, device="cpu") -> torch.Tensor:
    """New goals (a seed apart from training's)."""
    return PointNavigation.sample_goals(settings.test_goals, torch.Generator(device).manual_seed(seed + TEST_OFFSET),
                                        device)
