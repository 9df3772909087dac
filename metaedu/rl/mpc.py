"""Model-predictive control: plan H steps ahead through a learned model, execute the first action, replan.

At every step the controller of Nagabandi et al. (Alg. 2, ``controller(theta', r, H, n_A)``) picks

    a_t = first action of  argmax_{a_t..a_{t+H-1}}  sum_{h=0}^{H-1} r(s_h, a_h, s_{h+1}),   s_{h+1} = f(s_h, a_h)

over action sequences, with the model's mean prediction as ``f``. Two ways to search:

* **random shooting**: draw ``n_A`` = ``candidates`` sequences uniformly in the action box and
  keep the best one;
* **the cross-entropy method** (CEM): draw from a Gaussian over sequences, refit it to the best
  ``elite`` fraction, repeat ``iterations`` times; its mean's first action is executed.

Every environment copy plans at once: states ``[B, obs]``, candidates ``[B, n_A, H, act]``, and
the model is called on ``[B, n_A, ...]`` (each copy may have its own adapted weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from metaedu.runtime import check_settings

#: predict(obs [B, n, obs], actions [B, n, act]) -> next obs [B, n, obs]
Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: reward(obs, actions, next_obs) -> [B, n]
Reward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Planner:
    """How Alg. 2's ``controller`` searches: horizon H, n_A candidates, random shooting or CEM.

    Built from a method's settings (``GrBALSettings.planner()``); not a settings class itself.
    """

    horizon: int  # H, steps planned ahead
    candidates: int  # n_A, action sequences scored per step (per CEM iteration)
    method: str = "random"  # "random" (random shooting) or "cem" (cross-entropy method)
    iterations: int = 5  # CEM refits of the sampling distribution
    elite: float = 0.1  # CEM: fraction of the candidates the distribution is refit to
    low: float = -1.0  # lower end of the action box
    high: float = 1.0  # upper end of the action box

    def __post_init__(self) -> None:
        check_settings(self, positive=("horizon", "candidates", "iterations", "elite"),
                       choices={"method": ("random", "cem")})
        if not self.elite <= 1 or self.candidates * self.elite < 1:
            raise ValueError(f"Planner.elite must keep at least one of {self.candidates} candidates and be at "
                             f"most 1, got {self.elite}")
        if not self.low < self.high:
            raise ValueError(f"Planner.low must be below high, got {self.low} and {self.high}")


def sequence_returns(predict: Predict, reward: Reward, obs: torch.Tensor, plans: torch.Tensor) -> torch.Tensor:
    """Predicted return of every candidate: ``obs [B, obs]``, ``plans [B, n, H, act]`` -> ``[B, n]``."""
    n = plans.shape[1]
    s = obs[:, None].expand(-1, n, -1)  # [B, n, obs]
    total = torch.zeros(plans.shape[:2], device=obs.device)
    for h in range(plans.shape[2]):
        a = plans[:, :, h]  # [B, n, act]
        s_next = predict(s, a)
        total = total + reward(s, a, s_next)
        s = s_next
    return total


@torch.no_grad()
def plan(predict: Predict, reward: Reward, obs: torch.Tensor, act_dim: int, settings: Planner,
         generator: torch.Generator) -> torch.Tensor:
    """The first action ``[B, act]`` of the best plan found for each copy (see the module docstring)."""
    b, n, horizon = obs.shape[0], settings.candidates, settings.horizon
    lo, hi = settings.low, settings.high
    if settings.method == "random":
        plans = lo + (hi - lo) * torch.rand(b, n, horizon, act_dim, generator=generator, device=obs.device)
        best = sequence_returns(predict, reward, obs, plans).argmax(1)  # [B]
        return plans[torch.arange(b, device=obs.device), best, 0]
    mean = torch.full((b, horizon, act_dim), (lo + hi) / 2, device=obs.device)
    std = torch.full((b, horizon, act_dim), (hi - lo) / 2, device=obs.device)
    n_elite = max(1, int(n * settings.elite))
    for _ in range(settings.iterations):
        noise = torch.randn(b, n, horizon, act_dim, generator=generator, device=obs.device)
        plans = (mean[:, None] + std[:, None] * noise).clamp(lo, hi)
        returns = sequence_returns(predict, reward, obs, plans)
        elite = plans.gather(1, returns.topk(n_elite, 1).indices[:, :, None, None].expand(-1, -1, horizon, act_dim))
        mean, std = elite.mean(1), elite.std(1, unbiased=False) + 1e-3  # refit to the elite [B, H, act]
    return mean[:, 0]
