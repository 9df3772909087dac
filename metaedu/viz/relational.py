"""Figures of lecture 05: an episode drawn as a graph, the meta-knowledge vertices, 2-D regression fits.

Every function takes numbers already computed (no training here) and an optional matplotlib ``ax``,
and returns the figure.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from metaedu.viz.style import CYCLE, axes_for, method_color


def _axes(ax, figsize=None):
    return axes_for(ax, figsize)


def _np(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def plot_episode_graph(
    x_support,
    y_support,
    x_query,
    weights,
    labelled=None,
    prediction=None,
    truth=None,
    title: str | None = None,
    ax=None,
):
    """One query node (centre) and the support nodes (a ring of glyphs) with edges of width ``weights``.

    ``x_support`` ``[S, 1, H, W]``, ``y_support`` ``[S]``, ``x_query`` ``[1, H, W]``, ``weights`` ``[S]``
    (the query's row of an adjacency, summing to one); ``labelled`` ``[S]`` marks the nodes whose label
    is shown (the others are drawn with a dashed grey ring); ``prediction`` and ``truth`` label the query.
    """
    fig, ax = _axes(ax, figsize=(6.5, 6.5))
    w = _np(weights).reshape(-1)
    y = _np(y_support).reshape(-1)
    s = len(w)
    shown = np.ones(s, bool) if labelled is None else _np(labelled).astype(bool).reshape(-1)
    angles = np.pi / 2 - 2 * np.pi * np.arange(s) / s
    pos = np.stack([np.cos(angles), np.sin(angles)], 1)
    top = w.max() if w.max() > 0 else 1.0
    for j in range(s):
        ax.plot(
            [0, pos[j, 0]],
            [0, pos[j, 1]],
            color=method_color("GNN"),
            lw=0.5 + 9 * w[j] / top,
            alpha=0.25 + 0.75 * w[j] / top,
            zorder=1,
        )
        ax.text(
            *(0.45 * pos[j]),
            f"{w[j]:.2f}",
            ha="center",
            va="center",
            fontsize=13,
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8),
            zorder=3,
        )
    zoom = 1.6 if s <= 10 else 1.0
    for j in range(s):
        img = OffsetImage(_np(x_support[j])[0], cmap="gray_r", zoom=zoom)
        edge = CYCLE[int(y[j]) % len(CYCLE)] if shown[j] else "#999999"
        box = AnnotationBbox(
            img, pos[j], frameon=True, zorder=4, bboxprops=dict(edgecolor=edge, lw=3, ls="-" if shown[j] else "--")
        )
        ax.add_artist(box)
        tag = f"class {int(y[j])}" if shown[j] else "no label"
        ax.text(pos[j, 0], pos[j, 1] - 0.3, tag, ha="center", va="top", fontsize=13, color=edge)
    ax.add_artist(
        AnnotationBbox(
            OffsetImage(_np(x_query)[0], cmap="gray_r", zoom=zoom),
            (0, 0),
            frameon=True,
            bboxprops=dict(edgecolor="black", lw=3),
            zorder=5,
        )
    )
    label = "query"
    if prediction is not None:
        label += f": predicted {int(prediction)}"
        if truth is not None:
            label += f", true {int(truth)}"
    ax.text(
        0,
        -0.3,
        label,
        ha="center",
        va="top",
        fontsize=13,
        zorder=6,
        bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none"),
    )
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.75, 1.35)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return fig


def plot_vertex_usage(usage, families, ax=None):
    """Mean A_S of each task family over the meta-knowledge vertices: ``usage`` ``[families, G]``."""
    u = _np(usage)
    fig, ax = _axes(ax, figsize=(8, 4.8))
    im = ax.imshow(u, cmap="Oranges", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(u.shape[1]), [f"h{k + 1}" for k in range(u.shape[1])])
    ax.set_yticks(range(len(families)), families)
    for i in range(u.shape[0]):
        for k in range(u.shape[1]):
            ax.text(
                k,
                i,
                f"{u[i, k]:.2f}",
                ha="center",
                va="center",
                fontsize=12,
                color="white" if u[i, k] > 0.6 else "black",
            )
    ax.set_xlabel("meta-knowledge vertex")
    ax.set_title("which vertices each family's prototypes lean on (mean $A_S$)")
    ax.grid(False)
    fig.colorbar(im, ax=ax, fraction=0.04, label="mean weight")
    fig.tight_layout()
    return fig


def plot_family_fits(t, truths: dict, fits: dict, support: dict, along: dict, mse: dict | None = None):
    """One panel per task family: truth, support points and each method's prediction along a line.

    ``t`` ``[n]`` positions along the line; ``truths[name]`` ``[n]``; ``fits[name]`` maps a method to
    ``[n]``; ``support[name]`` is ``(positions, y)`` of the support points near the line; ``along[name]``
    says which line (an axis label); ``mse[name]`` maps a method to its query MSE on that task.
    """
    names = list(truths)
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 4.6 * rows))
    t = _np(t)
    for ax, name in zip(np.ravel(axes), names):
        ax.plot(t, _np(truths[name]), color="black", lw=2.5, label="truth")
        for method, y in fits[name].items():
            score = f" (MSE {mse[name][method]:.2f})" if mse else ""
            ax.plot(t, _np(y), color=method_color(method), lw=2.2, label=method + score)
        sx, sy = support[name]
        if len(_np(sx)):
            ax.scatter(_np(sx), _np(sy), color="black", marker="^", s=60, zorder=5, label="support (near the line)")
        ax.set_title(name)
        ax.set_xlabel(along[name])
        ax.legend(fontsize=11, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    for ax in np.ravel(axes)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig
