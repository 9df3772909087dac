"""Ambiguous lines-or-sines tasks (PLATIPUS, Finn et al. 2018): which support sets fit both families.

:class:`~metaedu.tasks.regression.LinesOrSinesTasks` with a narrow ``support_range``
gives five points that a line and a sinusoid may both explain. :func:`family_fits`
measures that by enumeration over each family's parameter ranges (the best line with
slope and intercept in :data:`LINE_RANGE`, the best sinusoid with amplitude and phase
in their ranges), :func:`ambiguous_tasks` keeps only the tasks that both families fit
within the observation noise, and :func:`curve_kinds` names each predicted curve a
line, a sinusoid or neither, by which of the two shapes fits it over the whole x range and how well.

Ambiguous glyph classification is in :mod:`metaedu.tasks.ambiguous`.
"""

from __future__ import annotations

import torch

from metaedu.tasks.regression import (
    AMPLITUDE_RANGE,
    INPUT_RANGE,
    LINE_RANGE,
    PHASE_RANGE,
    LinesOrSinesTasks,
    RegressionTasks,
)

#: Grid resolution of the enumeration in :func:`family_fits` (values per free parameter).
FIT_GRID = 241

# ----------------------------------------------------------------------------- lines or sines


def _best_scale(basis: torch.Tensor, y: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Least-squares c in y ~ c * basis (over the last dim), clipped to [low, high]: ``[..., G]``."""
    c = (basis * y).sum(-1) / (basis * basis).sum(-1).clamp_min(1e-12)
    return c.clamp(low, high)


def family_fits(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Root-mean-square residual of the best line and of the best sinusoid of the task family.

    ``x``, ``y``: ``[tasks, n, 1]``. Lines y = a x + c with a, c in :data:`LINE_RANGE`;
    sinusoids y = A sin(x - b) with A in :data:`AMPLITUDE_RANGE`, b in :data:`PHASE_RANGE`.
    One parameter is enumerated on a grid of :data:`FIT_GRID` values (slope; phase), the
    other is the clipped least-squares value, so the fit respects the ranges. Returns two
    ``[tasks]`` tensors.
    """
    if x.shape != y.shape or x.dim() != 3 or x.shape[-1] != 1:
        raise ValueError(f"x and y must both be [tasks, n, 1], got {tuple(x.shape)} and {tuple(y.shape)}")
    xs, ys = x[..., 0].double().unsqueeze(1), y[..., 0].double().unsqueeze(1)  # [tasks, 1, n]
    slope = torch.linspace(*LINE_RANGE, FIT_GRID, dtype=torch.float64).view(1, -1, 1)  # [1, G, 1]
    rest = ys - slope * xs  # [tasks, G, n]
    intercept = rest.mean(-1, keepdim=True).clamp(*LINE_RANGE)
    line = ((rest - intercept) ** 2).mean(-1).min(1).values.sqrt()
    phase = torch.linspace(*PHASE_RANGE, FIT_GRID, dtype=torch.float64).view(1, -1, 1)
    basis = torch.sin(xs - phase)  # [tasks, G, n]
    amplitude = _best_scale(basis, ys, *AMPLITUDE_RANGE).unsqueeze(-1)
    sine = ((ys - amplitude * basis) ** 2).mean(-1).min(1).values.sqrt()
    return line.float(), sine.float()


def is_ambiguous(tasks: RegressionTasks, tolerance: float) -> torch.Tensor:
    """``[tasks]`` bool: both a line and a sinusoid of the family fit the support set within ``tolerance`` (RMS)."""
    line, sine = family_fits(tasks.x_support.cpu(), tasks.y_support.cpu())
    return (line <= tolerance) & (sine <= tolerance)


def ambiguous_tasks(
    sampler: LinesOrSinesTasks, n: int, tolerance: float | None = None, max_draws: int = 200
) -> RegressionTasks:
    """``n`` tasks from ``sampler`` whose support sets fit both families (rejection sampling).

    ``tolerance`` defaults to the sampler's noise level (at least 0.1): a fit is plausible when
    its residual is no larger than the noise. Raises if ``max_draws`` batches do not yield ``n``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    tolerance = max(sampler.noise_std, 0.1) if tolerance is None else tolerance
    kept, have = [], 0
    for _ in range(max_draws):
        batch = sampler.sample(max(4 * n, 64))
        keep = is_ambiguous(batch, tolerance).to(batch.x_support.device)
        if keep.any():
            kept.append(_select(batch, keep))
            have += int(keep.sum())
        if have >= n:
            break
    if have < n:
        raise ValueError(
            f"only {have} of {n} ambiguous tasks after {max_draws} batches; widen the tolerance "
            f"({tolerance}) or narrow the sampler's support_range ({sampler.support_range})"
        )
    out = RegressionTasks(
        *(torch.cat([getattr(k, f) for k in kept])[:n] for f in ("x_support", "y_support", "x_query", "y_query")),
        {key: torch.cat([k.params[key] for k in kept])[:n] for key in kept[0].params},
    )
    return out


def _select(tasks: RegressionTasks, keep: torch.Tensor) -> RegressionTasks:
    return RegressionTasks(
        tasks.x_support[keep],
        tasks.y_support[keep],
        tasks.x_query[keep],
        tasks.y_query[keep],
        {k: v[keep] for k, v in tasks.params.items()},
    )


#: Kinds of curve returned by :func:`curve_kinds`.
NEITHER, LINE, SINE = 0, 1, 2
#: Share of a curve's variation (R^2) that the better of the two shapes must explain for the curve to count as it.
MIN_FIT = 0.5


def curve_kinds(x: torch.Tensor, y: torch.Tensor, min_fit: float = MIN_FIT) -> torch.Tensor:
    """Name each curve a line (:data:`LINE`), a sinusoid (:data:`SINE`) or neither (:data:`NEITHER`).

    ``x``: ``[n]`` inputs spanning the x range; ``y``: ``[..., n]`` curves. Both shapes are fit by
    least squares: a line ``a x + c``; a sinusoid of the family ``alpha sin x + beta cos x``
    (= A sin(x - b)), which has no constant term, so a line with an intercept is not a
    sinusoid, and a sinusoid over more than a period is not a line. A curve is the shape that
    fits it better, provided that shape explains at least ``min_fit`` of its variation
    (R^2 = 1 - residual / variation around its mean); otherwise it is neither. A flat curve is a
    line. Returns ``[...]`` int64.
    """
    if x.dim() != 1 or y.shape[-1] != x.shape[0]:
        raise ValueError(f"x must be [n] and y [..., n], got {tuple(x.shape)} and {tuple(y.shape)}")
    span = float(x.max() - x.min())
    if span < 6.0:
        raise ValueError(
            f"the curves must be seen over about a period (x span >= 6) to tell a line from a sinusoid, "
            f"got a span of {span:.2f}"
        )
    if not 0.0 <= min_fit < 1.0:
        raise ValueError(f"min_fit must lie in [0, 1), got {min_fit}")
    x = x.double()
    flat = y.double().reshape(-1, x.shape[0], 1)  # [m, n, 1]

    def residual(design: torch.Tensor) -> torch.Tensor:
        coef = torch.linalg.lstsq(design.expand(flat.shape[0], *design.shape), flat).solution
        return ((design @ coef - flat) ** 2).sum((1, 2))  # [m]

    variation = ((flat - flat.mean(1, keepdim=True)) ** 2).sum((1, 2)).clamp_min(1e-12)
    line = residual(torch.stack([x, torch.ones_like(x)], 1)) / variation
    sine = residual(torch.stack([torch.sin(x), torch.cos(x)], 1)) / variation
    kinds = torch.full(line.shape, NEITHER, dtype=torch.long)
    kinds[(line <= sine) & (1 - line >= min_fit)] = LINE
    kinds[(sine < line) & (1 - sine >= min_fit)] = SINE
    return kinds.view(y.shape[:-1])


def x_grid(n: int = 200, device="cpu") -> torch.Tensor:
    """``n`` evenly spaced inputs over the whole x range, ``[n]``."""
    return torch.linspace(*INPUT_RANGE, n, device=device)
