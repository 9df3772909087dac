"""Figures of lectures 03, 04 and 06: what a projector needs (legends off the data, positive MSE bands,
divergence stated, fonts of at least 13 pt, course colours)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from metaedu.evaluation import mean_ci  # noqa: E402
from metaedu.viz import metric as mviz  # noqa: E402
from metaedu.viz import regression as rplots  # noqa: E402
from metaedu.viz.style import method_color, readable  # noqa: E402


def _legend_outside_axes(ax) -> bool:
    fig = ax.figure
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    return legend.x0 >= ax.get_window_extent().x1 - 1


def test_mse_by_steps_bands_stay_positive_and_divergence_is_stated():
    g = torch.Generator().manual_seed(0)
    skewed = torch.exp(2 * torch.randn(4, 20, generator=g))  # heavy-tailed: the normal band of this dips below zero
    assert any(s.mean - s.ci95 < 0 for s in map(mean_ci, skewed))
    diverging = skewed.clone()
    diverging[3, 5] = float("inf")  # one task diverges at the last step
    fig = rplots.plot_mse_by_steps({"MAML": skewed, "ANIL": diverging}, log=True, top=1000.0)
    ax = fig.axes[0]
    lows = [min(path.vertices[:, 1]) for coll in ax.collections for path in coll.get_paths()]
    assert lows and min(lows) > 0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "MAML" and labels[1].startswith("ANIL (above 1,000 from step 3: mean inf)")
    assert ax.get_ylim()[1] == pytest.approx(1000.0)
    assert ax.get_lines()[0].get_color() == method_color("MAML")
    assert _legend_outside_axes(ax)
    plt.close(fig)


def test_fit_grid_has_one_legend_below_and_fits_keep_their_legend_outside():
    x = torch.linspace(-5, 5, 50).view(1, -1, 1)
    truth = torch.sin(x)
    panels = [{"title": f"panel {i}", "fits": {"before adapting": 0 * x, "after 1 step": 0.5 * truth},
               "x_support": x[:, :5], "y_support": truth[:, :5]} for i in range(4)]
    fig = rplots.plot_fit_grid(x, truth, panels)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ground truth", "before adapting", "after 1 step",
                                                                   "support points (K)"]
    plt.close(fig)
    fig = rplots.plot_fits(x, truth, x[:, :5], truth[:, :5], {"MAML": truth}, colors={"MAML": "#123456"},
                           dashed_first=False)
    assert _legend_outside_axes(fig.axes[0])
    assert fig.axes[0].get_lines()[1].get_color() == "#123456" and fig.axes[0].get_lines()[1].get_linestyle() == "-"
    plt.close(fig)


def test_adaptation_diagram_draws_every_task():
    fig = rplots.plot_adaptation_diagram(torch.tensor([1.0, 0.5]), torch.rand(3, 2), torch.rand(3, 2))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "$\\theta$" in texts and sum("theta^*" in t for t in texts) == 3
    plt.close(fig)


def test_accuracy_bars_use_course_colours_and_readable_raises_small_fonts():
    fig = mviz.plot_accuracy_bars({"ProtoNet": mean_ci([80.0, 90.0]), "Siamese": mean_ci([60.0, 70.0])}, chance=20)
    bars = fig.axes[0].patches
    assert matplotlib.colors.to_hex(bars[0].get_facecolor()) == method_color("ProtoNet")
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.set_title("small", fontsize=8)
    ax.set_xticks([0, 1], ["a", "b"], fontsize=6)
    readable(fig)
    assert min(t.get_fontsize() for t in fig.findobj(Text) if t.get_text()) >= 13
    plt.close(fig)
