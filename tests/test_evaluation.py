import math

import pytest
import torch

from metaedu.data.digits import digits_arrays, load_digits
from metaedu.evaluation import (
    bootstrap_mean_interval,
    comparison_grid,
    comparison_table,
    episode_accuracy,
    mean_ci,
    regression_mse,
)
from metaedu.paper_results import paper
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.tasks.regression import SinusoidTasks


def test_mean_ci_matches_the_formula():
    v = [1.0, 2.0, 3.0, 4.0]
    s = mean_ci(v)
    sd = math.sqrt(sum((x - 2.5) ** 2 for x in v) / 3)
    assert s.mean == 2.5 and s.ci95 == pytest.approx(1.959964 * sd / 2)
    assert str(mean_ci([50.0, 50.0])) == "50.0 ± 0.0"
    with pytest.raises(FloatingPointError, match="NaN"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError):
        mean_ci([])


def test_episode_accuracy_of_perfect_and_chance_predictors():
    digits = load_digits()
    sampler = EpisodeSampler(digits, n_way=5, k_shot=1, n_query=4, seed=0)
    perfect = episode_accuracy(lambda e: e.y_query, sampler, n_episodes=30, batch=7)
    assert perfect.mean == 100.0 and perfect.n == 30
    chance = episode_accuracy(lambda e: torch.randn(e.tasks, e.y_query.shape[1], 5), sampler, n_episodes=400)
    assert abs(chance.mean - 20.0) < 3 * chance.ci95 + 1


def test_pixel_nearest_neighbour_on_real_digits_beats_chance():
    sampler = EpisodeSampler(load_digits(), n_way=10, k_shot=1, n_query=5, seed=0)

    def nearest(e):
        d = torch.cdist(e.x_query.flatten(2), e.x_support.flatten(2))
        return e.y_support.gather(1, d.argmin(-1))

    score = episode_accuracy(nearest, sampler, n_episodes=100)
    assert score.mean > 50  # one example per digit already carries a lot


def test_regression_mse_of_the_truth_is_zero():
    tasks = SinusoidTasks(k_shot=5, n_query=5, seed=0)
    assert regression_mse(lambda t: t.y_query, tasks, n_tasks=20).mean == 0.0
    zero = regression_mse(lambda t: torch.zeros_like(t.y_query), tasks, n_tasks=2000)
    # E[A^2 sin^2] = E[A^2] / 2 with A ~ U(0.1, 5): (5^3 - 0.1^3) / (3 * 4.9) / 2
    assert zero.mean == pytest.approx((125 - 0.001) / (3 * 4.9) / 2, rel=0.1)


def test_table_and_paper_lookup():
    row = {"method": "ProtoNet", "setting": "5-way 1-shot", "ours": mean_ci([90.0, 92.0]),
           "paper": paper("Prototypical Networks", "Omniglot", "5-way 1-shot"), "note": "glyphs"}
    text = comparison_table([row], title="t")
    assert "| ProtoNet | 5-way 1-shot | 91.0 ± 2.0 | 98.8 | glyphs |" in text
    assert paper("nobody", "nothing", "none") == "—"


def test_digits_sets():
    d = load_digits()
    assert d.n_classes == 10 and d.images.shape == (1797, 1, 8, 8) and d.images.max() <= 1.0
    big = load_digits(size=28)
    assert big.images.shape == (1797, 1, 28, 28)
    x, y = digits_arrays()
    assert x.shape == (1797, 64) and set(y.tolist()) == set(range(10))


def test_bootstrap_interval_of_positive_skewed_values_stays_positive_and_covers_the_mean():
    g = torch.Generator().manual_seed(0)
    values = torch.exp(3 * torch.randn(2, 300, generator=g))  # heavy right tail: the normal band dips below 0
    low, high = bootstrap_mean_interval(values)
    normal = [mean_ci(row) for row in values]
    assert any(s.mean - s.ci95 < 0 for s in normal)
    assert (low > 0).all() and (low < values.mean(1).double()).all() and (values.mean(1).double() < high).all()
    # for well-behaved data it agrees with the normal approximation
    plain = torch.randn(1, 2000, generator=g) + 5
    lo, hi = bootstrap_mean_interval(plain)
    s = mean_ci(plain[0])
    assert float(hi - lo) / 2 == pytest.approx(s.ci95, rel=0.15)
    with pytest.raises(ValueError, match="shape"):
        bootstrap_mean_interval(torch.ones(3, 1))
    with pytest.raises(FloatingPointError):
        bootstrap_mean_interval(torch.tensor([[1.0, float("inf")]]))


def test_comparison_grid_pivots_methods_by_settings():
    rows = [{"method": m, "setting": s, "ours": mean_ci([v, v + 2]), "paper": p, "note": n}
            for m, s, v, p, n in (("A", "1-shot", 1.0, "90", "glyphs"), ("A", "5-shot", 3.0, "—", "glyphs"),
                                  ("B", "1-shot", 5.0, "—", "no training"), ("B", "5-shot", 7.0, "—", "no training"))]
    lines = comparison_grid(rows, title="t").splitlines()
    assert lines[0] == "**t**"
    assert lines[2] == "| method | 1-shot: ours (95% CI) | paper | 5-shot: ours (95% CI) | note |"  # no empty paper column
    assert lines[4].startswith("| A | 2.0 ± ") and "| 90 |" in lines[4] and lines[4].endswith("| glyphs |")
    assert lines[5].startswith("| B | 6.0 ± ") and lines[5].endswith("| no training |")
    with pytest.raises(ValueError, match="one row per pair"):
        comparison_grid(rows + rows[:1])


def test_roc_auc_counts_tied_scores_as_half():
    from metaedu.evaluation import roc_curve

    g = torch.Generator().manual_seed(5)
    p = torch.randint(0, 4, (60,), generator=g).float() / 4  # four distinct scores: many ties
    y = (torch.rand(60, generator=g) < 0.5).float()
    fpr, tpr, auc = roc_curve(p, y)
    pos, neg = p[y == 1], p[y == 0]
    above = (pos[:, None] > neg[None, :]).double().mean().item()
    tied = (pos[:, None] == neg[None, :]).double().mean().item()
    assert auc == pytest.approx(above + 0.5 * tied, abs=1e-9)  # Mann-Whitney with ties counted half
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_curve(p, torch.ones(60))


def test_pivot_table_puts_methods_in_rows_and_settings_in_columns():
    from metaedu.evaluation import pivot_table

    text = pivot_table({("LSTM", "a"): "1", ("Adam", "a"): "2", ("LSTM", "b"): "3"}, row_label="optimizer", title="t")
    lines = text.splitlines()
    assert lines[0] == "**t**" and lines[2] == "| optimizer | a | b |"
    assert lines[4] == "| LSTM | 1 | 3 |" and lines[5] == "| Adam | 2 | — |"
    with pytest.raises(ValueError, match="at least one cell"):
        pivot_table({})
