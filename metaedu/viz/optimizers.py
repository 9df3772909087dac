"""Plots for the learned-optimizer lecture: loss curves, diagrams of the method, the learned update.

Every function takes data (tensors or arrays), an optional matplotlib ``ax``, and returns the figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from metaedu.viz.style import COLORS, CYCLE

#: A fixed colour per optimizer, so every figure of the lecture agrees.
OPTIMIZER_COLORS = {"LSTM": COLORS["ours"], "SGD": CYCLE[3], "NAG": CYCLE[4], "RMSprop": CYCLE[2], "Adam": CYCLE[1]}


def _axes(ax, figsize=(8.0, 4.5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _np(x) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def plot_loss_curves(curves: dict, ax=None, title: str | None = None, start: int = 0, band: bool = True,
                     ylabel: str = "loss f(θ_t)"):
    """Median loss against step (log scale) with the interquartile range over functions shaded.

    ``curves[name]`` is ``[steps + 1, functions]``; ``start`` is the step number of the first row.
    """
    fig, ax = _axes(ax)
    for i, (name, losses) in enumerate(curves.items()):
        v = _np(losses)
        v = np.where(np.isfinite(v), v, np.nan)
        steps = np.arange(start, start + v.shape[0])
        color = OPTIMIZER_COLORS.get(name, CYCLE[i % len(CYCLE)])
        ax.plot(steps, np.nanmedian(v, 1), color=color, label=name, lw=2.6 if name == "LSTM" else 1.8)
        if band:
            lo, hi = np.nanpercentile(v, 25, 1), np.nanpercentile(v, 75, 1)
            ax.fill_between(steps, lo, hi, color=color, alpha=0.12, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, ncol=2)
    return fig


def _box(ax, xy, text, color, w=1.0, h=0.5, fontsize=11):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=color, ec="#333333",
                                alpha=0.9))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, a, b, dashed=False, color="#333333"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, lw=1.4, color=color,
                                 linestyle="--" if dashed else "-", shrinkA=14, shrinkB=14))


def draw_computational_graph(steps: int = 3, ax=None):
    """The unrolled run: theta_t -> f -> grad_t -> m(., h_t) -> g_t -> theta_{t+1} (dashed: the
    grad_t edges whose derivatives the paper drops)."""
    fig, ax = _axes(ax, figsize=(3.2 * steps + 1.5, 4.2))
    gap = 3.0
    for t in range(steps):
        x = t * gap
        _box(ax, (x, 0.0), f"θ$_{t}$", "#e8eef6")
        _box(ax, (x + 1.0, 1.2), f"f(θ$_{t}$)", "#fbe3cf", w=1.2)
        _box(ax, (x + 1.0, -1.2), f"∇$_{t}$", "#fbe3cf")
        _box(ax, (x + 2.0, -2.4), "m", "#d6ecd9")
        _arrow(ax, (x, 0.0), (x + 1.0, 1.2))
        _arrow(ax, (x, 0.0), (x + 1.0, -1.2), dashed=True, color="#c0392b")
        _arrow(ax, (x + 1.0, -1.2), (x + 2.0, -2.4))
        _arrow(ax, (x + 2.0, -2.4), (x + gap, 0.0))
        ax.text(x + 2.75, -1.3, f"g$_{t}$", fontsize=11)
        if t:
            _arrow(ax, (x - gap + 2.0, -2.4), (x + 2.0, -2.4))
            ax.text(x + 0.8, -2.2, f"h$_{t}$", fontsize=11)
    for t in range(1, steps + 1):
        ax.text(t * gap + 1.7, 1.2, f"× w$_{t}$", fontsize=10, color="#666666", va="center")
    x = steps * gap
    _box(ax, (x, 0.0), f"θ$_{steps}$", "#e8eef6")
    _box(ax, (x + 1.0, 1.2), f"f(θ$_{steps}$)", "#fbe3cf", w=1.2)
    _arrow(ax, (x, 0.0), (x + 1.0, 1.2))
    ax.text(0.0, 2.2, "meta-loss L(φ) = Σ$_t$ w$_t$ f(θ$_t$): gradients flow back along the solid edges",
            fontsize=11)
    ax.set_xlim(-0.8, x + 2.4)
    ax.set_ylim(-3.0, 2.6)
    ax.axis("off")
    ax.set_title("the unrolled optimisation (red dashed: dropped second derivatives)")
    return fig


def draw_coordinatewise(n_coords: int = 4, ax=None):
    """One LSTM with shared weights phi, applied to each coordinate with its own state."""
    fig, ax = _axes(ax, figsize=(8.0, 0.9 * n_coords + 1.6))
    for i in range(n_coords):
        y = -i * 0.9
        _box(ax, (0.0, y), f"∇$_{{t,{i + 1}}}$", "#fbe3cf", w=0.9, h=0.55)
        _box(ax, (2.0, y), "preprocess", "#eeeeee", w=1.5, h=0.55, fontsize=10)
        _box(ax, (4.2, y), f"LSTM (φ), h$_{{t,{i + 1}}}$", "#d6ecd9", w=2.2, h=0.55, fontsize=10)
        _box(ax, (6.4, y), f"g$_{{t,{i + 1}}}$", "#e8eef6", w=0.9, h=0.55)
        _arrow(ax, (0.0, y), (2.0, y))
        _arrow(ax, (2.0, y), (4.2, y))
        _arrow(ax, (4.2, y), (6.4, y))
    ax.text(4.2, 0.75, "same φ for every coordinate, a separate state for each", ha="center", fontsize=11)
    ax.set_xlim(-0.7, 7.1)
    ax.set_ylim(-0.9 * n_coords + 0.3, 1.1)
    ax.axis("off")
    return fig


def plot_update_response(grads, responses, steps_shown=None, ax=None):
    """The learned update g against a constant input gradient (symmetric log x axis).

    ``grads [n]`` are the inputs, ``responses [steps, n]`` the updates after each step of feeding them.
    """
    fig, ax = _axes(ax)
    g, r = _np(grads), _np(responses)
    steps_shown = steps_shown or sorted({0, r.shape[0] // 2, r.shape[0] - 1})
    for j, k in enumerate(steps_shown):
        ax.plot(g, r[k], color=CYCLE[j % len(CYCLE)], label=f"after {k + 1} step{'s' if k else ''}")
    ax.axhline(0, color="#999999", lw=0.8)
    ax.set_xscale("symlog", linthresh=1e-4)
    ax.set_xticks([-10, -1e-2, -1e-4, 0, 1e-4, 1e-2, 10])
    ax.set_xlabel("input gradient ∇ (held constant)")
    ax.set_ylabel("update g")
    ax.set_title("what the learned optimizer does with a gradient")
    ax.legend(frameon=False)
    return fig


def plot_function_run(losses: dict, distances: dict, title: str = ""):
    """One test function: loss (left) and distance to the minimiser ||θ_t − θ*|| (right) per optimizer."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, name in enumerate(losses):
        color = OPTIMIZER_COLORS.get(name, CYCLE[i % len(CYCLE)])
        a.plot(_np(losses[name]), color=color, label=name)
        b.plot(_np(distances[name]), color=color, label=name)
    for ax, label in ((a, "loss f(θ_t)"), (b, "||θ_t − θ*||")):
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_ylabel(label)
    a.legend(frameon=False, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_meta_training(values, ax=None, window: int = 10, ylabel: str = "meta-loss per step"):
    """A meta-training curve (raw and smoothed), log scale."""
    fig, ax = _axes(ax, figsize=(7.0, 3.8))
    v = _np(values)
    ax.plot(v, color=COLORS["paper"], lw=1, alpha=0.6, label="per meta-update")
    if len(v) >= window:
        smooth = np.convolve(v, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, len(v)), smooth, color=COLORS["ours"], label=f"mean of {window}")
    ax.set_yscale("log")
    ax.set_xlabel("meta-update")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    return fig
