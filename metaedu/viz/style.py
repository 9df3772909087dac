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
#: One colour per method across the whole course (lecture bar, item 6): a method keeps its colour in
#: every figure of every lecture. Keys are the canonical names of :func:`method_color`; several
#: names may map to one method (aliases), and families share a hue (MAML's variants are blues).
METHOD_COLORS = {
    # baselines shared by many lectures
    "nearest_neighbour": "#7f7f7f",
    "nearest_neighbour_features": "#7f7f7f",
    "pixels": "#bdbdbd",
    "nearest_neighbour_pixels": "#bdbdbd",
    "pretrained": "#d9822b",
    "finetune": "#b35806",
    "oracle": "#222222",
    "chance": "#999999",
    # 01 learned optimizers
    "lstm_optimizer": "#1f6fb4",
    "sgd": "#c0392b",
    "nag": "#7b4ea3",
    "rmsprop": "#2c7a3f",
    "adam": "#d9822b",
    # 02 meta-learner LSTM
    "meta_lstm": "#17becf",
    # 03 metric learning
    "siamese": "#8c564b",
    "matching": "#e377c2",
    "matching_fce": "#ad1a72",
    "protonet": "#2ca02c",
    "protonet_cosine": "#98df8a",
    # 04 memory
    "mann": "#9467bd",
    "lstm": "#bcbd22",
    "feedforward": "#c7a06b",
    # 05 relational
    "gnn": "#006d5b",
    "arml": "#e6550d",
    # 06 MAML family (blues)
    "maml": "#1f4e9c",
    "first_order_maml": "#6baed6",
    "meta_sgd": "#08306b",
    "anil": "#4292c6",
    "maml_head_only": "#41b6c4",  # MAML's network adapted head-only at test time (Raghu et al.'s test)
    # 07-09 probabilistic and regularised MAML
    "llama": "#5e3c99",
    "maml_laplace": "#b2abd2",
    "maml_noise": "#9ecae1",
    "platipus": "#d62728",
    "cnp": "#ff9896",
    "mr_maml": "#b8860b",
    "mr_cnp": "#a50f15",
    "weight_decay": "#969696",
    # 09 the variants of the memorization lecture (W: on weights, A: on activations)
    "mr_maml_w": "#b8860b",
    "mr_maml_a": "#e3b448",
    "mr_cnp_w": "#a50f15",
    "mr_cnp_a": "#e8676b",
    "ft": "#b35806",
    "ft_weight_decay": "#8c6d31",
    "cnp_weight_decay": "#c994c7",
    "maml_exclusive_tasks": "#9ecae1",
    "cnp_exclusive_tasks": "#fcbba1",
    # 10 meta-RL
    "mb": "#7f7f7f",
    "mb_dynamic_evaluation": "#d9822b",
    "grbal": "#1f4e9c",
    "rebal": "#2ca02c",
    "maml_rl": "#1f4e9c",
    "mql": "#9467bd",
    "mql_no_adaptation": "#bdbdbd",  # MQL's experiment: theta_meta as it is
    "mql_new_data_only": "#c5b0d5",  # adapted on the new task's data alone
    "mql_uniform_reuse": "#6a3d9a",  # adapted with the old buffer at weight 1
    "mql_weighted_reuse": "#3f007d",  # adapted with the old buffer weighted by beta, no proximal term
    "curiosity": "#e377c2",
    # 11 unsupervised
    "cactus_protonet": "#2ca02c",
    "cactus_protonets": "#2ca02c",
    "cactus_maml": "#1f4e9c",
    "oracle_protonets": "#0b5d1e",
    "oracle_maml": "#08306b",
    "embedding_knn": "#7f7f7f",
    "embedding_linear": "#b35806",
}


def method_color(name: str) -> str:
    """The course-wide colour of a method ("MAML", "first-order MAML", "ProtoNet", ...).

    Names are matched case-insensitively with spaces, dashes and "+" read as "_"; an unknown
    method is an error (add it to :data:`METHOD_COLORS`) rather than a colour that changes.
    """
    key = "".join(ch if ch.isalnum() else "_" for ch in name.strip().lower()).strip("_")
    while "__" in key:
        key = key.replace("__", "_")
    if key not in METHOD_COLORS:
        raise KeyError(f"no course colour for method {name!r} (key {key!r}); add it to metaedu.viz.style.METHOD_COLORS")
    return METHOD_COLORS[key]


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


def readable(fig, min_size: float = 13.0):
    """Raise every text of ``fig`` (titles, labels, tick labels, legends) to at least ``min_size`` points.

    For figures drawn by shared helpers with small fonts, when they are shown to a lecture hall.
    Returns the figure.
    """
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        if text.get_text() and text.get_fontsize() < min_size:
            text.set_fontsize(min_size)
    return fig


def axes_for(ax=None, figsize=None):
    """``(figure, axes)``: a new figure of ``figsize`` when ``ax`` is None, else ``ax`` and its figure.

    The one way every figure function of the course accepts an optional ``ax`` to draw into.
    """
    if ax is None:
        import matplotlib.pyplot as plt

        return plt.subplots(figsize=figsize)
    return ax.figure, ax

