"""Figures of lecture 08 (PLATIPUS): the graphical models, the lower bound, sampled functions and classifiers.

Every function takes data already computed (no training here) and an optional
matplotlib ``ax``, and returns the figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from metaedu.viz.style import COLORS, axes_for, method_color


def _axes(ax, figsize=None):
    return axes_for(ax, figsize)


def _np(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


# ----------------------------------------------------------------------------- graphical models

_NODES = {  # name: (x, y, label, observed)
    "theta": (0.5, 3.2, r"$\theta$", False),
    "phi": (0.5, 2.0, r"$\phi_i$", False),
    "xtr": (-0.35, 0.9, r"$x^{tr}_{i,j}$", True),
    "ytr": (0.15, 0.35, r"$y^{tr}_{i,j}$", True),
    "xts": (1.35, 0.9, r"$x^{test}_{i,j}$", True),
    "yts": (0.85, 0.35, r"$y^{test}_{i,j}$", True),
}
_EDGES = {
    "original": [("theta", "phi"), ("phi", "ytr"), ("phi", "yts"), ("xtr", "ytr"), ("xts", "yts")],
    "after inference": [("theta", "yts"), ("xts", "yts"), ("xtr", "yts"), ("ytr", "yts")],
    "additional dependencies": [
        ("theta", "yts"),
        ("xts", "yts"),
        ("xtr", "yts"),
        ("ytr", "yts"),
        ("xtr", "theta"),
        ("ytr", "theta"),
    ],
}
_TITLES = {
    "original": "(a) the hierarchical model",
    "after inference": r"(b) $\phi_i$ inferred by gradient steps",
    "additional dependencies": r"(c) prior on $\theta$ conditioned on $D^{tr}$",
}


def graphical_models(variants=tuple(_EDGES)):
    """The slides' three graphical models side by side: PLATIPUS's (a) model, (b) hybrid inference, (c) its prior."""
    fig, axes = plt.subplots(1, len(variants), figsize=(5.0 * len(variants), 5.2))
    for ax, variant in zip(np.atleast_1d(axes), variants):
        if variant not in _EDGES:
            raise ValueError(f"variant must be one of {tuple(_EDGES)}, got {variant!r}")
        nodes = dict(_NODES)
        if variant != "original":
            nodes.pop("phi")
        top = 2.55 if variant == "original" else 1.75
        ax.add_patch(
            FancyBboxPatch(
                (-0.8, -0.35), 2.6, top + 0.35, boxstyle="round,pad=0.02", fill=False, lw=1.5, color="#555555"
            )
        )
        ax.text(1.75, top - 0.05, "tasks $i$", ha="right", va="top", fontsize=13)
        ax.add_patch(
            FancyBboxPatch(
                (-0.7, -0.25), 2.4, 1.7, boxstyle="round,pad=0.02", fill=False, lw=1.2, ls="--", color="#777777"
            )
        )
        ax.text(0.5, 1.38, "data points $j$", ha="center", va="top", fontsize=13)
        for name, (x, y, label, observed) in nodes.items():
            ax.add_patch(
                Circle((x, y), 0.28, facecolor="#d9d9d9" if observed else "white", edgecolor="black", lw=1.8, zorder=3)
            )
            ax.text(x, y, label, ha="center", va="center", fontsize=15, zorder=4)
        for a, b in _EDGES[variant]:
            (xa, ya), (xb, yb) = nodes[a][:2], nodes[b][:2]
            ax.add_patch(
                FancyArrowPatch(
                    (xa, ya),
                    (xb, yb),
                    arrowstyle="-|>",
                    mutation_scale=16,
                    lw=1.6,
                    shrinkA=17,
                    shrinkB=17,
                    color="black",
                    zorder=2,
                )
            )
        ax.set_xlim(-0.95, 1.95)
        ax.set_ylim(-0.5, 3.7)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(_TITLES[variant], fontsize=14)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the lower bound on a toy


def plot_elbo(steps, terms: dict, log_evidence: float, ax=None, title: str | None = None):
    """The ELBO and its terms against optimisation steps; the log evidence it bounds as a dashed line."""
    fig, ax = _axes(ax, figsize=(8.5, 4.8))
    styles = {"ELBO": dict(color="black", lw=2.8)}
    palette = iter(["#2c7a3f", "#c0392b", "#7b4ea3"])
    for name, values in terms.items():
        ax.plot(_np(steps), _np(values), label=name, **styles.get(name, dict(color=next(palette))))
    ax.axhline(log_evidence, color=COLORS["paper"], ls="--", lw=2, label=r"$\log p(y)$ (exact)")
    ax.set_xlabel("optimisation step of q")
    ax.set_ylabel("nats")
    ax.set_title(title or "The lower bound and its terms")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- lines or sines


def plot_regression_samples(
    x, truth, x_support, y_support, samples=None, maml=None, ax=None, title=None, label: str = "PLATIPUS samples"
):
    """One ambiguous task: the true function, its support points, sampled functions and MAML's one curve.

    ``samples`` ``[S, n]`` (drawn thin in PLATIPUS's colour), ``maml`` ``[n]`` (MAML's colour).
    """
    fig, ax = _axes(ax, figsize=(8.5, 4.8))
    x = _np(x).reshape(-1)
    ax.plot(x, _np(truth).reshape(-1), color=COLORS["truth"], lw=3, alpha=0.35, label="true function")
    if samples is not None:
        for i, s in enumerate(_np(samples).reshape(-1, len(x))):
            ax.plot(x, s, color=method_color("PLATIPUS"), lw=1.4, ls="--", alpha=0.8, label=label if i == 0 else None)
    if maml is not None:
        ax.plot(x, _np(maml).reshape(-1), color=method_color("MAML"), lw=2.6, label="MAML")
    ax.scatter(
        _np(x_support).reshape(-1),
        _np(y_support).reshape(-1),
        color="black",
        marker="^",
        s=80,
        zorder=5,
        label="support points",
    )
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_active_learning(curves: dict, ax=None, title: str | None = None):
    """Median query MSE (with the interquartile band) against labelled points added; ``curves``: label -> ``[steps, tasks]``."""
    fig, ax = _axes(ax, figsize=(8.5, 4.8))
    styles = [dict(color=method_color("PLATIPUS"), marker="o"), dict(color=COLORS["paper"], marker="s", ls="--")]
    for style, (label, errors) in zip(styles, curves.items()):
        e = _np(errors)
        steps = np.arange(e.shape[0])
        q25, q50, q75 = np.quantile(e, [0.25, 0.5, 0.75], axis=1)
        ax.plot(steps, q50, label=label, **style)
        ax.fill_between(steps, q25, q75, color=style["color"], alpha=0.15)
    ax.set_yscale("log")
    ax.set_xticks(steps)
    ax.set_xlabel("labelled points added to the 5 support points")
    ax.set_ylabel("query MSE (median, quartiles)")
    ax.set_title(title or "Asking where the samples disagree")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- ambiguous glyphs


def _image(ax, img):
    img = _np(img).astype(float)
    img = img[0] if img.ndim == 3 else img
    ax.imshow(img / max(img.max(), 1e-6), cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_ambiguous_support(x_support, y_support, values, attribute_names, title: str | None = None):
    """A task's support set, negatives on the top row and positives below, each with its attributes ticked."""
    x_support, y_support, values = _np(x_support), _np(y_support), _np(values)
    order = [np.flatnonzero(y_support == c) for c in (0, 1)]
    cols = max(len(o) for o in order)
    fig, axes = plt.subplots(2, cols, figsize=(2.9 * cols, 7.4), gridspec_kw={"hspace": 0.55})
    for r, rows in enumerate(order):
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(rows):
                ax.axis("off")
                continue
            i = rows[c]
            _image(ax, x_support[i])
            marks = "\n".join(("✓ " if v == 1 else "✗ ") + name for v, name in zip(values[i], attribute_names))
            ax.set_xlabel(marks, fontsize=13, loc="left")
        axes[r, 0].set_ylabel("positive" if r else "negative", fontsize=14)
    fig.suptitle(title or "An ambiguous support set", fontsize=15)
    fig.subplots_adjust(left=0.05, right=0.97, top=0.92, bottom=0.14)
    return fig


def plot_sampled_decisions(decisions, group_names, hypothesis_names, matched, title: str | None = None, ax=None):
    """Which query images each sampled classifier calls positive: rows = classifiers, columns = query images.

    ``decisions`` ``[S, n]`` (1 = positive), the columns grouped by query group (``group_names``,
    equal sizes); ``matched`` ``[S]`` the index of the hypothesis each classifier is closest to.
    """
    d = _np(decisions).astype(float)
    fig, ax = _axes(ax, figsize=(11, 0.45 * d.shape[0] + 2.6))
    ax.imshow(d, cmap="Reds", vmin=-0.3, vmax=1.2, aspect="auto")
    per = d.shape[1] // len(group_names)
    for g in range(1, len(group_names)):
        ax.axvline(g * per - 0.5, color="black", lw=1.5)
    ax.set_xticks([g * per + (per - 1) / 2 for g in range(len(group_names))], group_names, fontsize=12)
    ax.set_yticks(range(d.shape[0]), [hypothesis_names[int(m)] for m in _np(matched)], fontsize=12)
    ax.set_xlabel("query images (dark = called positive)")
    ax.set_ylabel("sampled classifier: closest hypothesis")
    ax.grid(False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
