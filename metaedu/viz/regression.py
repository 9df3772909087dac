"""Plots for regression tasks and gradient-based adaptation (lecture 06 and friends).

Every function takes data already computed (no training here) and an optional
matplotlib ``ax``, and returns the figure. A curve labelled with a method's name
("MAML", "ANIL", "pretrained", ...) takes that method's course-wide colour
(:func:`metaedu.viz.style.method_color`); other labels take the colour cycle.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import numpy as np
import torch

from metaedu.evaluation import bootstrap_mean_interval
from metaedu.viz.style import COLORS, CYCLE, axes_for, method_color


def _axes(ax, figsize=None):
    return axes_for(ax, figsize)


def _np(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v).reshape(-1)


#: Markers by curve order, so that curves of one colour family (MAML's variants) stay apart.
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def _colour(label: str, i: int) -> str:
    """The method's course colour when ``label`` names a method, else the i-th colour of the cycle."""
    try:
        return method_color(label)
    except KeyError:
        return CYCLE[i % len(CYCLE)]


def _plain_log_labels(ax) -> None:
    """Tick labels of a logarithmic y axis as plain numbers (0.3, 1, 2), minor ones at 2 and 5 only."""
    def minor(v, _):
        lead = f"{v:.0e}"[0]
        return f"{v:g}" if lead in "25" else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _number(v: float) -> str:
    """3 significant digits, without exponents for large finite values (1,250 rather than 1.25e+03)."""
    return f"{v:,.0f}" if np.isfinite(v) and abs(v) >= 1000 else f"{v:.3g}"


