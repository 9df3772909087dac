"""Figures of lecture 11 (CACTUs): augmented views, clusters with their purity, constructed tasks, results."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from metaedu.viz.style import method_color


def _img(x) -> np.ndarray:
    x = torch.as_tensor(x).float()
    if x.max() > 1.5:
        x = x / 255
    return x.squeeze().cpu().numpy()


def show_views(images: torch.Tensor, views: torch.Tensor):
    """Each drawing (top row) and one random view of it (bottom row): what the contrastive loss pairs."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        for row, source in enumerate((images, views)):
            axes[row, i].imshow(_img(source[i]), cmap="gray_r", vmin=0, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("drawing", fontsize=13, loc="left")
    axes[1, 0].set_title("a random view", fontsize=13, loc="left")
    fig.tight_layout()
    return fig


def plot_loss(history, title: str):
    """A training loss against the step, smoothed."""
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(history.steps, history["loss"], color="#bbbbbb", linewidth=1, label="each step")
    ax.plot(history.steps, history.smoothed("loss", 10), color="#1f6fb4", label="smoothed (10 steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def show_clusters(images: torch.Tensor, assignment: torch.Tensor, purity: torch.Tensor, rows: int = 6,
                  per_row: int = 8, seed: int = 0):
    """``rows`` random clusters (of at least ``per_row`` members), ``per_row`` drawings each, purity on the left."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.bincount(assignment)
    big = torch.nonzero(sizes >= per_row).flatten()
    chosen = big[torch.randperm(len(big), generator=g)[:rows]]
    fig, axes = plt.subplots(len(chosen), per_row, figsize=(1.3 * per_row + 1.6, 1.35 * len(chosen)), squeeze=False)
    for r, c in enumerate(chosen.tolist()):
        members = torch.nonzero(assignment == c).flatten()
        members = members[torch.randperm(len(members), generator=g)[:per_row]]
        for j, ax in enumerate(axes[r]):
            ax.imshow(_img(images[members[j]]), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"purity {float(purity[c]):.2f}\n{int(sizes[c])} members", fontsize=12, rotation=0,
                              ha="right", va="center")
    fig.suptitle("Clusters of partition 0 (one per row)", fontsize=15)
    fig.tight_layout()
    return fig


def plot_purity(purity: torch.Tensor, chance: torch.Tensor, sizes: torch.Tensor):
    """Histogram of cluster purity, against the same clusters with shuffled labels."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bins = np.linspace(0, 1, 21)
    ok = ~torch.isnan(purity)
    ax.hist(purity[ok].numpy(), bins=bins, weights=sizes[ok].numpy(), color="#2ca02c", alpha=0.8,
            label="clusters (weighted by size)")
    ax.hist(chance[ok].numpy(), bins=bins, weights=sizes[ok].numpy(), histtype="step", color="#444444",
            linewidth=2.2, label="same clusters, labels shuffled")
    ax.set_xlabel("purity: share of the commonest character")
    ax.set_ylabel("drawings")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def partition_figure(images: torch.Tensor, assignment: torch.Tensor, purity: torch.Tensor, needed: int):
    """The widget's figure: every cluster's purity against its size, and the four largest clusters."""
    sizes = torch.bincount(assignment)
    fig = plt.figure(figsize=(12, 4.6))
    ax = fig.add_axes([0.07, 0.14, 0.42, 0.76])
    usable = sizes >= needed
    ax.scatter(sizes[usable].numpy(), purity[usable].numpy(), color="#2ca02c", label=f"can fill a task (≥ {needed})")
    ax.scatter(sizes[~usable].numpy(), purity[~usable].numpy(), color="#bbbbbb", label="too small: dropped")
    ax.set_xlabel("cluster size")
    ax.set_ylabel("purity")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"k = {len(sizes)}: mean purity {float(purity.nanmean()):.2f}, {int(usable.sum())} usable")
    ax.legend(loc="upper right", fontsize=11)
    largest = torch.argsort(sizes, descending=True)[:4]
    for r, c in enumerate(largest.tolist()):
        members = torch.nonzero(assignment == c).flatten()[:6]
        for j, m in enumerate(members.tolist()):
            sub = fig.add_axes([0.55 + 0.072 * j, 0.72 - 0.2 * r, 0.065, 0.17])
            sub.imshow(_img(images[m]), cmap="gray_r", vmin=0, vmax=1)
            sub.axis("off")
            if j == 0:
                sub.set_title(f"purity {float(purity[c]):.2f}", fontsize=10, loc="left")
    return fig


def show_constructed_episode(images: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor, title: str):
    """A constructed task: one row per pseudo-class; the first column is the support drawing."""
    n_way, per = idx.shape
    fig, axes = plt.subplots(n_way, per, figsize=(1.5 * per + 1.2, 1.5 * n_way), squeeze=False)
    for r in range(n_way):
        for j in range(per):
            ax = axes[r, j]
            ax.imshow(_img(images[idx[r, j]]), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"char {int(labels[idx[r, j]])}", fontsize=9)
        axes[r, 0].set_ylabel(f"class {r}", fontsize=12, rotation=0, ha="right", va="center")
    axes[0, 0].set_xlabel("support", fontsize=11)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


def plot_accuracies(values: dict[str, list[torch.Tensor]], settings: list[str], colors: dict[str, str] | None = None):
    """Mean accuracy with 95% intervals: one group of bars per setting, one bar per method."""
    from metaedu.evaluation import mean_ci

    names = list(values)
    fig, ax = plt.subplots(figsize=(11, 4.8))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        scores = [mean_ci(v) for v in values[name]]
        x = np.arange(len(settings)) + (i - (len(names) - 1) / 2) * width
        ax.bar(x, [s.mean for s in scores], width, yerr=[s.ci95 for s in scores], capsize=3, label=name,
               color=(colors or {}).get(name) or method_color(name))
    ax.set_xticks(np.arange(len(settings)))
    ax.set_xticklabels(settings)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.axhline(20, color="#999999", linestyle=":", linewidth=1.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=11)
    ax.set_title("5-way test episodes, evaluation alphabets")
    fig.tight_layout()
    return fig
