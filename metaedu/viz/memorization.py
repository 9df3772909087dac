"""Figures of lecture 09 (meta-learning without memorization).

Every function takes numbers already computed (no training here) and an optional
matplotlib ``ax``, and returns the figure. Colours come from
:func:`metaedu.viz.style.method_color`, one per method across the course.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from metaedu.viz.style import COLORS, axes_for, method_color

#: How the three support conditions of a support ablation are drawn.
SUPPORT_STYLES = {"true": ("own support set", None), "shuffled": ("another task's support set", "//"),
                  "none": ("no support set", "..")}


def _axes(ax, figsize=(9, 4.8)):
    return axes_for(ax, figsize)


def plot_pose_task(images, targets, title: str, n: int = 8, canonical=None, label: str = "y = {:.1f}"):
    """One pose task: ``n`` of its images with their targets (and the canonical drawing first, if given).

    ``label`` formats the number shown above each image (a target, or any per-image value).
    """
    images = np.asarray(images)[:n]
    targets = np.asarray(targets).reshape(-1)[:n]
    panels = len(images) + (canonical is not None)
    fig, axes = plt.subplots(1, panels, figsize=(1.65 * panels, 2.5))
    axes = np.atleast_1d(axes)
    start = 0
    if canonical is not None:
        axes[0].imshow(np.asarray(canonical).squeeze(), cmap="gray_r")
        axes[0].set_title("drawing", fontsize=13, color=COLORS["truth"])
        start = 1
    for ax, img, y in zip(axes[start:], images, targets):
        ax.imshow(img.squeeze(), cmap="gray_r")
        ax.set_title(label.format(float(y)), fontsize=13)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.suptitle(title, fontsize=14)
    fig.tight_layout()
    return fig


def plot_support_ablation(scores: dict, chance: float | None = None, ax=None, title: str | None = None,
                          ylabel: str = "query MSE (lower is better)"):
    """Grouped bars: ``scores[group][support]`` is a Score, ``group`` e.g. "MAML, training characters".

    Each group's three bars show the model with its own support set, another task's and none;
    a model that ignores its support set has three bars of the same height. The colour of a
    group is its method's (the text before the first comma of the group's name).
    """
    fig, ax = _axes(ax, figsize=(max(12, 2.2 * len(scores)), 5.5))  # wide enough for two-line group labels
    groups = list(scores)
    width = 0.26
    for i, group in enumerate(groups):
        color = method_color(group.split(",")[0])
        for j, support in enumerate(("true", "shuffled", "none")):
            if support not in scores[group]:
                continue
            s = scores[group][support]
            label, hatch = SUPPORT_STYLES[support]
            ax.bar(i + (j - 1) * width, s.mean, width, yerr=s.ci95, capsize=4, color=color,
                   alpha=1.0 if support == "true" else 0.55, hatch=hatch, edgecolor="white",
                   label=label if i == 0 else None)
    if chance is not None:
        ax.axhline(chance, color=COLORS["paper"], ls="--", lw=1.5, label=f"predicting the mean ({chance:.1f})")
    ax.set_xticks(range(len(groups)), [g.replace(", ", "\n").replace(" characters", "\ncharacters") for g in groups], fontsize=13)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, None)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=13)
    fig.tight_layout()
    return fig


def plot_beta_sweep(betas: dict, test_scores: dict, gaps: dict, chosen: dict | None = None,
                    highlight: float | None = None, reference: dict | None = None):
    """Two panels against beta (log scale): new-character MSE and the "support ignored" gap on training characters.

    For each method, ``betas[method]`` lists its grid and ``test_scores[method]``, ``gaps[method]`` hold
    one Score per grid value; ``chosen[method]`` is the beta picked on meta-validation (a star);
    ``highlight`` draws a vertical line (the widget's beta) and circles the points at it;
    ``reference[method]`` is the unregularised model's Score (beta = 0), drawn as a dashed line.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    for method in test_scores:
        color = method_color(method)
        x = np.asarray(betas[method], dtype=float)
        for ax, series in ((left, test_scores[method]), (right, gaps[method])):
            mean = np.array([s.mean for s in series])
            ci = np.array([s.ci95 for s in series])
            ax.errorbar(x, mean, yerr=ci, marker="o", capsize=4, color=color, label=method)
            if highlight is not None and highlight in betas[method]:
                i = list(betas[method]).index(highlight)
                ax.plot([x[i]], [mean[i]], marker="o", ms=16, mfc="none", mec=color, mew=2.5, ls="none")
        if reference and method in reference:
            base = method.replace("MR-", "").replace(" (W)", "").replace(" (A)", "")
            left.axhline(reference[method].mean, color=method_color(base), ls="--", lw=1.5, label=f"{base} (no regularizer)")
        if chosen and method in chosen:
            i = list(betas[method]).index(chosen[method])
            left.plot([x[i]], [test_scores[method][i].mean], marker="*", ms=18, color=color, ls="none")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel(r"$\beta$")
        if highlight is not None:
            ax.axvline(highlight, color=COLORS["truth"], lw=1, alpha=0.6)
    left.set_ylabel("MSE on new characters")
    left.set_title("meta-test error (star: chosen on validation)")
    left.set_ylim(0, None)
    right.set_ylabel("MSE(other support) - MSE(own)")
    right.set_title("how much the support set matters\n(training characters)")
    right.axhline(0, color=COLORS["paper"], lw=1)
    left.legend(loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=2, fontsize=12)
    fig.tight_layout()
    return fig


def plot_pose_fit(y_true, predictions: dict, title: str, ax=None):
    """Predicted against true pose on one task's query images; ``predictions``: label -> values."""
    fig, ax = _axes(ax, figsize=(10, 5.5))
    y = np.asarray(y_true).reshape(-1)
    ax.plot([0, 10], [0, 10], color=COLORS["truth"], lw=1.5, label="perfect")
    for label, pred in predictions.items():
        ax.scatter(y, np.asarray(pred).reshape(-1), s=60, label=label, color=method_color(label.split(",")[0]),
                   alpha=0.85 if "after" in label else 0.45)
    ax.set_xlim(-0.3, 10.3)
    ax.set_ylim(-3, 13)
    ax.set_xlabel("true pose (a full turn is 10)")
    ax.set_ylabel("predicted pose")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=12)
    fig.tight_layout()
    return fig