def _legend_outside(ax, **kwargs) -> None:
    """A legend to the right of the axes, never over the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def plot_fits(x, y_true, x_support, y_support, fits: dict, title: str | None = None, ax=None, legend: bool = True,
              dashed_first: bool = True, colors: dict | None = None):
    """A task's true function, its support points, and predicted curves ``fits`` (label -> y on ``x``).

    With ``dashed_first`` the first curve is dashed (the prediction before adapting); ``colors`` maps
    a label to its colour (default: the colour cycle). With ``legend`` the legend sits to the right
    of the axes, outside the data.
    """
    fig, ax = _axes(ax, figsize=(10, 4.5))
    ax.plot(_np(x), _np(y_true), color=COLORS["truth"], lw=2.5, label="ground truth")
    for i, (label, y) in enumerate(fits.items()):
        color = (colors or {}).get(label, CYCLE[i % len(CYCLE)])
        ax.plot(_np(x), _np(y), color=color, ls="--" if (i == 0 and dashed_first) else "-", label=label)
    ax.scatter(_np(x_support), _np(y_support), color=COLORS["support"], marker="^", s=70, zorder=5,
               label="support points (K)")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    if legend:
        _legend_outside(ax)
    return fig


def plot_fit_grid(x, y_true, panels: list[dict], ncols: int = 2, figsize=(14, 8.5)):
    """Several :func:`plot_fits` panels of one task with a single legend below them.

    ``panels``: dicts with ``title``, ``fits`` (label -> y on ``x``), ``x_support``, ``y_support``.
    Every panel must use the same fit labels, so that one legend explains all of them.
    """
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, sharey=True, squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        plot_fits(x, y_true, panel["x_support"], panel["y_support"], panel["fits"], title=panel["title"], ax=ax,
                  legend=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    return fig


def plot_mse_by_steps(scores: dict, ax=None, title: str | None = None, log: bool = False, top: float | None = None):
    """Mean query MSE against inner gradient steps, with a 95% interval of the mean.

    ``scores``: label -> either per-task MSEs ``[steps + 1, tasks]`` (a tensor, e.g. from
    :func:`metaedu.algorithms.maml.task_mse_by_steps`; the band is a percentile-bootstrap interval,
    which never goes below zero) or a list of :class:`~metaedu.evaluation.Score` (normal band).
    With ``log`` the y axis is logarithmic. With ``top`` the axis stops there: a curve that
    leaves it is drawn up to the edge, marked with an arrow, and its legend entry says from
    which step on it lies above (the divergence is stated, not hidden).
    """
    fig, ax = _axes(ax, figsize=(10, 4.8))
    for i, (label, row) in enumerate(scores.items()):
        color = _colour(label, i)
        if isinstance(row, torch.Tensor):
            finite = torch.isfinite(row).all(1)  # a step with a diverged task has an infinite mean, and no band
            mean = torch.where(finite, row.double().nan_to_num().mean(1), torch.tensor(float("inf"))).numpy()
            low, high = np.full(len(mean), np.nan), np.full(len(mean), np.nan)
            if finite.any():
                lo, hi = bootstrap_mean_interval(row[finite])
                low[finite.numpy()], high[finite.numpy()] = lo.numpy(), hi.numpy()
        else:
            mean = np.array([s.mean for s in row])
            ci = np.array([s.ci95 for s in row])
            low, high = mean - ci, mean + ci
        steps = np.arange(len(mean))
        name = label
        if top is not None and (mean > top).any():
            first = int(np.argmax(mean > top))
            name = f"{label} (above {_number(top)} from step {first}: mean {_number(mean[first])})"
            ax.annotate("", xy=(first, top), xytext=(first - 0.6 if first else first, top * (0.5 if log else 0.85)),
                        arrowprops={"arrowstyle": "->", "color": color, "lw": 2})
        shown = mean if top is None else np.minimum(mean, top)
        ax.plot(steps, shown, marker=MARKERS[i % len(MARKERS)], color=color, label=name)
        ax.fill_between(steps, low, high if top is None else np.minimum(high, top), color=color, alpha=0.2)
    if log:
        ax.set_yscale("log")
        _plain_log_labels(ax)
    if top is not None:
        ax.set_ylim(top=top)
    ax.set_xlabel("gradient steps on the new task")
    ax.set_ylabel("query MSE" + (" (log scale)" if log else ""))
    ax.set_title(title or "Fast adaptation on new sinusoids")
    _legend_outside(ax)
    return fig


def plot_learning_curves(curves: dict, ylabel: str = "meta-loss (query MSE)", log: bool = True, ax=None,
                         title: str | None = None):
    """Training curves; ``curves``: label -> (steps, values), already smoothed if wanted."""
    fig, ax = _axes(ax)
    for i, (label, (steps, values)) in enumerate(curves.items()):
        ax.plot(_np(steps), _np(values), color=_colour(label, i), label=label)
    if log:
        ax.set_yscale("log")
        _plain_log_labels(ax)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    _legend_outside(ax)
    return fig


def plot_parameter_change(changes: dict, ax=None, title: str | None = None):
    """Grouped bars: relative change of each weight tensor during adaptation; ``changes``: label -> {name: value}."""
    fig, ax = _axes(ax, figsize=(11, 4.8))
    labels = list(changes)
    names = list(next(iter(changes.values())))
    width = 0.8 / len(labels)
    pos = np.arange(len(names))
    for i, label in enumerate(labels):
        ax.bar(pos + (i - (len(labels) - 1) / 2) * width, [changes[label][n] for n in names], width,
               color=_colour(label, i), label=label)
    ax.set_xticks(pos, [n.replace("model.", "") for n in names], rotation=30, ha="right")
    ax.set_ylabel(r"$\|\theta'_i - \theta\| \,/\, \|\theta\|$")
    ax.set_title(title or "How much each layer moves while adapting")
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def plot_adaptation_diagram(theta, adapted, optima, ax=None, title: str | None = None):
    """Finn et al.'s picture in a real 2-D parameter space: theta, each task's optimum theta*_i, and
    the adapted theta'_i that gradient steps from theta reach (arrows).

    ``theta`` ``[2]``, ``adapted`` and ``optima`` ``[tasks, 2]`` (two parameters, e.g. slope and intercept).
    """
    fig, ax = _axes(ax, figsize=(8.5, 6.5))
    theta, adapted, optima = (np.asarray(_np(t)).reshape(-1, 2) for t in (theta, adapted, optima))
    for i, (a, o) in enumerate(zip(adapted, optima)):
        color = CYCLE[i % len(CYCLE)]
        ax.annotate("", xy=a, xytext=theta[0], arrowprops={"arrowstyle": "->", "color": color, "lw": 2})
        ax.scatter(*o, marker="*", s=260, color=color, edgecolor="black", zorder=4)
        ax.scatter(*a, marker="o", s=70, color=color, zorder=4)
        ax.annotate(rf"$\theta^*_{i + 1}$", o, textcoords="offset points", xytext=(8, 6))
    ax.scatter(*theta[0], s=160, color=COLORS["truth"], zorder=5)
    ax.annotate(r"$\theta$", theta[0], textcoords="offset points", xytext=(-20, 8), fontsize=16)
    ax.scatter([], [], marker="*", s=160, color="grey", edgecolor="black", label=r"task optimum $\theta^*_i$")
    ax.scatter([], [], marker="o", s=60, color="grey", label=r"adapted $\theta'_i$ (arrow: the gradient steps)")
    ax.set_xlabel("slope parameter")
    ax.set_ylabel("intercept parameter")
    ax.set_title(title or "MAML's initialisation and the tasks' optima")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig
