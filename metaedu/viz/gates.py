"""Plots of the meta-learner LSTM's gates (Ravi & Larochelle 2017, figure of gate values).

Inputs come from :func:`metaedu.algorithms.meta_lstm.trace_episode`: gate tensors
``[T, tasks, P]`` (update step, episode, learner coordinate) and ``layers``, the
coordinate range of each layer of the learner. These functions only draw.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
import torch

from metaedu.viz.style import COLORS, CYCLE


def _layer_values(gate: torch.Tensor, sl: slice) -> np.ndarray:
    """``[T, tasks, P]`` -> ``[T, tasks * layer_size]`` values of one layer at each step."""
    return gate[:, :, sl].reshape(gate.shape[0], -1).float().numpy()


def plot_gates(gate: torch.Tensor, layers: dict[str, slice], name: str = "forget gate", n_lines: int = 25,
               axes=None, title: str | None = None, seed: int = 0):
    """One panel per learner layer: a gate's values across the T update steps.

    Thin lines follow ``n_lines`` randomly chosen coordinates of the first episode; the bold
    line is the mean over all coordinates and episodes, the band the 5-95% range.
    """
    if gate.dim() != 3:
        raise ValueError(f"gate must be [T, tasks, P], got shape {tuple(gate.shape)}")
    if axes is None:
        fig, axes = plt.subplots(1, len(layers), figsize=(2.6 * len(layers), 2.8), sharey=True, squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    steps = np.arange(1, gate.shape[0] + 1)
    rng = np.random.default_rng(seed)
    for ax, (layer, sl) in zip(axes, layers.items()):
        values = _layer_values(gate, sl)  # [T, n]
        first = gate[:, 0, sl].float().numpy()  # [T, layer_size]
        pick = rng.choice(first.shape[1], size=min(n_lines, first.shape[1]), replace=False)
        ax.plot(steps, first[:, pick], color=COLORS["paper"], lw=0.6, alpha=0.6)
        lo, hi = np.percentile(values, [5, 95], axis=1)
        ax.fill_between(steps, lo, hi, color=COLORS["ours"], alpha=0.2, lw=0)
        ax.plot(steps, values.mean(1), color=COLORS["ours"], lw=2.4)
        ax.set_title(layer, fontsize=12)
        ax.set_xlabel("update t")
        ax.set_xticks(steps if len(steps) <= 12 else steps[:: max(1, len(steps) // 6)])
    axes[0].set_ylabel(name)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


def gate_figure(traces: dict[str, dict], title: str | None = None):
    """The paper's four panels in one figure: rows = (setting, gate), columns = learner layers.

    ``traces`` maps a setting name ("1-shot", "5-shot") to a ``trace_episode`` result.
    """
    rows = [(setting, key) for setting in traces for key in ("forget_gate", "input_gate")]
    layers = next(iter(traces.values()))["layers"]
    fig, axes = plt.subplots(len(rows), len(layers), figsize=(2.5 * len(layers), 2.3 * len(rows)), squeeze=False)
    for r, (setting, key) in enumerate(rows):
        label = f"{setting}\n{key.replace('_', ' ')}"
        plot_gates(traces[setting][key], layers, name=label, axes=axes[r])
        if key == "forget_gate":
            for ax in axes[r]:
                ax.set_xlabel("")
    if title:
        fig.suptitle(title, fontsize=14)
    fig.tight_layout()
    return fig


def episode_step_figure(trace: dict, step: int, task: int = 0):
    """The state of one episode after ``step`` updates: gates per layer, and the learner's accuracy so far.

    Left: each layer's input and forget gate values at update ``step`` (median with the 5-95% range).
    Right: D_test accuracy of theta_0 .. theta_T with the current step marked, and the D_train loss.
    """
    T = trace["input_gate"].shape[0]
    if not 0 <= step <= T:
        raise ValueError(f"step must lie in 0..{T}, got {step}")
    layers = trace["layers"]
    fig, (ax_g, ax_a) = plt.subplots(1, 2, figsize=(11, 4.0), gridspec_kw={"width_ratios": [1.2, 1]})
    x = np.arange(len(layers))
    if step == 0:
        ax_g.text(0.5, 0.5, "theta_0 = c_0\n(no update yet)", ha="center", va="center", transform=ax_g.transAxes)
    else:
        for j, (key, color, label) in enumerate(
            (("input_gate", CYCLE[1], "input gate i_t"), ("forget_gate", CYCLE[0], "forget gate f_t"))
        ):
            g = trace[key][step - 1, task]  # [P]
            vals = [g[sl].float().numpy() for sl in layers.values()]
            med = np.array([np.median(v) for v in vals])
            lo = np.array([np.percentile(v, 5) for v in vals])
            hi = np.array([np.percentile(v, 95) for v in vals])
            pos = x + (j - 0.5) * 0.35
            ax_g.bar(pos, med, width=0.33, color=color, label=label, alpha=0.85)
            ax_g.errorbar(pos, med, yerr=[med - lo, hi - med], fmt="none", ecolor="#333333", capsize=3, lw=1)
        ax_g.set_yscale("log")
        ax_g.set_ylim(1e-3, 1.5)
        ax_g.legend(loc="lower right", fontsize=10)
    ax_g.set_xticks(x)
    ax_g.set_xticklabels(list(layers), rotation=20)
    ax_g.set_title(f"gates at update t = {step}")
    acc = trace["query_acc"][:, task].numpy()
    steps = np.arange(len(acc))
    ax_a.plot(steps, acc, marker="o", color=COLORS["ours"], label="D_test accuracy (%)")
    ax_a.axvline(step, color=COLORS["support"], lw=1.5, ls="--")
    ax_a.set_ylim(0, 105)
    ax_a.set_xlabel("update t")
    ax_a.set_ylabel("accuracy (%)")
    ax_l = ax_a.twinx()
    ax_l.plot(steps[:-1], trace["train_loss"][:, task].numpy(), color=COLORS["baseline"], marker="s", ms=4,
              label="D_train loss L_t")
    ax_l.set_ylabel("D_train loss", color=COLORS["baseline"])
    ax_l.grid(False)
    ax_a.set_title(f"episode {task}: accuracy {acc[step]:.0f}% after {step} updates")
    fig.tight_layout()
    return fig


def gate_change_figure(trained: dict[str, dict], start: dict[str, dict], title: str | None = None):
    """How far meta-training moved the gates, against the size of the gates themselves.

    ``trained[setting]`` and ``start[setting]`` are :func:`~metaedu.algorithms.meta_lstm.trace_episode`
    results of the trained meta-learner and of the same meta-learner before meta-training, on the same
    episodes. Rows: forget gate, input gate; columns: settings ("1-shot", "5-shot"). Solid lines: the trained
    gates' mean over each layer's coordinates and the episodes, at each update t; dashed: before training.
    Every panel's range spans at least +-1% of the starting value, so a change far below that reads as
    flat instead of being stretched over the whole axis, and its title gives the largest relative change.
    """
    settings = list(trained)
    layers = next(iter(trained.values()))["layers"]
    fig, axes = plt.subplots(2, len(settings), figsize=(6.2 * len(settings) + 2.2, 7.6), squeeze=False)
    colors = [CYCLE[k % len(CYCLE)] for k in range(len(layers))]
    for col, setting in enumerate(settings):
        for row, key in enumerate(("forget_gate", "input_gate")):
            ax = axes[row, col]
            after, before = trained[setting][key], start[setting][key]  # [T, tasks, P]
            steps = np.arange(1, after.shape[0] + 1)
            change, values = 0.0, []
            for (layer, sl), color in zip(layers.items(), colors):
                a = after[:, :, sl].double().mean(dim=(1, 2)).numpy()
                b = before[:, :, sl].double().mean(dim=(1, 2)).numpy()
                ax.plot(steps, a, "-o", color=color, ms=4, label=layer)
                ax.plot(steps, b, "--", color=color, lw=1.4, alpha=0.8)
                change = max(change, float(np.max(np.abs(a - b) / np.abs(b))))
                values += [a, b]
            ref = float(np.mean(np.concatenate(values[1::2])))
            low, high = float(np.min(np.concatenate(values))), float(np.max(np.concatenate(values)))
            top = max(high, ref * 1.01) + 1e-6
            ax.set_ylim(min(low, ref * 0.99) - 1e-6, min(top, 1.0005))  # a gate is a sigmoid: never above 1
            ax.set_title(f"{setting}, {key.replace('_', ' ')}: layer means moved ≤ {100 * change:.2g}%", fontsize=13)
            ax.set_xlabel("update t")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(key.replace("_", " "))
            ax.ticklabel_format(axis="y", useOffset=False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], color="#555555", ls="--", lw=1.4))
    labels.append("before meta-training")
    fig.legend(handles, labels, loc="center right", frameon=False)
    if title:
        fig.suptitle(title, fontsize=15)
    fig.tight_layout(rect=(0, 0, 1 - 2.2 / (6.2 * len(settings) + 2.2), 1))
    return fig


def fixed_gate_figure(curves: dict[str, np.ndarray], title: str = ""):
    """D_test accuracy (%) after each update t for several update rules (``curves[label]`` ``[T + 1]``, the
    mean over episodes); the first label is drawn bold. Used by lecture 02's live widget."""
    fig, ax = plt.subplots(figsize=(11.5, 4.4))
    for k, (label, acc) in enumerate(curves.items()):
        ax.plot(np.arange(len(acc)), acc, "-o", ms=4, lw=2.8 if k == 0 else 1.8, color=CYCLE[k % len(CYCLE)],
                label=label)
    ax.set_ylim(0, 100)
    ax.set_xlabel("update t")
    ax.set_ylabel("D_test accuracy (%)")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def recorded_gate_curves(summaries: dict[str, dict], title: str | None = None):
    """A reference's gates and accuracy over the updates, trained (solid) against its start (dashed).

    ``summaries[setting]`` is a reference record's ``extras["gates"]`` (``metaedu.reference.meta_lstm``):
    ``trained``/``start`` each hold ``input_gate["all"]``, ``forget_gate["all"]`` (mean per update t = 1..T)
    and ``query_acc`` (D_test accuracy after t = 0..T updates). Columns: input gate, forget gate, accuracy.
    """
    rows = list(summaries)
    fig, axes = plt.subplots(len(rows), 3, figsize=(14.5, 3.6 * len(rows)), squeeze=False)
    for r, setting in enumerate(rows):
        s = summaries[setting]
        for c, key in enumerate(("input_gate", "forget_gate", "query_acc")):
            ax = axes[r, c]
            for which, style, label in (("trained", "-o", "reference (trained)"), ("start", "--s", "its start")):
                y = np.asarray(s[which][key] if key == "query_acc" else s[which][key]["all"], dtype=float)
                t = np.arange(len(y)) if key == "query_acc" else np.arange(1, len(y) + 1)
                ax.plot(t, y, style, ms=4, lw=2.0, color=COLORS["ours"] if which == "trained" else COLORS["baseline"],
                        label=label)
            ax.set_xlabel("update t")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{setting}: {key.replace('_', ' ') if key != 'query_acc' else 'D_test accuracy (%)'}",
                         fontsize=12)
            if key == "forget_gate":
                ax.ticklabel_format(axis="y", useOffset=False)
    axes[0, 0].legend(frameon=False, loc="best")
    if title:
        fig.suptitle(title, fontsize=14)
    fig.tight_layout()
    return fig
