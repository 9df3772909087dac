"""Plots for regression tasks and gradient-based adaptation (lecture 06 and friends).

Every function takes data already computed (no training here) and an optional
matplotlib ``ax``, and returns the figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from metaedu.viz.style import COLORS, CYCLE


def _axes(ax, figsize=None):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _np(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v).reshape(-1)


def plot_fits(x, y_true, x_support, y_support, fits: dict, title: str | None = None, ax=None):
    """A task's true function, its support points, and predicted curves ``fits`` (label -> y on ``x``)."""
    fig, ax = _axes(ax)
    ax.plot(_np(x), _np(y_true), color=COLORS["truth"], lw=2.5, label="ground truth")
    for i, (label, y) in enumerate(fits.items()):
        ax.plot(_np(x), _np(y), color=CYCLE[i % len(CYCLE)], ls="--" if i == 0 else "-", label=label)
    ax.scatter(_np(x_support), _np(y_support), color=COLORS["support"], marker="^", s=70, zorder=5,
               label="support points used for the gradient steps")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=9, loc="lower left")
    return fig


def plot_mse_by_steps(scores: dict, ax=None, title: str | None = None):
    """Mean query MSE (with 95% bands) against inner gradient steps; ``scores``: label -> list of Score."""
    fig, ax = _axes(ax)
    for i, (label, row) in enumerate(scores.items()):
        steps = np.arange(len(row))
        mean = np.array([s.mean for s in row])
        ci = np.array([s.ci95 for s in row])
        color = CYCLE[i % len(CYCLE)]
        ax.plot(steps, mean, marker="o", color=color, label=label)
        ax.fill_between(steps, mean - ci, mean + ci, color=color, alpha=0.2)
    ax.set_xlabel("gradient steps on the new task")
    ax.set_ylabel("query MSE")
    ax.set_title(title or "Fast adaptation on new sinusoids")
    ax.legend()
    return fig


def plot_learning_curves(curves: dict, ylabel: str = "meta-loss (query MSE)", log: bool = True, ax=None,
                         title: str | None = None):
    """Training curves; ``curves``: label -> (steps, values), already smoothed if wanted."""
    fig, ax = _axes(ax)
    for i, (label, (steps, values)) in enumerate(curves.items()):
        ax.plot(_np(steps), _np(values), color=CYCLE[i % len(CYCLE)], label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return fig


def plot_parameter_change(changes: dict, ax=None, title: str | None = None):
    """Grouped bars: relative change of each weight tensor during adaptation; ``changes``: label -> {name: value}."""
    fig, ax = _axes(ax, figsize=(9, 4.5))
    labels = list(changes)
    names = list(next(iter(changes.values())))
    width = 0.8 / len(labels)
    pos = np.arange(len(names))
    for i, label in enumerate(labels):
        ax.bar(pos + (i - (len(labels) - 1) / 2) * width, [changes[label][n] for n in names], width,
               color=CYCLE[i % len(CYCLE)], label=label)
    ax.set_xticks(pos, [n.replace("model.", "") for n in names], rotation=45, ha="right", fontsize=10)
    ax.set_ylabel(r"$\|\theta'_i - \theta\| \,/\, \|\theta\|$")
    ax.set_title(title or "How much each layer moves while adapting")
    ax.legend()
    fig.tight_layout()
    return fig
