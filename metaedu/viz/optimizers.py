"""Plots for the learned-optimizer lecture: loss curves, diagrams of the method, the learned update.

Every function takes data (tensors or arrays), an optional matplotlib ``ax``, and returns the figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import FuncFormatter, LogLocator

from metaedu.viz.style import COLORS, CYCLE, axes_for, method_color

#: The lecture's optimizer names -> their course-wide method names (one colour per method in every lecture).
OPTIMIZER_METHODS = {"LSTM": "lstm_optimizer", "SGD": "sgd", "NAG": "nag", "RMSprop": "rmsprop", "Adam": "adam"}
OPTIMIZER_COLORS = {name: method_color(method) for name, method in OPTIMIZER_METHODS.items()}


def _color(name: str, i: int) -> str:
    """An optimizer's colour; a label such as "Adam (lr 0.3)" takes the colour of the rule it names."""
    rule = name.split(" ")[0]
    return OPTIMIZER_COLORS.get(name, OPTIMIZER_COLORS.get(rule, CYCLE[i % len(CYCLE)]))


def legend_outside(fig, axes, ncol: int | None = None) -> None:
    """One legend for a row of panels, below them (never over a curve)."""
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol or len(labels), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.1, 1, 1))


def _axes(ax, figsize=(8.0, 4.5)):
    return axes_for(ax, figsize)


def _np(x) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def plot_loss_curves(curves: dict, ax=None, title: str | None = None, start: int = 0, band: bool = True,
                     ylabel: str = "loss f(θ_t)", legend: bool = True):
    """Median loss against step (log scale) with the interquartile range over functions shaded.

    ``curves[name]`` is ``[steps + 1, functions]``; ``start`` is the step number of the first row.
    The legend goes to the right of the axes (``legend=False``: none, e.g. for :func:`legend_outside`).
    """
    fig, ax = _axes(ax)
    for i, (name, losses) in enumerate(curves.items()):
        v = _np(losses)
        v = np.where(np.isfinite(v), v, np.nan)
        steps = np.arange(start, start + v.shape[0])
        color = _color(name, i)
        ax.plot(steps, np.nanmedian(v, 1), color=color, label=name, lw=2.6 if name == "LSTM" else 1.8)
        if band:
            lo, hi = np.nanpercentile(v, 25, 1), np.nanpercentile(v, 75, 1)
            ax.fill_between(steps, lo, hi, color=color, alpha=0.12, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _box(ax, xy, text, color, w=1.0, h=0.5, fontsize=13):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=color, ec="#333333",
                                alpha=0.9))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def draw_coordinatewise(n_coords: int = 4, ax=None):
    """One LSTM with shared weights phi, applied to each coordinate with its own state.

    Arrows run from the right edge of one box to the left edge of the next, so none crosses a label.
    """
    fig, ax = _axes(ax, figsize=(10.0, 1.0 * n_coords + 1.4))
    boxes = [(0.0, 1.0, "#fbe3cf"), (2.3, 1.8, "#eeeeee"), (5.2, 2.6, "#d6ecd9"), (8.0, 1.0, "#e8eef6")]  # x, width
    for i in range(n_coords):
        y = -i * 1.0
        texts = [f"∇$_{{t,{i + 1}}}$", "preprocess", f"LSTM φ, h$_{{t,{i + 1}}}$", f"g$_{{t,{i + 1}}}$"]
        for (x, w, color), text in zip(boxes, texts):
            _box(ax, (x, y), text, color, w=w, h=0.6, fontsize=13)
        for (x1, w1, _), (x2, w2, _) in zip(boxes[:-1], boxes[1:]):
            _edge_arrow(ax, (x1 + w1 / 2 + 0.08, y), (x2 - w2 / 2 - 0.08, y))
    ax.text(5.2, 0.75, "the same φ for every coordinate; a separate state h for each", ha="center", fontsize=13)
    ax.set_xlim(-0.7, 8.7)
    ax.set_ylim(-1.0 * n_coords + 0.4, 1.1)
    ax.axis("off")
    return fig


def _edge_arrow(ax, a, b, color="#333333"):
    """An arrow between two given points (box edges), not shortened."""
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.6, color=color, shrinkA=0, shrinkB=0))


def plot_update_response(grads, responses, steps_shown=None, ax=None, legend: bool = True):
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
    if legend:
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_function_run(losses: dict, distances: dict, title: str = ""):
    """One test function: loss (left) and distance to the minimiser ||θ_t − θ*|| (right) per optimizer.

    Non-finite values (a diverging rule) are left out of the plot and named in the legend.
    """
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.4))
    for i, name in enumerate(losses):
        color = _color(name, i)
        loss, dist = _np(losses[name]), _np(distances[name])
        label = name if np.isfinite(loss).all() else f"{name}: diverges"
        a.plot(np.where(np.isfinite(loss), loss, np.nan), color=color, label=label, lw=2.6 if name == "LSTM" else 2.0)
        b.plot(np.where(np.isfinite(dist), dist, np.nan), color=color, lw=2.6 if name == "LSTM" else 2.0)
    for ax, label in ((a, "loss f(θ_t)"), (b, "||θ_t − θ*||")):
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_ylabel(label)
    if title:
        fig.suptitle(title)
    legend_outside(fig, [a])
    return fig


def plot_architecture_study(sizes, finals: dict, trained_at=None, ax=None, xlabel: str = "hidden units",
                            ylabel: str = "loss at step 100", title: str | None = None):
    """Final loss against the optimizee's size, one line per optimizer (the paper's systematic study).

    ``finals[name]`` holds one value per entry of ``sizes`` (e.g. the median over test runs);
    ``trained_at`` marks, dashed, the size the learned optimizer was trained on.
    """
    fig, ax = _axes(ax, figsize=(8.5, 4.5))
    for i, (name, values) in enumerate(finals.items()):
        ax.plot(sizes, _np(values), "o-", color=_color(name, i), label=name, lw=2.6 if name == "LSTM" else 1.8)
    if trained_at is not None:
        ax.axvline(trained_at, color=COLORS["paper"], ls="--", lw=1.5, label="trained on")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(sizes), [str(v) for v in sizes])
    ax.minorticks_off()
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_meta_training(values, ax=None, window: int = 10, ylabel: str = "meta-loss per step",
                       xlabel: str = "meta-update"):
    """A meta-training curve (raw and smoothed), log scale; ``xlabel`` names what one value is."""
    fig, ax = _axes(ax, figsize=(9.0, 3.8))
    v = _np(values)
    ax.plot(v, color=COLORS["paper"], lw=1, alpha=0.6, label=f"each {xlabel}")
    if len(v) >= window:
        smooth = np.convolve(v, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, len(v)), smooth, color=COLORS["ours"], label=f"mean of {window}")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
