"""One plotting style for every lecture: readable on a projector, consistent colours."""

from __future__ import annotations

import matplotlib as mpl

#: Colours by role, used across lectures (ours vs. the paper, methods in a fixed order).
COLORS = {
    "ours": "#1f6fb4",
    "paper": "#8c8c8c",
    "baseline": "#d9822b",
    "maml": "#1f6fb4",
    "first_order": "#6baed6",
    "pretrained": "#d9822b",
    "truth": "#222222",
    "support": "#c0392b",
    "query": "#2c7a3f",
}
#: Colour cycle for several methods on one plot.
CYCLE = ["#1f6fb4", "#d9822b", "#2c7a3f", "#c0392b", "#7b4ea3", "#8c564b", "#e377c2", "#7f7f7f"]

RC = {
    "figure.figsize": (8.0, 4.5),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 13,
    "axes.titlesize": 15,
    "axes.labelsize": 14,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "lines.linewidth": 2.2,
    "lines.markersize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=CYCLE),
    "image.cmap": "gray_r",
}


def use_style() -> None:
    """Apply the course style to matplotlib (call once at the top of a notebook)."""
    mpl.rcParams.update(RC)
