"""Plots for the metric-learning lecture: an episode's embedding space, attention, ROC, pairs, one query.

Every function takes data (tensors) and an optional ``ax``, returns the figure, and never trains.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from metaedu.evaluation import roc_curve
from metaedu.viz.images import _as_numpy
from metaedu.viz.style import COLORS, CYCLE, axes_for, method_color


def _axes(ax, figsize=None):
    return axes_for(ax, figsize)


def _image_axis(ax) -> None:
    """An axis that only shows an image: no ticks, grid or frame."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _colour(k: int) -> str:
    return CYCLE[k % len(CYCLE)]


def project_2d(*groups: torch.Tensor) -> list[np.ndarray]:
    """Project several ``[n_i, D]`` point sets onto the first two principal axes of all of them together."""
    points = torch.cat([g.detach().float().cpu() for g in groups])
    centre = points.mean(0)
    _, _, v = torch.linalg.svd(points - centre, full_matrices=False)
    axes = v[:2].T  # [D, 2]
    return [((g.detach().float().cpu() - centre) @ axes).numpy() for g in groups]


def plot_embedding(z_support, y_support, z_query, y_query, protos, predictions=None, ax=None, title=None):
    """One episode in the embedding space (PCA to 2-D): support (dots), queries (crosses), prototypes (stars).

    All tensors belong to one episode: ``z_support`` ``[n_support, D]``, ``z_query`` ``[n_query, D]``,
    ``protos`` ``[n_way, D]``; a query predicted wrongly (``predictions``) is circled in black.
    """
    fig, ax = _axes(ax, (9, 5.5))
    s2, q2, c2 = project_2d(z_support, z_query, protos)
    y_support, y_query = y_support.cpu().numpy(), y_query.cpu().numpy()
    for k in range(len(c2)):
        col = _colour(k)
        ax.scatter(*s2[y_support == k].T, color=col, s=45, alpha=0.8)
        ax.scatter(*q2[y_query == k].T, color=col, marker="x", s=45)
        ax.scatter(*c2[k], color=col, marker="*", s=380, edgecolor="black", linewidth=1.2, zorder=3)
    if predictions is not None:
        wrong = predictions.cpu().numpy() != y_query
        ax.scatter(*q2[wrong].T, facecolor="none", edgecolor="black", s=170, linewidth=1.5, label="misclassified")
    ax.scatter([], [], color="grey", s=45, label="support")
    ax.scatter([], [], color="grey", marker="x", s=45, label="query")
    ax.scatter([], [], color="grey", marker="*", s=200, edgecolor="black", label="prototype")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    ax.set_title(title or "an episode in embedding space (colour = class)")
    if ax.figure is fig:
        fig.tight_layout()
    return fig


def plot_attention(attn, y_support, x_support=None, x_query=None, truth=None, ax=None, title=None):
    """Attention weights a(x_hat, x_i) of one query over the support set, bars coloured by class.

    ``attn`` and ``y_support`` are ``[n_support]``; with images, the query and the support images are
    drawn above the bars.
    """
    attn = attn.detach().float().cpu().numpy()
    y = y_support.cpu().numpy()
    n = len(attn)
    if ax is None:
        show_images = x_support is not None and n <= 25
        fig = plt.figure(figsize=(max(6.0, 0.45 * n + 2), 4.2 if show_images else 3.2))
        if show_images:
            grid = fig.add_gridspec(2, n + 1, height_ratios=[1, 3], hspace=0.3)
            ax = fig.add_subplot(grid[1, 1:])
            for i in range(n):
                a = fig.add_subplot(grid[0, i + 1])
                a.imshow(_as_numpy(x_support[i]), cmap="gray_r", vmin=0, vmax=1)
                a.set_xticks([])
                a.set_yticks([])
                a.grid(False)
                for spine in a.spines.values():  # a frame in the class's colour
                    spine.set_visible(True)
                    spine.set_edgecolor(_colour(int(y[i])))
                    spine.set_linewidth(2)
            if x_query is not None:
                a = fig.add_subplot(grid[0, 0])
                a.imshow(_as_numpy(x_query), cmap="gray_r", vmin=0, vmax=1)
                _image_axis(a)
                a.set_title("query", fontsize=13)
        else:
            ax = fig.add_subplot(111)
    fig = ax.figure
    ax.bar(np.arange(n), attn, color=[_colour(int(k)) for k in y])
    if truth is not None:
        for i in np.nonzero(y == int(truth))[0]:
            ax.bar(i, attn[i], fill=False, edgecolor="black", linewidth=1.5)
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels([str(int(k)) for k in y])
    ax.set_xlabel("support example (label)")
    ax.set_ylabel("attention a(x̂, xᵢ)")
    ax.set_ylim(0, max(1e-3, attn.max()) * 1.15)
    ax.set_title(title or "where one query looks in the support set (black: its true class)")
    return fig


