"""The six families of 2-D regression tasks of ARML (Yao et al. 2020, section 5.1).

Every task takes a point x = (x_1, x_2) in [-5, 5]^2 to a number. A task is drawn by picking one of
six families uniformly at random, then its coefficients uniformly from the family's ranges; targets
carry Gaussian noise of standard deviation 0.3 (support and query points alike). The four
one-dimensional families read x_1 only; as in the authors' released generator, their second input is
set to 1, so that every task has the same two inputs.

============================  ==============================================  ===========================================
family                        y(x)                                            coefficients
============================  ==============================================  ===========================================
sinusoid                      A sin(w x_1 + phi)                              A in [0.1, 5], w in [0.8, 1.2], phi in [0, 2 pi]
line                          a x_1 + b                                       a, b in [-3, 3]
quadratic                     a x_1^2 + b x_1 + c                             a in [-0.2, 0.2], b in [-2, 2], c in [-3, 3]
cubic                         a x_1^3 + b x_1^2 + c x_1 + d                   a in [-0.1, 0.1], b in [-0.2, 0.2],
                                                                              c in [-2, 2], d in [-3, 3]
quadratic surface             a x_1^2 + b x_2^2                               a, b in [-1, 1]
ripple                        sin(-a (x_1^2 + x_2^2)) + b                     a in [-0.2, 0.2], b in [-3, 3]
============================  ==============================================  ===========================================

A batch is a :class:`~metaedu.tasks.regression.RegressionTasks` with ``x`` ``[tasks, n, 2]`` and
``y`` ``[tasks, n, 1]``; ``params["family"]`` (``[tasks]``, an index into :data:`FAMILIES`) and
``params["coef"]`` (``[tasks, 4]``, the coefficients in the order of the table, zero-padded) say what
each task is, and ``params["clean_query"]`` holds the noiseless query targets.
"""

from __future__ import annotations

import math

import torch

from metaedu.runtime import get_device
from metaedu.tasks.regression import RegressionTasks

FAMILIES = ("sinusoid", "line", "quadratic", "cubic", "quadratic surface", "ripple")
#: Coefficient ranges of each family, in the order of the table above.
RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "sinusoid": ((0.1, 5.0), (0.8, 1.2), (0.0, 2 * math.pi)),
    "line": ((-3.0, 3.0), (-3.0, 3.0)),
    "quadratic": ((-0.2, 0.2), (-2.0, 2.0), (-3.0, 3.0)),
    "cubic": ((-0.1, 0.1), (-0.2, 0.2), (-2.0, 2.0), (-3.0, 3.0)),
    "quadratic surface": ((-1.0, 1.0), (-1.0, 1.0)),
    "ripple": ((-0.2, 0.2), (-3.0, 3.0)),
}
#: The families that read x_1 only (their x_2 is set to 1).
ONE_DIMENSIONAL = ("sinusoid", "line", "quadratic", "cubic")
INPUT_RANGE = (-5.0, 5.0)
NOISE_STD = 0.3


def family_function(x: torch.Tensor, family: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """The noiseless targets ``[tasks, n, 1]`` of tasks given by ``family`` ``[tasks]`` and ``coef`` ``[tasks, 4]``."""
    x1, x2 = x[..., 0], x[..., 1]  # [tasks, n]
    c = [coef[:, i, None] for i in range(4)]  # each [tasks, 1]
    values = torch.stack([
        c[0] * torch.sin(c[1] * x1 + c[2]),  # sinusoid
        c[0] * x1 + c[1],  # line
        c[0] * x1**2 + c[1] * x1 + c[2],  # quadratic
        c[0] * x1**3 + c[1] * x1**2 + c[2] * x1 + c[3],  # cubic
        c[0] * x1**2 + c[1] * x2**2,  # quadratic surface
        torch.sin(-c[0] * (x1**2 + x2**2)) + c[1],  # ripple
    ])  # [families, tasks, n]
    index = family.view(1, -1, 1).expand(1, *x1.shape)
    return values.gather(0, index)[0].unsqueeze(-1)  # [tasks, n, 1]


class FamilyTasks:
    """ARML's mixture of six 2-D regression families (see the module docstring).

    Args:
        k_shot, n_query: support and query points per task (the paper: 10 and 10).
        families: the family names drawn from (default: all six, uniformly).
        noise_std: standard deviation of the Gaussian noise on every target (the paper: 0.3).
        device: where the batches are put.
        seed: seeds this sampler's own ``torch.Generator``.
    """

    def __init__(self, k_shot: int = 10, n_query: int = 10, families: tuple[str, ...] = FAMILIES,
                 noise_std: float = NOISE_STD, device="cpu", seed: int = 0) -> None:
        if int(k_shot) != k_shot or k_shot < 1 or int(n_query) != n_query or n_query < 0:
            raise ValueError(f"need k_shot >= 1 and n_query >= 0 (whole numbers), got {k_shot} and {n_query}")
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise ValueError(f"families must be a non-empty selection of {FAMILIES}, got {families!r}")
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be zero or positive, got {noise_std!r}")
        self.k_shot, self.n_query, self.noise_std = int(k_shot), int(n_query), float(noise_std)
        self.families = tuple(families)
        self.family_ids = torch.tensor([FAMILIES.index(f) for f in families])
        self.device = get_device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, tasks: int = 1) -> RegressionTasks:
        if int(tasks) != tasks or tasks < 1:
            raise ValueError(f"tasks must be a whole number >= 1, got {tasks!r}")
        g, n = self.generator, self.k_shot + self.n_query
        family = self.family_ids[torch.randint(len(self.family_ids), (tasks,), generator=g)]  # [tasks]
        # draw every family's coefficients for every task, keep the chosen family's (four uniforms a task)
        unit = torch.rand(tasks, 4, generator=g)
        low = torch.zeros(len(FAMILIES), 4)
        width = torch.zeros(len(FAMILIES), 4)
        for f, name in enumerate(FAMILIES):
            for i, (a, b) in enumerate(RANGES[name]):
                low[f, i], width[f, i] = a, b - a
        coef = low[family] + width[family] * unit  # [tasks, 4], unused entries 0
        x = torch.rand(tasks, n, 2, generator=g) * (INPUT_RANGE[1] - INPUT_RANGE[0]) + INPUT_RANGE[0]
        one_d = torch.tensor([FAMILIES[f] in ONE_DIMENSIONAL for f in family.tolist()])
        x[one_d, :, 1] = 1.0  # one-dimensional families: the second input is fixed at 1
        clean = family_function(x, family, coef)  # [tasks, n, 1]
        y = clean + self.noise_std * torch.randn(clean.shape, generator=g)
        k, dev = self.k_shot, self.device
        params = {"family": family.to(dev), "coef": coef.to(dev), "clean_query": clean[:, k:].to(dev)}
        return RegressionTasks(x[:, :k].to(dev), y[:, :k].to(dev), x[:, k:].to(dev), y[:, k:].to(dev), params)
