"""A small, honest version of meta-learned curiosity (Alet, Schneider, Lozano-Perez & Kaelbling, ICLR 2020).

Alet et al. search a space of *programs* that compute an intrinsic reward from the agent's experience,
and score each program by the extrinsic return of agents trained with it. Here:

* **environments**: sparse-reward grid worlds (:class:`GridWorlds`): the agent starts in a corner, the only
  reward (1) is in one cell placed at random far away, episodes end there or after ``max_steps``;
  many copies (agents x environments) are stepped together as tensors;
* **the inner RL algorithm**: tabular Q-learning with epsilon-greedy exploration, its reward
  ``r + weight * c(s')`` with ``c`` the curiosity module;
* **the space of modules** (:data:`PRIMITIVES`), each computed for all copies at once, normalised per
  copy by its running maximum, and the *programs* the search tries: no curiosity, each primitive,
  and the mean of every pair:

  - ``count``: ``1 / sqrt(N(s'))``, visit counts on the grid;
  - ``forward``: the squared error of an online linear forward model predicting the next cell's
    coordinates from the cell and the action (prediction error: Pathak et al.'s idea);
  - ``random_network``: the squared error of an online linear predictor of a fixed random
    feature map of the cell (random network distillation: Burda et al.);
  - ``neighbour``: the mean distance from ``s'`` to its ``k`` nearest cells among the last
    ``memory`` visited (novelty by nearest neighbour);

* **the intrinsic reward** is ``lambda * (c - 1)`` with ``c`` in ``[0, 1]`` the program's normalised value:
  the familiar costs, the novel costs nothing. (With Q-values starting at 0, a *positive* bonus on
  visited cells pulls the agent back to them; we measured that first.) The shift alone is a cost per
  step, which explores by itself, so the search includes the control program ``constant``
  (``c = 0`` everywhere) to tell the modules' effect apart from the shift's;
* **the search** (:func:`search`): every program runs one lifetime of ``inner_episodes * max_steps``
  steps on ``environments`` environments x ``seeds`` agents (the same goals and seeds for every program,
  so scores are paired), and programs are ranked by the mean extrinsic return; the cost is the number
  of environment steps and the CPU seconds spent.

Symbols: epsilon = ``epsilon``, alpha = ``lr``, gamma = ``discount``, lambda = ``weight`` (intrinsic reward scale).
"""

from __future__ import annotations

import itertools
import resource
from dataclasses import dataclass, field

import torch

from metaedu.runtime import check_settings

PRIMITIVES = ("count", "forward", "random_network", "neighbour")
#: a control program: intrinsic value 0 everywhere, so its reward is the shift alone (a cost per step)
CONSTANT = "constant"
MOVES = torch.tensor([[0, 1], [0, -1], [1, 0], [-1, 0]])  # right, left, down, up as (row, column) steps


@dataclass
class CuriositySettings:
    """The grid worlds, the inner Q-learning runs and the search."""

    size: int = 12  # the grid is size x size
    max_steps: int = 60  # steps per episode
    inner_episodes: int = 30  # an agent's lifetime is inner_episodes * max_steps steps
    environments: int = 8  # grid worlds (goal positions) every program is scored on
    seeds: int = 4  # agents per environment
    epsilon: float = 0.1  # epsilon-greedy exploration
    lr: float = 0.5  # alpha, Q-learning's step
    discount: float = 0.95  # gamma
    weight: float = 0.1  # lambda, scale of the intrinsic reward
    memory: int = 64  # neighbour: visited cells remembered
    neighbours: int = 4  # neighbour: k
    features: int = 8  # random_network: size of the random feature map
    model_lr: float = 0.1  # forward and random_network: step of the online predictors
    checkpoint: bool = field(default=False, repr=False)  # nothing is trained across runs; kept for the convention

    @classmethod
    def quick(cls) -> "CuriositySettings":
        return cls()

    @classmethod
    def full(cls) -> "CuriositySettings":
        """Larger grids, longer lifetimes, more environments and agents behind every score."""
        return cls(size=20, max_steps=150, inner_episodes=100, environments=32, seeds=8, checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("size", "max_steps", "inner_episodes", "environments", "seeds", "lr", "discount",
                                       "memory", "neighbours", "features", "model_lr"),
                       non_negative=("epsilon", "weight"))
        if self.size < 3 or self.epsilon > 1 or self.discount > 1 or self.neighbours > self.memory:
            raise ValueError(f"CuriositySettings: size must be at least 3, epsilon and discount at most 1, and "
                             f"neighbours at most memory; got size={self.size}, epsilon={self.epsilon}, "
                             f"discount={self.discount}, neighbours={self.neighbours}, memory={self.memory}")


