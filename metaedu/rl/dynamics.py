"""Learned dynamics models p_theta(s' | s, a) and the replay buffer they learn from (Nagabandi et al. 2019, sec. 3-4).

Model-based RL learns the transition distribution and plans with it (:mod:`metaedu.rl.mpc`).
The model here is a Gaussian on the *state difference*, with normalised inputs and targets::

    x = (concat(s, a) - mean_x) / std_x                       # normalised input
    mu, log sigma^2 = f_theta(x)                              # an MLP with 2 * obs_dim outputs
    p_theta(s' | s, a) = N((s' - s - mean_d) / std_d; mu, diag sigma^2)

and its loss is the negative log-likelihood of the normalised differences, averaged over the
transitions (the slides' ``L = -1/K sum_k log p_theta(s_{k+1} | s_k, a_k)``; the constant
``log std_d`` of the change of variables is left out). ``log sigma^2`` is bounded softly
between ``min_log_var`` and ``max_log_var``, so no transition can buy a tiny loss with a
vanishing variance.

Symbols and names: theta = the MLP's parameters (``DynamicsModel.net``); s, a, s' = ``obs``,
``actions``, ``next_obs``; M = ``past`` (the steps that adapt the model), K = ``future`` (the
steps it is scored on); tau(t - M, t - 1) and tau(t, t + K - 1) = :class:`Segments`'
``support`` and ``query`` halves.

:class:`RecurrentDynamics` is ReBAL's model: a GRU reads the last M transitions and its state
``h`` is a second input of the predictor, so the update rule ``u_psi`` is the GRU's gating.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.nn.backbones import MLP
from metaedu.nn.gaussian import log_density
from metaedu.rl.rollout import Trajectories


class Normaliser(nn.Module):
    """Input and target statistics of a data set of transitions (buffers: saved with the model)."""

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.register_buffer("x_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("x_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("d_mean", torch.zeros(obs_dim))
        self.register_buffer("d_std", torch.ones(obs_dim))

    @torch.no_grad()
    def fit(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> "Normaliser":
        """Set the statistics from transitions ``[..., obs_dim]``, ``[..., act_dim]``, ``[..., obs_dim]``."""
        x = torch.cat([obs, actions], -1).reshape(-1, self.obs_dim + self.act_dim)
        d = (next_obs - obs).reshape(-1, self.obs_dim)
        if x.shape[0] < 2:
            raise ValueError("fitting the normaliser needs at least two transitions")
        self.x_mean.copy_(x.mean(0))
        self.x_std.copy_(x.std(0).clamp_min(1e-6))
        self.d_mean.copy_(d.mean(0))
        self.d_std.copy_(d.std(0).clamp_min(1e-6))
        return self

    def inputs(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return (torch.cat([obs, actions], -1) - self.x_mean) / self.x_std

    def targets(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return (next_obs - obs - self.d_mean) / self.d_std

    def next_obs(self, obs: torch.Tensor, mean_target: torch.Tensor) -> torch.Tensor:
        """The next state whose normalised difference is ``mean_target``."""
        return obs + mean_target * self.d_std + self.d_mean


def bounded_log_var(raw: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``raw`` squashed smoothly between ``low`` and ``high`` (softplus on both sides, as in PETS).

    The result is above ``low`` and at most ``high + log(1 + exp(-(high - low)))`` (the lower
    softplus adds that much at the top: 1.2e-4 for the defaults -8 and 1); in the middle of the
    range it is close to ``raw``.
    """
    upper = high - F.softplus(high - raw)
    return low + F.softplus(upper - low)


def gaussian_nll(out: torch.Tensor, y: torch.Tensor, low: float = -8.0, high: float = 1.0) -> torch.Tensor:
    """Mean negative log-likelihood per task: ``out [tasks, n, 2D]`` (mean, raw log-variance), ``y [tasks, n, D]``
    -> ``[tasks]`` (this is the loss the MAML core adapts with)."""
    d = y.shape[-1]
    if out.shape[-1] != 2 * d or out.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"outputs {tuple(out.shape)} must be [.., 2 * {d}] for targets {tuple(y.shape)}")
    mu, raw = out[..., :d], out[..., d:]
    return -log_density(y, mu, bounded_log_var(raw, low, high)).mean(-1)


