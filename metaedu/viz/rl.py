"""Figures of lecture 10 (meta-RL): reward over an episode with a failing motor, prediction errors,
2-D navigation paths, paired results per seed or per goal. Every function takes results already computed and returns the figure."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import torch

from metaedu.viz.style import axes_for, method_color

#: the course's colour keys of lecture 10's methods
COLOR_KEYS = {"mb": "mb", "mb_de": "mb_dynamic_evaluation", "grbal": "grbal", "rebal": "rebal",
              "maml": "maml_rl", "pretrained": "pretrained", "rebal_long": "rebal",
              "meta": "mql_no_adaptation", "new_only": "mql_new_data_only", "uniform": "mql_uniform_reuse",
              "weighted": "mql_weighted_reuse", "mql": "mql"}


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


def ranking_bars(returns: dict[str, torch.Tensor], ranking: list[str], controls=("none", "constant"), ax=None,
                 title: str | None = None, xlabel: str = "extrinsic return per lifetime (goals reached)"):
    """Horizontal bars, best on top, with 95% intervals over inner runs; the control programs in grey."""
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(ranking) + 1.5)) if ax is None else (ax.figure, ax)
    means = [float(returns[k].double().mean()) for k in ranking]
    halves = [1.96 * float(returns[k].double().std()) / len(returns[k]) ** 0.5 for k in ranking]
    colors = ["#9a9a9a" if k in controls else method_color("curiosity") for k in ranking]
    y = np.arange(len(ranking))[::-1]
    ax.barh(y, means, xerr=halves, color=colors, capsize=4)
    ax.set_yticks(y, ranking)
    ax.set_xlabel(xlabel)
    ax.set_xlim(left=0)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def visit_maps(maps: dict[str, torch.Tensor], goal: tuple[int, int], titles: dict[str, str] | None = None):
    """Visit counts ``[size, size]`` per program on a log colour scale, the start (0, 0) and the goal marked."""
    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 4.8), squeeze=False)
    top = max(float(m.max()) for m in maps.values())
    for ax, (name, m) in zip(axes[0], maps.items()):
        shown = ax.imshow(np.log10(1 + m.numpy()), cmap="magma", vmin=0, vmax=np.log10(1 + top))
        ax.scatter([0], [0], marker="o", s=90, color="white", edgecolor="black", label="start")
        ax.scatter([goal[1]], [goal[0]], marker="*", s=300, color="#2ca02c", edgecolor="black", label="goal")
        ax.set_title((titles or {}).get(name, name))
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=list(axes[0]), label="log10(1 + visits)")
    axes[0][0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, frameon=False)
    return fig


def paired_points(values: dict[str, torch.Tensor], names: dict[str, str], ylabel: str, unit: str = "seed", ax=None,
                  title: str | None = None):
    """One column per method: a dot per ``unit`` (seed, goal), the same unit joined across columns by a grey
    line (the comparison is paired), and the mean with its 95% interval over units as a black bar."""
    keys = list(values)
    fig, ax = axes_for(ax, (2.1 * len(keys) + 2.5, 5.2))
    data = np.stack([values[k].double().numpy() for k in keys])  # [methods, units]
    x = np.arange(len(keys))
    for j in range(data.shape[1]):
        ax.plot(x, data[:, j], color="#9a9a9a", lw=0.7, alpha=0.6, zorder=1)
    for i, k in enumerate(keys):
        ax.scatter(np.full(data.shape[1], x[i]), data[i], s=28, color=method_color(COLOR_KEYS.get(k, k)),
                   edgecolor="black", linewidth=0.4, zorder=2)
        half = 1.96 * data[i].std(ddof=1) / data.shape[1] ** 0.5 if data.shape[1] > 1 else 0.0
        ax.errorbar(x[i] + 0.18, data[i].mean(), yerr=half, fmt="_", color="black", markersize=18, capsize=5,
                    lw=2, zorder=3)
    ax.set_xticks(x, [textwrap.fill(names.get(k, k), 15) for k in keys])
    ax.set_xlim(-0.5, len(keys) - 0.3)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"one dot per {unit}; black: mean and 95% interval over {data.shape[1]} {unit}s")
    fig.tight_layout()
    return fig
