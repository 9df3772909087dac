"""Optimizees for the learned-optimizer lecture: batches of functions of a flat parameter vector.

A *run* is a batch of functions, each started from its own point: ``theta0`` ``[tasks, n_params]``
and ``loss(theta, t)`` -> ``[tasks]`` (``t`` picks the mini-batch of step t, so every optimizer
tested on a run sees the same data in the same order). A *problem* draws runs:

* :class:`QuadraticProblem`: Andrychowicz et al.'s random 10-d quadratics ||W theta - y||^2
  (:class:`~metaedu.tasks.regression.QuadraticTasks`), started near zero;
* :class:`MLPProblem`: a small MLP classifier on a data set (scikit-learn's handwritten digits
  stand in for MNIST), each run its own initialisation and mini-batch sequence.

A problem's generators are its random state (``state_dict``/``load_state_dict``, saved in
checkpoints); :class:`LiveRun` is a run part-way through, carried across the segments of
truncated BPTT and saved too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from metaedu.runtime import get_device
from metaedu.tasks.regression import Quadratics, QuadraticTasks


class Run(Protocol):
    """A batch of optimizee functions, each run from its own starting point."""

    theta0: torch.Tensor  # [tasks, n_params]

    def loss(self, theta: torch.Tensor, t: int) -> torch.Tensor:  # [tasks, n_params] -> [tasks]
        ...


@dataclass
class QuadraticRun:
    """Quadratics f(theta) = ||W theta - y||^2 started at ``theta0`` (``t`` is ignored)."""

    functions: Quadratics
    theta0: torch.Tensor  # [tasks, dim]

    def loss(self, theta: torch.Tensor, t: int = 0) -> torch.Tensor:
        return self.functions(theta)  # [tasks]


class QuadraticProblem:
    """The paper's family of random 10-d quadratics (sampled by :class:`QuadraticTasks`)."""

    def __init__(self, dim: int = 10, init_std: float = 0.01, device="cpu", seed: int = 0) -> None:
        self.tasks = QuadraticTasks(dim=dim, device=device, seed=seed)
        self.init_std = init_std
        self.device = get_device(device)
        self.generator = torch.Generator().manual_seed(seed + 7919)

    @classmethod
    def from_settings(cls, s, device="cpu", seed: int = 0) -> "QuadraticProblem":
        """From the learned optimizer's settings (``quad_dim``, ``quad_init_std``)."""
        return cls(s.quad_dim, s.quad_init_std, device, seed)

    def sample(self, tasks: int, steps: int | None = None) -> QuadraticRun:
        functions = self.tasks.sample(tasks)
        theta0 = self.init_std * torch.randn(tasks, self.tasks.dim, generator=self.generator)
        return QuadraticRun(functions, theta0.to(self.device))

    def state_dict(self) -> dict:
        """The random state: where the next functions and starting points will be drawn from."""
        return {"functions": self.tasks.generator.get_state(), "theta0": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.tasks.generator.set_state(state["functions"])
        self.generator.set_state(state["theta0"])

    def checkpoint_inputs(self) -> tuple:
        """What decides the runs this problem will draw (for a checkpoint's name)."""
        return ("quadratics", self.tasks.dim, self.init_std, self.state_dict())


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
}


