"""Running a controller in a batched environment, and the trajectories it leaves.

A trajectory segment in the slides' notation is ``tau(i, j) = (s_i, a_i, ..., s_j, a_j, s_{j+1})``;
:class:`Trajectories` holds whole episodes of ``B`` environment copies at once, and
:meth:`Trajectories.segment` cuts ``tau(i, j)`` out of every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Trajectories:
    """Episodes of ``B`` copies: ``obs [B, T + 1, obs_dim]``, ``actions [B, T, act_dim]``, ``rewards [B, T]``."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor

    def __post_init__(self) -> None:
        b, t = self.actions.shape[:2]
        if self.obs.shape[:2] != (b, t + 1) or self.rewards.shape != (b, t):
            raise ValueError(f"inconsistent trajectories: obs {tuple(self.obs.shape)}, actions "
                             f"{tuple(self.actions.shape)}, rewards {tuple(self.rewards.shape)} (need T + 1 observations)")

    @property
    def steps(self) -> int:
        return self.actions.shape[1]

    def segment(self, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``tau(i, j)``: states ``s_i..s_j``, actions ``a_i..a_j`` and next states ``s_{i+1}..s_{j+1}``."""
        if not 0 <= i <= j < self.steps:
            raise ValueError(f"segment ({i}, {j}) is outside the {self.steps} steps")
        return self.obs[:, i:j + 1], self.actions[:, i:j + 1], self.obs[:, i + 1:j + 2]

    def returns(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Sum of rewards from step ``start`` up to (not including) ``end``, per copy ``[B]``."""
        return self.rewards[:, start:end].sum(1)

    @staticmethod
    def cat(parts: list["Trajectories"]) -> "Trajectories":
        """Stack episodes of several batches (same length) along the copy dimension."""
        return Trajectories(*(torch.cat([getattr(p, k) for p in parts]) for k in ("obs", "actions", "rewards")))


#: A controller maps (step t, observations so far [B, t + 1, obs], actions so far [B, t, act]) to actions [B, act].
Controller = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def rollout(env, controller: Controller, steps: int | None = None, seed: int | None = None,
            with_rewards: bool = False) -> Trajectories:
    """Reset ``env`` (a :class:`~metaedu.rl.envs.TorchVectorEnv`) and run ``controller`` for ``steps`` steps.

    The controller sees the whole history of the episode so far, so an adaptive one (GrBAL, ReBAL,
    dynamic evaluation) can read the last ``M`` transitions. With ``with_rewards`` it is also given the
    rewards so far, ``controller(t, obs, actions, rewards [B, t])`` (a context that reads rewards, as in
    Meta-Q-Learning). ``steps`` defaults to the episode length.
    """
    steps = env.max_steps if steps is None else steps
    if not 1 <= steps <= env.max_steps:
        raise ValueError(f"steps must be between 1 and the episode length {env.max_steps}, got {steps}")
    obs, _ = env.reset(seed=seed)
    b = obs.shape[0]
    all_obs = torch.empty(b, steps + 1, obs.shape[-1], device=obs.device)
    all_actions = torch.empty(b, steps, env.single_action_space.shape[0], device=obs.device)
    rewards = torch.empty(b, steps, device=obs.device)
    all_obs[:, 0] = obs
    for t in range(steps):
        history = (t, all_obs[:, :t + 1], all_actions[:, :t]) + ((rewards[:, :t],) if with_rewards else ())
        action = controller(*history)
        obs, reward, _, _, _ = env.step(action)
        all_obs[:, t + 1], all_actions[:, t], rewards[:, t] = obs, action, reward
    return Trajectories(all_obs, all_actions, rewards)


def random_controller(act_dim: int, generator: torch.Generator, low: float = -1.0, high: float = 1.0) -> Controller:
    """Uniformly random actions (the first data of model-based RL)."""
    def act(t, obs, actions):
        b = obs.shape[0]
        return low + (high - low) * torch.rand(b, act_dim, generator=generator, device=obs.device)

    return act
