"""Families of regression tasks, sampled as batches.

Each sampler returns tensors with a leading task dimension, so a meta-batch is
one call: ``x_support`` ``[tasks, k_shot, 1]``, ``y_support`` ``[tasks, k_shot, 1]``,
``x_query`` ``[tasks, n_query, 1]``, ``y_query`` ``[tasks, n_query, 1]``, and the
task parameters (amplitude, phase, ...) for plotting the true function.

* **Sinusoids** (Finn et al. 2017): y = A sin(x - b), A in [0.1, 5], b in [0, pi],
  x in [-5, 5].
* **Lines or sines** (Finn et al. 2018, PLATIPUS): half the tasks are sinusoids,
  half lines y = a x + c (a, c in [-3, 3]); a few points may fit both, which makes
  the task ambiguous.
* **Quadratics** (Andrychowicz et al. 2016): f(theta) = ||W theta - y||^2 with W
  (10 x 10) and y (10) i.i.d. standard normal, the optimizee of the learned-optimizer lecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from metaedu.runtime import get_device

#: Finn et al.'s sinusoid family.
AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
INPUT_RANGE = (-5.0, 5.0)
#: Slope and intercept range of the lines in lines-or-sines.
LINE_RANGE = (-3.0, 3.0)


@dataclass
class RegressionTasks:
    """A batch of regression tasks; ``params`` holds each task's defining numbers ``[tasks, ...]``."""

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def tasks(self) -> int:
        return self.x_support.shape[0]

    def to(self, device) -> "RegressionTasks":
        return RegressionTasks(
            self.x_support.to(device), self.y_support.to(device), self.x_query.to(device), self.y_query.to(device),
            {k: v.to(device) for k, v in self.params.items()},
        )


def _uniform(low: float, high: float, shape, generator, device) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * (high - low) + low).to(device)


def _check(tasks: int, k_shot: int, n_query: int) -> None:
    if tasks < 1 or k_shot < 1 or n_query < 0:
        raise ValueError(f"need tasks >= 1, k_shot >= 1 and n_query >= 0, got {tasks}, {k_shot}, {n_query}")


class SinusoidTasks:
    """Finn et al.'s sinusoid regression tasks."""

    def __init__(self, k_shot: int = 10, n_query: int = 10, device="cpu", seed: int = 0) -> None:
        _check(1, k_shot, n_query)
        self.k_shot, self.n_query = k_shot, n_query
        self.device = get_device(device)  # a device this machine lacks is a clear error
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def function(x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """y = A sin(x - b), broadcasting a task's ``[tasks]`` parameters over ``x`` ``[tasks, n, 1]``."""
        return amplitude[:, None, None] * torch.sin(x - phase[:, None, None])

    def sample(self, tasks: int = 1) -> RegressionTasks:
        _check(tasks, self.k_shot, self.n_query)
        g, dev = self.generator, self.device
        amplitude = _uniform(*AMPLITUDE_RANGE, (tasks,), g, dev)
        phase = _uniform(*PHASE_RANGE, (tasks,), g, dev)
        x = _uniform(*INPUT_RANGE, (tasks, self.k_shot + self.n_query, 1), g, dev)
        y = self.function(x, amplitude, phase)
        k = self.k_shot
        return RegressionTasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:], {"amplitude": amplitude, "phase": phase})


class LinesOrSinesTasks:
    """Ambiguous tasks: each is a sinusoid or a line, with equal probability.

    ``support_range`` draws the support points from a narrower x range than the
    query points (which always span :data:`INPUT_RANGE`): a few points close
    together fit a line and a sinusoid alike, so the task is ambiguous (PLATIPUS's
    regression setting). ``None`` (the default) draws both sets from the full range.
    """

    def __init__(self, k_shot: int = 5, n_query: int = 10, noise_std: float = 0.0, device="cpu", seed: int = 0,
                 support_range: tuple[float, float] | None = None) -> None:
        _check(1, k_shot, n_query)
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if support_range is not None:
            low, high = support_range
            if not (INPUT_RANGE[0] <= low < high <= INPUT_RANGE[1]):
                raise ValueError(f"support_range must be an interval (low < high) inside {INPUT_RANGE}, got {support_range}")
        self.k_shot, self.n_query, self.noise_std = k_shot, n_query, noise_std
        self.support_range = support_range
        self.device = get_device(device)
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def function(x, is_sine, amplitude, phase, slope, intercept) -> torch.Tensor:
        sine = amplitude[:, None, None] * torch.sin(x - phase[:, None, None])
        line = slope[:, None, None] * x + intercept[:, None, None]
        return torch.where(is_sine[:, None, None], sine, line)

    def sample(self, tasks: int = 1) -> RegressionTasks:
        _check(tasks, self.k_shot, self.n_query)
        g, dev = self.generator, self.device
        is_sine = (torch.rand(tasks, generator=g) < 0.5).to(dev)
        amplitude = _uniform(*AMPLITUDE_RANGE, (tasks,), g, dev)
        phase = _uniform(*PHASE_RANGE, (tasks,), g, dev)
        slope = _uniform(*LINE_RANGE, (tasks,), g, dev)
        intercept = _uniform(*LINE_RANGE, (tasks,), g, dev)
        if self.support_range is None:
            x = _uniform(*INPUT_RANGE, (tasks, self.k_shot + self.n_query, 1), g, dev)
        else:
            x = torch.cat([_uniform(*self.support_range, (tasks, self.k_shot, 1), g, dev),
                           _uniform(*INPUT_RANGE, (tasks, self.n_query, 1), g, dev)], 1)
        y = self.function(x, is_sine, amplitude, phase, slope, intercept)
        if self.noise_std:
            y = y + self.noise_std * torch.randn(y.shape, generator=g).to(dev)
        k = self.k_shot
        params = {"is_sine": is_sine, "amplitude": amplitude, "phase": phase, "slope": slope, "intercept": intercept}
        return RegressionTasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:], params)


@dataclass
class Quadratics:
    """A batch of quadratic functions f(theta) = ||W theta - y||^2 (Andrychowicz et al.)."""

    W: torch.Tensor  # [tasks, dim, dim]
    y: torch.Tensor  # [tasks, dim]

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """f for each task: ``theta`` ``[tasks, dim]`` -> ``[tasks]``."""
        residual = torch.einsum("tij,tj->ti", self.W, theta) - self.y
        return (residual**2).sum(-1)

    def minimum(self) -> torch.Tensor:
        """The least-squares minimiser of each task, ``[tasks, dim]`` (a closed form to test against)."""
        return torch.linalg.lstsq(self.W, self.y[..., None]).solution[..., 0]


class QuadraticTasks:
    """Random 10-dimensional quadratics with W and y i.i.d. standard normal."""

    def __init__(self, dim: int = 10, device="cpu", seed: int = 0) -> None:
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        self.dim = dim
        self.device = get_device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, tasks: int = 1) -> Quadratics:
        if tasks < 1:
            raise ValueError(f"tasks must be at least 1, got {tasks}")
        W = torch.randn(tasks, self.dim, self.dim, generator=self.generator).to(self.device)
        y = torch.randn(tasks, self.dim, generator=self.generator).to(self.device)
        return Quadratics(W, y)