def mlp_shapes(sizes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shapes of (W1, b1, W2, b2, ...) for layer sizes ``(in, hidden..., out)``."""
    shapes: list[tuple[int, ...]] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        shapes += [(a, b), (b,)]
    return shapes


def mlp_logits(theta: torch.Tensor, x: torch.Tensor, sizes: tuple[int, ...], activation: str) -> torch.Tensor:
    """A batch of MLPs given by flat parameters: ``theta [tasks, n]``, ``x [tasks, B, in]`` -> ``[tasks, B, out]``."""
    act = ACTIVATIONS[activation]
    offset, h = 0, x
    n_layers = len(sizes) - 1
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = theta[:, offset : offset + a * b].reshape(-1, a, b)  # [tasks, a, b]
        offset += a * b
        bias = theta[:, offset : offset + b]  # [tasks, b]
        offset += b
        h = torch.bmm(h, W) + bias[:, None, :]  # [tasks, B, b]
        if i < n_layers - 1:
            h = act(h)
    return h


@dataclass
class MLPRun:
    """Runs of an MLP classifier, each with its own initialisation and mini-batch sequence.

    ``batches[t]`` ``[tasks, batch]`` holds the example indices of step ``t``, so every
    optimizer tested on this run sees the same data in the same order.
    """

    x: torch.Tensor  # [examples, in]
    y: torch.Tensor  # [examples]
    sizes: tuple[int, ...]
    activation: str
    theta0: torch.Tensor  # [tasks, n_params]
    batches: torch.Tensor  # [steps + 1, tasks, batch]

    def loss(self, theta: torch.Tensor, t: int) -> torch.Tensor:
        if not 0 <= t < self.batches.shape[0]:
            raise IndexError(f"this run has mini-batches for steps 0..{self.batches.shape[0] - 1}, not step {t}")
        idx = self.batches[t]  # [tasks, batch]
        logits = mlp_logits(theta, self.x[idx], self.sizes, self.activation)  # [tasks, batch, classes]
        ce = nn.functional.cross_entropy(logits.flatten(0, 1), self.y[idx].flatten(), reduction="none")
        return ce.view(idx.shape).mean(1)  # [tasks]

    def accuracy(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Accuracy (%) of each task's network on all of ``x``: ``[tasks]``."""
        xs = x[None].expand(theta.shape[0], *x.shape)
        pred = mlp_logits(theta, xs, self.sizes, self.activation).argmax(-1)
        return (pred == y[None]).float().mean(1) * 100


class MLPProblem:
    """Runs of a small MLP on a classification data set (the paper's MNIST experiment).

    Args:
        x, y: features ``[examples, in]`` (float) and integer labels ``[examples]``.
        hidden: hidden layer sizes, ``(20,)`` in the paper; ``(40,)`` and ``(20, 20)`` test generalisation.
        activation: ``"sigmoid"`` (paper), ``"relu"`` (where the paper's optimizer fails) or ``"tanh"``.
        batch: mini-batch size per step.
    Weights start as N(0, 1/fan_in), biases at zero.
    """

    def __init__(
        self,
        x,
        y,
        hidden: tuple[int, ...] = (20,),
        activation: str = "sigmoid",
        batch: int = 128,
        device="cpu",
        seed: int = 0,
    ) -> None:
        x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
        if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"need x [examples, features] and y [examples], got {tuple(x.shape)} and {tuple(y.shape)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if batch < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"batch and hidden sizes must be positive, got batch={batch}, hidden={hidden}")
        self.device = get_device(device)
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.sizes = (x.shape[1], *hidden, int(y.max()) + 1)
        self.activation, self.batch = activation, batch
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def n_params(self) -> int:
        return sum(torch.Size(s).numel() for s in mlp_shapes(self.sizes))

    def init_theta(self, tasks: int) -> torch.Tensor:
        parts = []
        for shape in mlp_shapes(self.sizes):
            if len(shape) == 2:
                parts.append(torch.randn(tasks, shape[0] * shape[1], generator=self.generator) / shape[0] ** 0.5)
            else:
                parts.append(torch.zeros(tasks, shape[0]))
        return torch.cat(parts, 1).to(self.device)  # [tasks, n_params]

    def sample(self, tasks: int, steps: int) -> MLPRun:
        if tasks < 1 or steps < 1:
            raise ValueError(f"need tasks >= 1 and steps >= 1, got {tasks}, {steps}")
        n = self.x.shape[0]
        batches = torch.randint(0, n, (steps + 1, tasks, self.batch), generator=self.generator).to(self.device)
        return MLPRun(self.x, self.y, self.sizes, self.activation, self.init_theta(tasks), batches)

    def state_dict(self) -> dict:
        """The random state: where the next initialisations and mini-batches will be drawn from."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def checkpoint_inputs(self) -> tuple:
        """What decides the runs this problem will draw (for a checkpoint's name)."""
        return ("mlp", self.x, self.y, self.sizes, self.activation, self.batch, self.state_dict())


class LiveRun:
    """The run being optimised across the segments of truncated BPTT: the functions, theta and the
    LSTM state (detached), carried from one meta-update to the next and saved in checkpoints, so
    that a run interrupted mid-way resumes mid-way."""

    def __init__(self, device) -> None:
        self.device = torch.device(device)
        self.run, self.theta, self.state = None, None, None

    def start(self, run: Run) -> None:
        self.run, self.theta, self.state = run, run.theta0, None

    def state_dict(self) -> dict:
        return {"run": self.run, "theta": self.theta, "state": self.state}

    def load_state_dict(self, saved: dict) -> None:  # checkpoints are read onto the CPU: back to the device
        self.run, self.theta, self.state = (_to_device(saved[k], self.device) for k in ("run", "theta", "state"))


def _to_device(obj, device):
    """Tensors inside dataclasses, lists and tuples moved to ``device`` (anything else unchanged)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(
            obj, **{f.name: _to_device(getattr(obj, f.name), device) for f in dataclasses.fields(obj) if f.init}
        )
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(x, device) for x in obj)
    return obj