class GridWorlds:
    """``n`` grid worlds stepped together: positions ``[n, 2]``, goals ``[n, 2]``, start at (0, 0)."""

    def __init__(self, goals: torch.Tensor, size: int, max_steps: int) -> None:
        if goals.dim() != 2 or goals.shape[1] != 2 or (goals < 0).any() or (goals >= size).any():
            raise ValueError(f"goals must be [n, 2] cells inside a {size} x {size} grid")
        self.goals, self.size, self.max_steps = goals.long(), size, max_steps
        self.position = torch.zeros_like(self.goals)
        self.t = torch.zeros(len(goals), dtype=torch.long)

    def cell(self, position: torch.Tensor) -> torch.Tensor:
        return position[..., 0] * self.size + position[..., 1]

    def reset(self, mask: torch.Tensor | None = None) -> None:
        mask = torch.ones(len(self.goals), dtype=torch.bool) if mask is None else mask
        self.position = torch.where(mask[:, None], torch.zeros_like(self.position), self.position)
        self.t = torch.where(mask, torch.zeros_like(self.t), self.t)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move (walls stop the agent); returns the extrinsic reward ``[n]`` and whether the episode ended ``[n]``."""
        self.position = (self.position + MOVES[actions]).clamp(0, self.size - 1)
        self.t = self.t + 1
        reached = (self.position == self.goals).all(1)
        return reached.float(), reached | (self.t >= self.max_steps)


def far_goals(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Goal cells in the far half of the grid (row + column >= size), uniformly among those."""
    cells = torch.tensor([(r, c) for r in range(size) for c in range(size) if r + c >= size])
    return cells[torch.randint(len(cells), (n,), generator=generator)]