def plot_roc(p, y, ax=None, label="Siamese", title=None):
    """ROC curve of a verification score ``p`` (probability of "same") against the truth ``y``."""
    fig, ax = _axes(ax, (6.0, 5.2))
    fpr, tpr, auc = roc_curve(p, y)
    ax.plot(fpr, tpr, color=COLORS["ours"], label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color=COLORS["paper"], linestyle="--", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "verification on test pairs")
    ax.legend(loc="lower right")
    return fig


def plot_pairs(x_1, x_2, p, y, n: int = 8, title=None):
    """``n`` test pairs side by side with p(same); green title: judged right at p = 0.5, red: wrong."""
    n = min(n, len(p))
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 3.8), squeeze=False)
    for j in range(n):
        for row, x in enumerate((x_1, x_2)):
            a = axes[row, j]
            a.imshow(_as_numpy(x[j]), cmap="gray_r", vmin=0, vmax=1)
            _image_axis(a)
        right = (float(p[j]) > 0.5) == bool(y[j])
        axes[0, j].set_title(f"{'same' if y[j] else 'diff'}\np={float(p[j]):.2f}", fontsize=13,
                             color=COLORS["query"] if right else COLORS["support"])
    fig.suptitle(title or "Siamese verification: pairs and p(same) (green: right at p = 0.5, red: wrong)")
    fig.tight_layout()
    return fig


def plot_query(x_query, x_support, y_support, distances, attn, prediction: int, truth: int, title=None):
    """One query of an episode: its image, its distances to the prototypes and its attention over the support set.

    ``distances`` ``[n_way]`` (ProtoNet, squared Euclidean) and ``attn`` ``[n_support]`` (Matching Network).
    ``title`` (e.g. the episode and query) heads the query image's panel, above its class and prediction.
    """
    n_way = len(distances)
    fig = plt.figure(figsize=(15, 4.6))
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 2.2, 3], wspace=0.35)
    a = fig.add_subplot(grid[0])
    a.imshow(_as_numpy(x_query), cmap="gray_r", vmin=0, vmax=1)
    _image_axis(a)
    head = f"{title}\n" if title else ""
    a.set_title(f"{head}query: class {truth}\npredicted {prediction}", fontsize=13,
                color=COLORS["query"] if prediction == truth else COLORS["support"])
    b = fig.add_subplot(grid[1])
    d = distances.detach().float().cpu().numpy()
    b.bar(np.arange(n_way), d, color=[_colour(k) for k in range(n_way)])
    b.bar(truth, d[truth], fill=False, edgecolor="black", linewidth=1.5)
    b.set_xticks(np.arange(n_way))
    b.set_xlabel("class")
    b.set_ylabel("‖f(x) − c_k‖²")
    b.set_title("ProtoNet: distance to prototypes")
    c = fig.add_subplot(grid[2])
    plot_attention(attn, y_support, truth=truth, ax=c, title="Matching Net: attention over support")
    fig.subplots_adjust(top=0.8, bottom=0.16, left=0.04, right=0.98)
    return fig


def plot_accuracy_bars(scores: dict, chance: float | None = None, ax=None, title: str | None = None):
    """Accuracy (%) of several methods with 95% intervals, one bar per method in its course colour.

    ``scores``: method name -> :class:`~metaedu.evaluation.Score` (names known to
    :func:`metaedu.viz.style.method_color` keep their colour; others take the cycle).
    """
    fig, ax = _axes(ax, (10, 4.8))
    names = list(scores)
    colours = []
    for i, name in enumerate(names):
        try:
            colours.append(method_color(name))
        except KeyError:
            colours.append(_colour(i))
    means = [scores[n].mean for n in names]
    ax.bar(np.arange(len(names)), means, yerr=[scores[n].ci95 for n in names], capsize=6, color=colours)
    for i, m in enumerate(means):
        ax.text(i, m / 2, f"{m:.1f}", ha="center", va="center", color="white", fontsize=14, fontweight="bold")
    if chance is not None:
        ax.axhline(chance, color=COLORS["paper"], ls=":", lw=1.5)
        ax.text(len(names) - 0.5, chance, f" chance {chance:.0f}%", va="bottom", ha="right", color=COLORS["paper"])
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "accuracy with 95% intervals")
    return fig
