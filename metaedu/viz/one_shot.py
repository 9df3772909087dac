"""Figures of the one-shot lecture (00): a character's strokes, the baselines' scores, a live episode.

Every function takes data (and an optional matplotlib ``ax``) and returns the figure; none trains.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from metaedu.viz.images import _as_numpy
from metaedu.viz.style import COLORS, axes_for, method_color


def _axes(ax, figsize=None):
    return axes_for(ax, figsize)


def plot_strokes(strokes: list[np.ndarray], ax=None, title: str = ""):
    """A character type as its pen strokes: colour gives the stroke's place in the drawing order
    (first light, last dark), the number sits at the stroke's first point, and arrowheads show the
    direction the pen moves along it."""
    from metaedu.data.glyphs import normalised_strokes

    fig, ax = _axes(ax, (4.2, 4.2))
    parts = normalised_strokes(strokes)
    cmap = plt.get_cmap("viridis")
    for i, s in enumerate(parts):
        color = cmap(0.15 + 0.7 * i / max(len(parts) - 1, 1))
        ax.plot(s[:, 0], s[:, 1], "-", lw=3.5, color=color, solid_capstyle="round")
        ax.plot(*s[0], "o", color="black", ms=6)
        ax.annotate(str(i + 1), s[0], xytext=(-12, 6), textcoords="offset points", fontsize=14, weight="bold")
        for frac in (0.35, 0.75):  # two arrowheads along the stroke, pointing the way the pen moves
            j = min(int(frac * (len(s) - 1)), len(s) - 2)
            if np.linalg.norm(s[j + 1] - s[j]) > 0:
                ax.annotate("", xy=s[j + 1], xytext=s[j],
                            arrowprops=dict(arrowstyle="-|>", color=color, lw=0, mutation_scale=22))
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.axis("off")
    ax.margins(0.12)
    if title:
        ax.set_title(title, fontsize=14)
    return fig


def plot_training(history, ax=None, window: int = 20, title: str | None = None):
    """A classifier's training: cross-entropy (left axis, log) and batch accuracy (right axis), running means."""
    fig, ax = _axes(ax, (8.5, 3.8))
    steps = history.steps
    ax.plot(steps, history.smoothed("loss", window), color=COLORS["ours"], label="cross-entropy")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy", color=COLORS["ours"])
    right = ax.twinx()
    right.plot(steps, [100 * a for a in history.smoothed("accuracy", window)], color=COLORS["baseline"],
               label="batch accuracy")
    right.set_ylim(0, 100)
    right.set_ylabel("batch accuracy (%)", color=COLORS["baseline"])
    right.grid(False)
    right.spines["right"].set_visible(True)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_scores(scores: dict[str, dict], settings: list[str], methods: dict[str, str] | None = None,
                reference: tuple[float, str] | None = None, ax=None, title: str | None = None):
    """Accuracy bars with 95% intervals: ``scores[label][setting]`` is a Score.

    ``methods`` maps a label to its course-wide method name for the colour
    (:func:`~metaedu.viz.style.method_color`; default: the label itself). ``reference`` =
    (value, label) draws a dashed line (e.g. human accuracy). The legend sits outside the
    plot, to the right, so it never covers a bar.
    """
    methods = methods or {}
    fig, ax = _axes(ax, (9.5, 4.2))
    x = np.arange(len(settings))
    width = 0.8 / max(len(scores), 1)
    for j, (method, by_setting) in enumerate(scores.items()):
        pos = x - 0.4 + width * (j + 0.5)
        means = [by_setting[s].mean for s in settings]
        errs = [by_setting[s].ci95 for s in settings]
        ax.bar(pos, means, width=width * 0.95, yerr=errs, capsize=4, color=method_color(methods.get(method, method)), label=method)
        for p, m in zip(pos, means):
            ax.text(p, m + 2, f"{m:.0f}", ha="center", va="bottom", fontsize=12)
    if reference is not None:
        ax.axhline(reference[0], color=COLORS["truth"], ls="--", lw=1.5, label=reference[1])
    ax.set_xticks(x, settings)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def episode_with_predictions(episode, predictions=None, title: str = "", max_classes: int = 10):
    """The first episode of ``episode`` (an ``Episodes`` batch), a column per class: its support image(s)
    on top (red frames), one query below (green frame). With ``predictions`` (``[n_query_total]`` labels of
    that episode's queries) a wrong prediction turns the query's frame red and names the label chosen."""
    n_way, k_shot = episode.n_way, episode.k_shot
    shown = min(n_way, max_classes)
    fig, axes = plt.subplots(k_shot + 1, shown, figsize=(1.15 * shown + 0.6, 1.2 * (k_shot + 1) + 0.7), squeeze=False)
    xs, ys = episode.x_support[0].cpu(), episode.y_support[0].cpu()
    xq, yq = episode.x_query[0].cpu(), episode.y_query[0].cpu()
    pred = None if predictions is None else torch.as_tensor(predictions).reshape(-1).cpu()
    for c in range(shown):
        support = xs[ys == c]
        for k in range(k_shot):
            ax = axes[k, c]
            ax.imshow(_as_numpy(support[k]), cmap="gray_r", vmin=0, vmax=1)
            _frame(ax, COLORS["support"])
        q = int(torch.nonzero(yq == c)[0])
        ax = axes[k_shot, c]
        ax.imshow(_as_numpy(xq[q]), cmap="gray_r", vmin=0, vmax=1)
        right = pred is None or int(pred[q]) == c
        _frame(ax, COLORS["query"] if right else COLORS["support"])
        if pred is not None:
            ax.set_xlabel("✓" if right else f"✗ → {int(pred[q])}", fontsize=13,
                          color=COLORS["query"] if right else COLORS["support"])
        axes[0, c].set_title(str(c), fontsize=13)
    axes[0, 0].set_ylabel("support", fontsize=13)
    axes[k_shot, 0].set_ylabel("query", fontsize=13)
    more = f" (first {shown} of {n_way} classes)" if shown < n_way else ""
    fig.suptitle(title + more, fontsize=14)
    fig.tight_layout()
    return fig


def _frame(ax, color: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(color)
        spine.set_linewidth(2.5)