def plot_method_scores(scores: dict, ylabel: str, title: str, ax=None, chance: float | None = None,
                       chance_label: str = "chance"):
    """One bar per method with its 95% interval; ``scores``: method -> Score."""
    fig, ax = _axes(ax, figsize=(10, 4.8))
    names = list(scores)
    ax.bar(range(len(names)), [s.mean for s in scores.values()], yerr=[s.ci95 for s in scores.values()],
           capsize=5, color=[method_color(n) for n in names])
    if chance is not None:
        ax.axhline(chance, color=COLORS["paper"], ls="--", lw=1.5, label=chance_label)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xticks(range(len(names)), [n.replace(" + ", "\n+ ") for n in names], fontsize=13)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, None)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_graphical_model(bottleneck: bool = False, ax=None):
    """The meta-learning graphical model of Yin et al. (their figure 2), redrawn.

    theta -> phi <- D, phi -> y*^, theta -> y*^, x* -> y*^ (observed nodes shaded). Without
    either dashed arrow (D -> phi or phi -> y*^), y*^ is independent of D given theta and x*:
    complete memorization. With ``bottleneck`` the direct path from x* goes through z*.
    """
    fig, ax = _axes(ax, figsize=(7.5, 4.6))
    nodes = {"theta": (0.5, 0.88), "D": (0.12, 0.5), "phi": (0.5, 0.5), "y": (0.88, 0.5), "x": (0.5, 0.1)}
    labels = {"theta": r"$\theta$", "D": r"$\mathcal{D}$", "phi": r"$\phi$", "y": r"$\hat y^*$", "x": r"$x^*$"}
    if bottleneck:
        nodes["x"], nodes["z"] = (0.35, 0.1), (0.72, 0.1)
        labels["z"] = r"$z^*$"
    observed = {"D", "x"}
    for key, (px, py) in nodes.items():
        ax.add_patch(plt.Circle((px, py), 0.075, facecolor="#d9d9d9" if key in observed else "white",
                                edgecolor=COLORS["truth"], lw=2, zorder=3))
        ax.text(px, py, labels[key], ha="center", va="center", fontsize=20, zorder=4)
    edges = [("theta", "phi", "-"), ("D", "phi", "--"), ("phi", "y", "--"), ("theta", "y", "-")]
    edges += [("x", "z", "-"), ("z", "y", "-"), ("theta", "z", "-")] if bottleneck else [("x", "y", "-")]
    for a, b, style in edges:
        (x0, y0), (x1, y1) = nodes[a], nodes[b]
        d = np.hypot(x1 - x0, y1 - y0)
        shrink = 0.08 / d
        ax.annotate("", xy=(x1 - (x1 - x0) * shrink, y1 - (y1 - y0) * shrink),
                    xytext=(x0 + (x1 - x0) * shrink, y0 + (y1 - y0) * shrink),
                    arrowprops=dict(arrowstyle="-|>", lw=2, ls=style, color=COLORS["truth"], mutation_scale=18))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("shaded: observed; dashed: the arrows memorization cuts" if not bottleneck
                 else r"the direct path from $x^*$ now passes through $z^*$", fontsize=13)
    fig.tight_layout()
    return fig


def plot_curves(curves: dict, ylabel: str, title: str, ax=None, log: bool = True):
    """Training curves, one colour per method; ``curves``: method -> (steps, values)."""
    fig, ax = _axes(ax, figsize=(9, 4.5))
    for method, (steps, values) in curves.items():
        ax.plot(np.asarray(steps), np.asarray(values), color=method_color(method), label=method)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