class Curiosity:
    """A program: the mean of some primitives, each normalised by its running maximum per copy."""

    def __init__(self, parts: tuple[str, ...], n: int, settings: CuriositySettings, generator: torch.Generator):
        unknown = [p for p in parts if p not in (*PRIMITIVES, CONSTANT)]
        if unknown:
            raise ValueError(f"unknown primitives {unknown}; choose from {PRIMITIVES}")
        self.parts, self.s = parts, settings
        cells = settings.size**2
        self.counts = torch.zeros(n, cells)
        self.forward_w = torch.zeros(n, 2 + 4 + 1, 2)  # [copy, (row, col, action one-hot, 1), next (row, col)]
        self.random_map = torch.randn(cells, settings.features, generator=generator)  # fixed random features
        self.distill_w = torch.zeros(n, 3, settings.features)  # predictor from (row, col, 1)
        self.memory = torch.zeros(n, settings.memory, 2)
        self.filled = 0
        self.scale = {p: torch.full((n,), 1e-8) for p in parts}

    def _coords(self, cell: torch.Tensor) -> torch.Tensor:
        return torch.stack([cell // self.s.size, cell % self.s.size], -1).float() / (self.s.size - 1)

    def primitive(self, name: str, cell: torch.Tensor, action: torch.Tensor, next_cell: torch.Tensor) -> torch.Tensor:
        """One primitive's raw value for every copy ``[n]`` (and its online update)."""
        n = torch.arange(len(cell))
        x_next = self._coords(next_cell)
        if name == CONSTANT:
            return torch.zeros(len(cell))
        if name == "count":
            self.counts[n, next_cell] += 1
            return self.counts[n, next_cell].rsqrt()
        if name == "forward":
            x = torch.cat([self._coords(cell), torch.nn.functional.one_hot(action, 4).float(), torch.ones(len(cell), 1)], 1)
            error = torch.einsum("ni,nio->no", x, self.forward_w) - x_next
            self.forward_w -= self.s.model_lr * torch.einsum("ni,no->nio", x, error)
            return (error**2).sum(1)
        if name == "random_network":
            x = torch.cat([x_next, torch.ones(len(cell), 1)], 1)
            error = torch.einsum("ni,nio->no", x, self.distill_w) - self.random_map[next_cell]
            self.distill_w -= self.s.model_lr * torch.einsum("ni,no->nio", x, error)
            return (error**2).mean(1)
        # neighbour: mean distance to the k nearest remembered cells (before remembering this one)
        k = min(self.s.neighbours, max(self.filled, 1))
        if self.filled == 0:
            value = torch.ones(len(cell))
        else:
            d = (self.memory[:, :self.filled] - x_next[:, None]).norm(dim=-1)  # [n, filled]
            value = d.topk(k, dim=1, largest=False).values.mean(1)
        self.memory = torch.cat([x_next[:, None], self.memory[:, :-1]], 1)
        self.filled = min(self.filled + 1, self.s.memory)
        return value

    def __call__(self, cell: torch.Tensor, action: torch.Tensor, next_cell: torch.Tensor) -> torch.Tensor:
        if not self.parts:
            return torch.zeros(len(cell))
        total = torch.zeros(len(cell))
        for p in self.parts:
            raw = self.primitive(p, cell, action, next_cell)
            self.scale[p] = torch.maximum(self.scale[p], raw)
            total = total + raw / self.scale[p]
        return total / len(self.parts) - 1.0  # in [-1, 0]: the familiar costs, the novel costs nothing


def q_learning_update(q: torch.Tensor, cell, action, reward, next_cell, done, lr: float, discount: float) -> None:
    """``Q(s, a) += alpha (r + gamma (1 - d) max_a' Q(s', a') - Q(s, a))`` for every copy, in place."""
    n = torch.arange(len(cell))
    target = reward + discount * (~done).float() * q[n, next_cell].max(1).values
    q[n, cell, action] += lr * (target - q[n, cell, action])


def inner_run(parts: tuple[str, ...], goals: torch.Tensor, settings: CuriositySettings, seed: int):
    """Q-learning with curiosity ``parts`` on one grid world per goal, for a lifetime of
    ``inner_episodes * max_steps`` steps (an episode ends at the goal or after ``max_steps``, and the next
    one starts at once). Returns each copy's extrinsic return over its lifetime (goals reached) ``[n]`` and
    its visit counts ``[n, size * size]``."""
    generator = torch.Generator().manual_seed(seed)
    n, s = len(goals), settings
    env = GridWorlds(goals, s.size, s.max_steps)
    curiosity = Curiosity(parts, n, s, generator)
    q = torch.zeros(n, s.size**2, 4)
    returns = torch.zeros(n)
    visits = torch.zeros(n, s.size**2)
    rows = torch.arange(n)
    env.reset()
    for _ in range(s.inner_episodes * s.max_steps):
        cell = env.cell(env.position)
        greedy = (q[rows, cell] + 1e-6 * torch.rand(n, 4, generator=generator)).argmax(1)  # random tie-breaks
        explore = torch.rand(n, generator=generator) < s.epsilon
        action = torch.where(explore, torch.randint(4, (n,), generator=generator), greedy)
        reward, done = env.step(action)
        next_cell = env.cell(env.position)
        bonus = curiosity(cell, action, next_cell)
        reached = reward > 0  # only reaching the goal ends the value's bootstrap; a timeout does not
        q_learning_update(q, cell, action, reward + s.weight * bonus, next_cell, reached, s.lr, s.discount)
        visits[rows, next_cell] += 1
        returns += reward
        env.reset(done)
    return returns, visits


def programs() -> list[tuple[str, ...]]:
    """The search space: no curiosity, each primitive, and the mean of every pair of primitives."""
    return [(), (CONSTANT,), *((p,) for p in PRIMITIVES), *itertools.combinations(PRIMITIVES, 2)]


def program_name(parts: tuple[str, ...]) -> str:
    return "none" if not parts else " + ".join(parts)


@dataclass
class SearchResult:
    returns: dict[str, torch.Tensor]  # program -> extrinsic return of each inner run [environments * seeds]
    ranking: list[str]  # programs from the best mean return down
    visits: dict[str, torch.Tensor]  # program -> visit counts [size, size], summed over the first environment's agents
    env_steps: int  # environment steps the search took (every inner run together)
    cpu_seconds: float  # process CPU time the search took


def search(settings: CuriositySettings, seed: int = 0, candidates: list[tuple[str, ...]] | None = None) -> SearchResult:
    """Score every program on the same environments and agent seeds; rank them by mean extrinsic return."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = usage.ru_utime + usage.ru_stime
    goals = far_goals(settings.environments, settings.size, torch.Generator().manual_seed(seed))
    goals = goals.repeat_interleave(settings.seeds, 0)  # [environments * seeds, 2]
    results, visit_maps, steps = {}, {}, 0
    for parts in candidates or programs():
        returns, visits = inner_run(parts, goals, settings, seed)
        results[program_name(parts)] = returns
        visit_maps[program_name(parts)] = visits[:settings.seeds].sum(0).view(settings.size, settings.size)
        steps += int(visits.sum())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ranking = sorted(results, key=lambda k: float(results[k].mean()), reverse=True)
    return SearchResult(results, ranking, visit_maps, steps, usage.ru_utime + usage.ru_stime - start)
