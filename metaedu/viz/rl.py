"""Figures of lecture 10 (meta-RL): reward over an episode with a failing motor, prediction errors,
2-D navigation paths. Every function takes results already computed and returns the figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from metaedu.viz.style import method_color

#: the course's colour keys of lecture 10's methods
COLOR_KEYS = {"mb": "mb", "mb_de": "mb_dynamic_evaluation", "grbal": "grbal", "rebal": "rebal",
              "maml": "maml_rl", "pretrained": "pretrained"}


def _interval(values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% half-width over the first dimension (episodes), per step."""
    v = values.double()
    mean = v.mean(0)
    half = 1.96 * v.std(0, unbiased=True) / v.shape[0] ** 0.5 if v.shape[0] > 1 else torch.zeros_like(mean)
    return mean.numpy(), half.numpy()


def reward_over_time(rewards: dict[str, torch.Tensor], names: dict[str, str], fail_step: int | None = None,
                     ax=None, title: str | None = None):
    """Reward per step (mean and 95% band over episodes) for each method; ``rewards[m]`` is ``[episodes, T]``."""
    fig, ax = plt.subplots(figsize=(10, 4.8)) if ax is None else (ax.figure, ax)
    for method, r in rewards.items():
        mean, half = _interval(r)
        steps = np.arange(len(mean))
        color = method_color(COLOR_KEYS.get(method, method))
        ax.plot(steps, mean, color=color, lw=2.2, label=names.get(method, method))
        ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.18, lw=0)
    if fail_step is not None:
        ax.axvline(fail_step, color="black", ls=":", lw=1.5)
        ax.annotate("motor fails", (fail_step, 0.02), xycoords=("data", "axes fraction"), xytext=(6, 0),
                    textcoords="offset points", fontsize=13)
    ax.set_xlabel("time step")
    ax.set_ylabel("reward per step")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=13, frameon=False)
    fig.tight_layout()
    return fig


def before_after_bars(before: torch.Tensor, after: torch.Tensor, labels=("theta (before)", "theta' (after)"),
                      ylabel: str = "prediction error", ax=None, title: str | None = None):
    """Two bars with 95% intervals over episodes, and each episode's pair joined by a grey line."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5)) if ax is None else (ax.figure, ax)
    values = [before.double().numpy(), after.double().numpy()]
    means = [v.mean() for v in values]
    halves = [1.96 * v.std(ddof=1) / len(v) ** 0.5 for v in values]
    ax.bar([0, 1], means, yerr=halves, color=["#bbbbbb", method_color("grbal")], capsize=6, width=0.6)
    for b, a in zip(*values):
        ax.plot([0, 1], [b, a], color="#555555", lw=0.8, alpha=0.6)
    ax.set_xticks([0, 1], labels)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def navigation_paths(positions: dict[str, torch.Tensor], goals: torch.Tensor, titles: dict[str, str],
                     episodes: int, shown: int = 4):
    """One panel per stage (e.g. before / after one step): paths ``[N K, H + 1, 2]`` of the first ``shown``
    goals (K = ``episodes`` paths each, one colour per goal), the goals as stars."""
    fig, axes = plt.subplots(1, len(positions), figsize=(5.2 * len(positions), 5.2), squeeze=False)
    palette = plt.get_cmap("tab10")
    for ax, (stage, pos) in zip(axes[0], positions.items()):
        for g in range(shown):
            color = palette(g % 10)
            for k in range(episodes):
                path = pos[g * episodes + k].numpy()
                ax.plot(path[:, 0], path[:, 1], color=color, lw=1.2, alpha=0.7)
            ax.scatter(*goals[g].numpy(), marker="*", s=320, color=color, edgecolor="black", zorder=5)
        ax.scatter([0], [0], marker="o", s=60, color="black", zorder=5)
        ax.set_xlim(-0.75, 0.75)
        ax.set_ylim(-0.75, 0.75)
        ax.set_aspect("equal")
        ax.set_title(titles.get(stage, stage))
        ax.set_xlabel("x")
    axes[0][0].set_ylabel("y")
    fig.tight_layout()
    return fig
