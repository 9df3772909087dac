"""Plots for the MANN lecture: accuracy by instance, and the memory's reads, writes and usage.

Every function takes data that was already computed (scores, a recorded trace
from ``MANN(..., record=True)``) and returns a figure; none of them trains.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from metaedu.viz.style import COLORS, CYCLE, method_color


def _colour(name: str, i: int) -> str:
    """The method's course colour ("MANN", "LSTM", "nearest neighbour (features)", ...), else the cycle."""
    try:
        return method_color(name)
    except KeyError:
        return CYCLE[i % len(CYCLE)]


def plot_instance_accuracy(results: dict, paper: dict | None = None, chance: float | None = None, ax=None,
                           title: str = "Accuracy by instance of a class"):
    """Our accuracy (with 95% intervals) against the instance number, beside the paper's curves.

    Args:
        results: ``{model name: {instance: Score}}``.
        paper: ``{model name: {instance: accuracy}}`` drawn dashed in the same colour, or None.
        chance: a horizontal line (e.g. 100 / n_classes).
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(12, 5), layout="constrained")
    for i, (name, scores) in enumerate(results.items()):
        color = _colour(name, i)
        ks = sorted(scores)
        ax.errorbar(ks, [scores[k].mean for k in ks], yerr=[scores[k].ci95 for k in ks], marker="o", capsize=3,
                    color=color, label=f"{name} (ours)")
        if paper and name in paper:
            pk = sorted(paper[name])
            ax.plot(pk, [paper[name][k] for k in pk], ls="--", marker="x", color=color, alpha=0.6,
                    label=f"{name} (paper)")
    if chance is not None:
        ax.axhline(chance, color=COLORS["paper"], lw=1, ls=":", label="chance")
    ax.set_xlabel("instance of the class in the episode")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _step_labels(seq, episode: int) -> list[str]:
    """Two lines under each step: the true label, then its instance number."""
    y = seq.y[episode].tolist()
    inst = seq.instance[episode].tolist()
    return [f"{a}\n{b}" for a, b in zip(y, inst)]


def plot_memory_trace(trace: dict, seq, episode: int = 0, max_slots: int | None = None):
    """Heatmaps over one episode: read weights, write weights (summed over heads) and usage, slot x step.

    Under the last panel each step shows its true label and, below it, the instance number
    (how many times that label has been shown so far).
    """
    panels = [
        ("read weights $w^r_t$", trace["read_w"][episode].sum(1)),  # [T, N]
        ("write weights $w^w_t$", trace["write_w"][episode].sum(1)),
        ("usage $w^u_t$", trace["usage"][episode]),
    ]
    T = panels[0][1].shape[0]
    fig, axes = plt.subplots(3, 1, figsize=(max(12, T * 0.3), 10), sharex=True)
    for ax, (name, values) in zip(axes, panels):
        v = values.cpu().numpy().T  # [N, T]
        if max_slots is not None:
            v = v[:max_slots]
        im = ax.imshow(v, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_ylabel("slot")
        ax.set_title(name, loc="left")
        ax.grid(False)
        fig.colorbar(im, ax=ax, pad=0.01)
    axes[-1].set_xticks(range(T))
    axes[-1].set_xticklabels(_step_labels(seq, episode), fontsize=12)
    axes[-1].set_xlabel("step: true label (top) and instance number (bottom)")
    fig.tight_layout()
    return fig


def plot_memory_step(trace: dict, seq, t: int, episode: int = 0, predicted=None, image_size: int | None = None,
                     images=None):
    """The memory at one step of an episode: the input, the memory matrix and the weights over slots.

    ``images`` (``[B, T, ...]``, e.g. the pixels of the same episode) is shown instead of ``seq.x``
    when the network's inputs are not pixels (encoder features).
    """
    x = (seq.x if images is None else images)[episode, t].cpu().numpy()
    side = image_size or int(round(np.sqrt(x.size)))
    memory = trace["memory"][episode, t].cpu().numpy()  # [N, M]
    read_w = trace["read_w"][episode, t].sum(0).cpu().numpy()  # [N]
    write_w = trace["write_w"][episode, t].sum(0).cpu().numpy()
    usage = trace["usage"][episode, t].cpu().numpy()
    slots = np.arange(len(usage))

    fig = plt.figure(figsize=(15, 5.5))
    grid = fig.add_gridspec(3, 3, width_ratios=[1, 2.2, 2.2])
    ax_img = fig.add_subplot(grid[:, 0])
    ax_img.imshow(x.reshape(side, side), cmap="gray_r", vmin=0, vmax=1)
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    ax_img.grid(False)
    for spine in ax_img.spines.values():
        spine.set_visible(False)
    prev = "null" if t == 0 else str(int(seq.y[episode, t - 1]))
    text = f"step {t + 1}: label in = {prev}\ntrue label = {int(seq.y[episode, t])} (instance {int(seq.instance[episode, t])})"
    if predicted is not None:
        p = int(predicted[episode, t, 0])
        text += f"\npredicted = {p}"
        ax_img.set_title(text, fontsize=13, color=COLORS["query"] if p == int(seq.y[episode, t]) else COLORS["support"])
    else:
        ax_img.set_title(text, fontsize=13)

    ax_mem = fig.add_subplot(grid[:, 1])
    ax_mem.imshow(memory, aspect="auto", cmap="coolwarm", vmin=-np.abs(memory).max(), vmax=np.abs(memory).max(),
                  interpolation="nearest")
    ax_mem.set_title("memory $M_t$ (slot x entry)")
    ax_mem.set_ylabel("slot")
    ax_mem.grid(False)

    for row, (name, values, color) in enumerate([("read $w^r_t$", read_w, COLORS["ours"]),
                                                  ("write $w^w_t$", write_w, COLORS["support"]),
                                                  ("usage $w^u_t$", usage, COLORS["baseline"])]):
        ax = fig.add_subplot(grid[row, 2])
        ax.bar(slots, values, color=color, width=0.9)
        ax.set_ylabel(name)
        ax.set_xlim(-0.5, len(slots) - 0.5)
        if row < 2:
            ax.set_xticklabels([])
        else:
            ax.set_xlabel("slot")
    fig.tight_layout()
    return fig
