"""Figures of lecture 07 (MAML as hierarchical Bayes, LLAMA).

Every function takes numbers already computed (nothing trains here) and an optional
matplotlib ``ax``, and returns the figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle, Ellipse, FancyArrowPatch, FancyBboxPatch

from metaedu.viz.style import COLORS, axes_for, method_color


def _axes(ax, figsize=None):
    return axes_for(ax, figsize)


def _np(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=float)


def plot_graphical_model(ax=None):
    """The hierarchical model theta -> phi_j -> x_jn, with plates over tasks (J) and points (N)."""
    fig, ax = _axes(ax, figsize=(8, 6.5))
    r, cx = 0.07, 0.36
    nodes = {
        "theta": (0.87, r"$\theta$", "white", "meta-parameters, shared by all tasks"),
        "phi": (0.56, r"$\phi_j$", "white", "parameters of task $j$"),
        "x": (0.25, r"$\mathbf{x}_{j_n}$", "#d9d9d9", "observed data"),
    }
    for y, label, face, words in nodes.values():
        ax.add_patch(Circle((cx, y), r, facecolor=face, edgecolor="black", lw=2, zorder=3))
        ax.text(cx, y, label, ha="center", va="center", fontsize=22, zorder=4)
        ax.text(cx + r + 0.04, y, words, va="center", fontsize=14)
    for a, b in (("theta", "phi"), ("phi", "x")):
        ax.add_patch(
            FancyArrowPatch(
                (cx, nodes[a][0] - r),
                (cx, nodes[b][0] + r),
                arrowstyle="-|>",
                mutation_scale=24,
                lw=2,
                color="black",
                zorder=2,
            )
        )
    ax.add_patch(FancyBboxPatch((0.06, 0.03), 1.0, 0.66, boxstyle="round,pad=0.01", fill=False, lw=1.8))
    ax.add_patch(FancyBboxPatch((0.16, 0.12), 0.8, 0.28, boxstyle="round,pad=0.01", fill=False, lw=1.8))
    ax.text(0.94, 0.13, r"$n = 1 \dots N$", ha="right", va="bottom", fontsize=14)
    ax.text(1.04, 0.045, r"$j = 1 \dots J$", ha="right", va="bottom", fontsize=14)
    ax.set_xlim(0, 1.12)
    ax.set_ylim(0, 0.97)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("The hierarchical model behind MAML")
    return fig


def _ellipse(ax, mean, cov, scale, **kw):
    values, vectors = np.linalg.eigh(cov)
    values = np.clip(values, 0, None)
    angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
    width, height = 2 * scale * np.sqrt(values[-1]), 2 * scale * np.sqrt(values[0])
    ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, **kw))


def plot_early_stopping_prior(
    X, y, theta, path, covariances: dict, maps: dict, ax=None, title: str | None = None, limits=None
):
    """Two parameters: likelihood contours, gradient-descent iterates, prior ellipses N(theta, Q_k), MAP points.

    ``path``: iterates ``[k + 1, 2]``; ``covariances``: k -> Q_k ``[2, 2]``; ``maps``: k -> MAP under Q_k.
    Each ellipse is the prior's 1-standard-deviation contour; the iterate after k steps should sit on
    the MAP marker of the same k.
    """
    fig, ax = _axes(ax, figsize=(8.5, 7))
    X, y, theta, path = _np(X), _np(y), _np(theta), _np(path)
    least_squares = np.linalg.lstsq(X, y, rcond=None)[0]
    if limits is None:
        pts = np.vstack([path, least_squares[None], theta[None]])
        span = np.ptp(pts, axis=0).max() * 0.7 + 1e-9
        centre = pts.mean(0)
        limits = (centre[0] - span, centre[0] + span, centre[1] - span, centre[1] + span)
    g0, g1 = np.meshgrid(np.linspace(limits[0], limits[1], 200), np.linspace(limits[2], limits[3], 200))
    grid = np.stack([g0.ravel(), g1.ravel()], 1)
    nll = 0.5 * ((grid @ X.T - y) ** 2).sum(1).reshape(g0.shape)
    levels = np.quantile(nll, [0.01, 0.04, 0.1, 0.2, 0.35, 0.55])
    ax.contour(g0, g1, nll, levels=levels, colors="#9e9e9e", linewidths=1.2)
    cmap = plt.get_cmap("viridis")
    ks = sorted(covariances)
    for i, k in enumerate(ks):
        color = cmap(i / max(len(ks) - 1, 1) * 0.85)
        _ellipse(ax, theta, _np(covariances[k]), 1.0, edgecolor=color, lw=2.2, ls="--")
        m = _np(maps[k])
        ax.scatter(*m, s=260, facecolors="none", edgecolors=[color], linewidths=2.5, zorder=5)
        ax.annotate(f"k = {k}", m, xytext=(10, -16), textcoords="offset points", fontsize=13, color=color)
    ax.plot(
        path[:, 0],
        path[:, 1],
        "-o",
        color=method_color("MAML"),
        ms=6,
        lw=1.8,
        zorder=6,
        label=r"gradient-descent iterates $\phi_{(k)}$",
    )
    ax.scatter(*theta, marker="s", s=110, color="black", zorder=7, label=r"$\theta = \phi_{(0)}$ (prior mean)")
    ax.scatter(*least_squares, marker="*", s=320, color=COLORS["support"], zorder=7, label="least-squares solution")
    ax.scatter([], [], s=200, facecolors="none", edgecolors="gray", linewidths=2.5, label=r"MAP under $N(\theta, Q_k)$")
    ax.plot([], [], ls="--", color="gray", label=r"prior $N(\theta, Q_k)$, 1 s.d.")
    ax.plot([], [], color="#9e9e9e", label=r"contours of $\frac{1}{2}\|y - X\phi\|^2$")
    ax.set_xlim(limits[0], limits[1])
    ax.set_ylim(limits[2], limits[3])
    ax.set_aspect("equal")
    ax.set_xlabel(r"$\phi_1$")
    ax.set_ylabel(r"$\phi_2$")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=12)
    ax.set_title(title or "Early stopping is a Gaussian prior")
    return fig


def plot_predictive(
    x,
    truth,
    x_support,
    y_support,
    point=None,
    samples=None,
    band=None,
    ax=None,
    title: str | None = None,
    method: str = "LLAMA",
    n_curves: int = 8,
):
    """One task: the true function, support points, MAML's single curve and a method's samples and band.

    ``point``: MAML's prediction on ``x``; ``samples``: ``[S, len(x)]`` predictions of posterior draws;
    ``band``: (low, high) edges of a central predictive band on ``x``.
    """
    fig, ax = _axes(ax, figsize=(8, 4.8))
    xs = _np(x).ravel()
    ax.plot(xs, _np(truth).ravel(), color=COLORS["truth"], lw=2.5, label="true function")
    if band is not None:
        ax.fill_between(
            xs,
            _np(band[0]).ravel(),
            _np(band[1]).ravel(),
            color=method_color(method),
            alpha=0.22,
            label=f"{method} 90% predictive band",
        )
    if samples is not None:
        s = _np(samples).reshape(-1, len(xs))
        for i in range(min(n_curves, len(s))):
            ax.plot(
                xs,
                s[i],
                color=method_color(method),
                lw=1.0,
                alpha=0.6,
                label=f"{method} posterior draws" if i == 0 else None,
            )
    if point is not None:
        ax.plot(xs, _np(point).ravel(), color=method_color("MAML"), lw=2.5, ls="--", label="MAML (one curve)")
    ax.scatter(
        _np(x_support).ravel(),
        _np(y_support).ravel(),
        color=COLORS["support"],
        marker="^",
        s=90,
        zorder=6,
        label=f"K = {len(_np(x_support).ravel())} support points",
    )
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=12)
    return fig


def plot_calibration(levels, coverage: dict, ax=None, title: str | None = None, labels: dict | None = None):
    """Observed coverage of central predictive bands against their nominal level (the diagonal is calibrated).

    ``coverage``: method -> list of :class:`~metaedu.evaluation.Score` (percent), one per level; the
    method's name picks its course colour, ``labels`` optionally renames it in the legend.
    """
    fig, ax = _axes(ax, figsize=(6.8, 6))
    lv = 100 * _np(levels)
    ax.plot([0, 100], [0, 100], color="gray", lw=1.5, ls=":", label="calibrated")
    for name, scores in coverage.items():
        mean = np.array([s.mean for s in scores])
        ci = np.array([s.ci95 for s in scores])
        ax.errorbar(
            lv, mean, yerr=ci, marker="o", capsize=4, color=method_color(name), label=(labels or {}).get(name, name)
        )
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal level of the central band (%)")
    ax.set_ylabel("held-out points inside it (%)")
    ax.legend(loc="upper left", fontsize=12)
    ax.set_title(title or "Calibration of the predictive bands")
    return fig
