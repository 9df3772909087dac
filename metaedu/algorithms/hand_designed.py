"""The hand-designed optimizers a learned optimizer is compared with (Andrychowicz et al. 2016, section 3).

SGD, NAG (Nesterov momentum 0.9), RMSprop and Adam, as PyTorch implements them, run on a whole
batch of optimizees at once (``theta [tasks, n]`` is one tensor; every rule is coordinatewise, so
the functions do not interact), each at a learning rate tuned on training functions. Lecture 01
uses them through :mod:`metaedu.algorithms.learned_optimizer`, which re-exports them.
"""

from __future__ import annotations

import torch

from metaedu.tasks.optimizees import Run

BASELINES = ("SGD", "NAG", "RMSprop", "Adam")


def make_baseline(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """PyTorch's SGD, NAG (Nesterov momentum 0.9), RMSprop or Adam with learning rate ``lr``."""
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr)
    if name == "NAG":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    if name == "RMSprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "Adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")


def optimize_baseline(name: str, lr: float, run: Run, steps: int, return_thetas: bool = False):
    """Optimise every function of a run with a hand-designed rule; losses ``[steps + 1, tasks]``.

    The whole batch ``theta [tasks, n]`` is one tensor for PyTorch's optimizer; each rule is
    coordinatewise (Adam's and RMSprop's statistics are per entry), so functions do not interact.
    A diverging run gives ``inf``/``nan`` losses rather than an error (the grid tries large rates).
    """
    theta = run.theta0.detach().clone().requires_grad_(True)
    opt = make_baseline(name, [theta], lr)
    losses, thetas = [], [theta.detach().clone()]
    for t in range(steps + 1):
        opt.zero_grad()
        loss = run.loss(theta, t)  # [tasks]
        losses.append(loss.detach())
        if t == steps:
            break
        loss.sum().backward()
        opt.step()
        thetas.append(theta.detach().clone())
    out = torch.stack(losses)
    return (out, torch.stack(thetas)) if return_thetas else out


def optimize_baseline_grid(name: str, lrs, run: Run, steps: int) -> torch.Tensor:
    """One hand-designed rule at several learning rates at once: losses ``[steps + 1, rates, tasks]``.

    Each rate gets its own copy of theta in its own parameter group (so its own optimizer state),
    and the copies go through the run's loss together (``torch.func.vmap`` over the rate): one loss
    evaluation per step instead of one per rate. Row ``r`` equals :func:`optimize_baseline` at
    ``lrs[r]`` up to floating-point rounding; a diverging rate does not disturb the others.
    """
    lrs = [float(lr) for lr in lrs]
    if not lrs or min(lrs) <= 0:
        raise ValueError(f"need at least one positive learning rate, got {lrs}")
    thetas = [run.theta0.detach().clone().requires_grad_(True) for _ in lrs]  # one [tasks, n] per rate
    opt = make_baseline(name, [{"params": [theta], "lr": lr} for theta, lr in zip(thetas, lrs)], lrs[0])
    losses = []
    for t in range(steps + 1):
        opt.zero_grad()
        loss = torch.func.vmap(lambda theta: run.loss(theta, t))(torch.stack(thetas))  # [rates, tasks]
        losses.append(loss.detach())
        if t == steps:
            break
        loss.sum().backward()
        opt.step()
    return torch.stack(losses)


def tune_baselines(run: Run, steps: int, lr_grid, names=BASELINES) -> dict[str, float]:
    """Each baseline's learning rate with the lowest median final loss on the training ``run``
    (all rates of a rule run together, :func:`optimize_baseline_grid`; a diverging rate scores inf)."""
    best = {}
    for name in names:
        final = optimize_baseline_grid(name, lr_grid, run, steps)[-1]  # [rates, tasks]
        final = torch.where(torch.isfinite(final), final, torch.full_like(final, float("inf")))
        medians = final.median(dim=1).values  # [rates], the lower median as torch.median gives it
        best[name] = float(lr_grid[int(torch.argmin(medians))])
    return best