class DynamicsModel(nn.Module):
    """GrBAL's (and MB's) model: an MLP from normalised (s, a) to a Gaussian over the normalised state change."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.norm = Normaliser(obs_dim, act_dim)
        self.net = MLP((obs_dim + act_dim, *hidden, 2 * obs_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return gaussian_nll(out, y)


class RecurrentDynamics(nn.Module):
    """ReBAL's model: a GRU summarises the last M transitions into ``h``; the predictor reads (s, a, h).

    Shapes: ``x_past [B, M, obs + act]`` and ``y_past [B, M, obs]`` (normalised) give ``h [B, hidden]``;
    ``x [B, n, obs + act]`` with ``h`` gives ``out [B, n, 2 * obs]``.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64), memory: int = 32) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.norm = Normaliser(obs_dim, act_dim)
        self.gru = nn.GRU(2 * obs_dim + act_dim, memory, batch_first=True)
        self.net = MLP((obs_dim + act_dim + memory, *hidden, 2 * obs_dim))

    def context(self, x_past: torch.Tensor, y_past: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(torch.cat([x_past, y_past], -1))  # h: [1, B, memory]
        return h[0]

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, h[:, None].expand(-1, x.shape[1], -1)], -1))


# ----------------------------------------------------------------------------- data


@dataclass
class Segments:
    """``n`` pairs of consecutive segments, normalised: the past ``M`` steps (support) and the next ``K`` (query)."""

    x_support: torch.Tensor  # [n, M, obs + act]  tau(t - M, t - 1)
    y_support: torch.Tensor  # [n, M, obs]
    x_query: torch.Tensor  # [n, K, obs + act]  tau(t, t + K - 1)
    y_query: torch.Tensor  # [n, K, obs]

    @property
    def tasks(self) -> int:
        return self.x_support.shape[0]


class SegmentBuffer:
    """Whole episodes, so that consecutive transitions of one episode (one task) can be cut into segments."""

    def __init__(self) -> None:
        self.data: Trajectories | None = None

    def add(self, trajectories: Trajectories) -> None:
        self.data = trajectories if self.data is None else Trajectories.cat([self.data, trajectories])

    @property
    def episodes(self) -> int:
        return 0 if self.data is None else self.data.obs.shape[0]

    def transitions(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every transition, flattened: ``obs [N, obs]``, ``actions [N, act]``, ``next_obs [N, obs]``."""
        d = self._need()
        return d.obs[:, :-1].flatten(0, 1), d.actions.flatten(0, 1), d.obs[:, 1:].flatten(0, 1)

    def sample_transitions(self, n: int, norm: Normaliser, generator: torch.Generator):
        """``n`` random transitions as normalised ``(x [n, obs + act], y [n, obs])``."""
        d = self._need()
        e = torch.randint(d.obs.shape[0], (n,), generator=generator, device=d.obs.device)
        t = torch.randint(d.steps, (n,), generator=generator, device=d.obs.device)
        obs, act, nxt = d.obs[e, t], d.actions[e, t], d.obs[e, t + 1]
        return norm.inputs(obs, act), norm.targets(obs, nxt)

    def sample_segments(self, n: int, past: int, future: int, norm: Normaliser, generator: torch.Generator) -> Segments:
        """``n`` random (``tau(t - M, t - 1)``, ``tau(t, t + K - 1)``) pairs, each from one episode."""
        d = self._need()
        if past + future > d.steps:
            raise ValueError(f"M + K = {past + future} steps do not fit in episodes of {d.steps} steps")
        e = torch.randint(d.obs.shape[0], (n, 1), generator=generator, device=d.obs.device)
        start = torch.randint(d.steps - past - future + 1, (n, 1), generator=generator, device=d.obs.device)
        t = start + torch.arange(past + future, device=d.obs.device)  # [n, M + K]
        obs, act, nxt = d.obs[e, t], d.actions[e, t], d.obs[e, t + 1]
        x, y = norm.inputs(obs, act), norm.targets(obs, nxt)
        return Segments(x[:, :past], y[:, :past], x[:, past:], y[:, past:])

    def _need(self) -> Trajectories:
        if self.data is None:
            raise ValueError("the buffer is empty: add trajectories first")
        return self.data

    def state_dict(self) -> dict:
        d = self.data
        return {} if d is None else {"obs": d.obs, "actions": d.actions, "rewards": d.rewards}

    def load_state_dict(self, state: dict) -> None:
        self.data = Trajectories(state["obs"], state["actions"], state["rewards"]) if state else None
