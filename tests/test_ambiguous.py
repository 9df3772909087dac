"""Ambiguous tasks: glyph attributes against hand-checked glyphs, tasks against enumeration, scores against
hand-made classifiers, and the lines-or-sines fits against functions of known family."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaedu.algorithms import platipus as AM
from metaedu.data.glyphs import GlyphType, load_glyph_types
from metaedu.tasks import ambiguous as A
from metaedu.tasks.ambiguous_regression import (
    LINE,
    NEITHER,
    SINE,
    ambiguous_tasks,
    curve_kinds,
    family_fits,
    is_ambiguous,
    x_grid,
)
from metaedu.runtime import evaluation_mode
from metaedu.tasks.regression import INPUT_RANGE, LinesOrSinesTasks, RegressionTasks

# ----------------------------------------------------------------------------- attributes

#: Looked at by eye (drawn from the Futura light font): (closed loop, taller than wide, more than two strokes).
HAND_CHECKED = {
    "futural:O": (1, 1, 0),
    "futural:D": (1, 1, 0),
    "futural:B": (1, 1, 1),
    "futural:A": (1, 1, 1),
    "futural:L": (0, 1, 0),
    "futural:T": (0, 1, 0),
    "futural:E": (0, 1, 1),
    "futural:H": (0, 1, 1),
    "futural:m": (0, 0, 1),
    "futural:w": (0, 0, 1),
    # inside a margin, left out: the box in the middle of '#' is nearly filled by the pen; 'o' is about as
    # tall as it is wide
    "futural:#": (-1, 1, 1),
    "futural:o": (1, -1, 0),
}


@pytest.fixture(scope="module")
def types():
    return {t.name: t for t in load_glyph_types()}


def test_attributes_agree_with_hand_checked_glyphs(types):
    names = list(HAND_CHECKED)
    values = A.glyph_attributes([types[n] for n in names])
    for name, row in zip(names, values.tolist()):
        assert tuple(row) == HAND_CHECKED[name], f"{name}: {row} != {HAND_CHECKED[name]}"


def glyph(*strokes) -> GlyphType:
    return GlyphType("test", "x", "test", [np.asarray(s, dtype=float) for s in strokes])


def test_attributes_of_drawn_shapes():
    square = glyph([(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)])  # one stroke, closed, as wide as tall
    tall_ring = glyph([(0, 0), (6, 0), (6, 12), (0, 12), (0, 0)])
    u_shape = glyph([(0, 0), (0, 12), (8, 12), (8, 0)])  # open at the top
    comb = glyph([(0, 0), (0, 12)], [(0, 0), (8, 0)], [(0, 6), (6, 6)], [(0, 12), (8, 12)])  # an E
    values = A.glyph_attributes([square, tall_ring, u_shape, comb]).tolist()
    assert values == [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1]]


def test_enclosed_area_counts_only_background_cut_off_from_the_border():
    ring = torch.zeros(1, 12, 12, dtype=torch.bool)
    ring[0, 2:10, 2] = ring[0, 2:10, 9] = ring[0, 2, 2:10] = ring[0, 9, 2:10] = True
    assert A.enclosed_area(ring).tolist() == [36]  # the 6 x 6 inside
    opened = ring.clone()
    opened[0, 2, 5] = False  # a one-pixel gap
    assert A.enclosed_area(opened).tolist() == [0]


def test_attribute_values_respect_the_margins():
    m = torch.tensor([[0.0, 0.9, 1.0], [0.01, 1.1, 3.0], [0.2, 1.5, 2.0]])
    assert A.attribute_values(m).tolist() == [[0, 0, 0], [-1, -1, 1], [1, 1, 0]]
    with pytest.raises(ValueError, match="measurements"):
        A.attribute_values(torch.zeros(3, 2))


def test_attributes_are_roughly_balanced_and_every_combination_occurs(types):
    values = A.glyph_attributes(list(types.values()))
    share = (values == 1).float().mean(0)
    assert ((share > 0.2) & (share < 0.6)).all(), share
    usable = values[(values >= 0).all(1)]
    combos = {tuple(r) for r in usable.tolist()}
    assert len(combos) == 8


# ----------------------------------------------------------------------------- tasks


def sampler_over_rows(values, **kw):
    """Inputs = row numbers, so every drawn image can be traced back to its attribute values."""
    return A.AmbiguousGlyphTasks(torch.arange(len(values)), values, **kw)


@pytest.fixture(scope="module")
def values():
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, 2, (600, 3), generator=g)
    v[torch.rand(600, generator=g) < 0.1, 0] = -1  # some undefined rows, never to be drawn
    return v


def test_every_support_set_is_consistent_with_exactly_its_three_hypotheses(values):
    tasks = sampler_over_rows(values, k_shot=5, n_query=3, seed=1).sample(200)
    for t in range(tasks.tasks):
        rows = tasks.x_support[t]
        found = A.consistent_hypotheses(values[rows], tasks.y_support[t])  # enumeration over all 12
        assert sorted(found) == sorted(tasks.hypotheses[t].tolist())
        assert (values[rows] >= 0).all() and len(set(rows.tolist())) == len(rows)


def test_query_labels_follow_each_hypothesis(values):
    tasks = sampler_over_rows(values, n_query=4, seed=2).sample(100)
    for t in range(tasks.tasks):
        v = values[tasks.x_query[t]]
        for h in range(3):
            expected = A.holds(v, A.HYPOTHESES[int(tasks.hypotheses[t, h])]).long()
            assert torch.equal(tasks.y_hypotheses[t, h], expected)
        truth = A.HYPOTHESES[int(tasks.hypotheses[t, 0])]
        assert set(truth) == {tuple(l) for l in tasks.literals[t, :2].tolist()}
        assert torch.equal(tasks.y_query[t], tasks.y_hypotheses[t, 0])
        # each hypothesis has its own positives among the query images: the three labelings differ
        assert len({tuple(tasks.y_hypotheses[t, h].tolist()) for h in range(3)}) == 3


def test_every_combination_of_literals_and_truth_is_drawn(values):
    tasks = sampler_over_rows(values, seed=3).sample(2000)
    assert set(tasks.hypotheses[:, 0].tolist()) == set(range(len(A.HYPOTHESES)))


def test_the_sampler_rejects_what_cannot_make_tasks():
    with pytest.raises(ValueError, match="attribute values"):
        A.AmbiguousGlyphTasks(torch.zeros(5), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="enough images"):
        A.AmbiguousGlyphTasks(torch.zeros(8), torch.ones(8, 3, dtype=torch.long))


# ----------------------------------------------------------------------------- scores


def logits_for(decisions: torch.Tensor, confidence: float = 4.0) -> torch.Tensor:
    """Two-class logits that call the given 0/1 decisions with a fixed confidence."""
    sign = 2 * decisions.float() - 1  # +1 for "positive", -1 for "negative"
    return torch.stack([-confidence * sign, confidence * sign], -1) / 2  # p(positive) = sigmoid(+-confidence)


def test_scores_of_hand_made_classifiers(values):
    tasks = sampler_over_rows(values, n_query=2, seed=4).sample(6)
    # three samples, each implementing one of the task's hypotheses exactly
    exact = logits_for(tasks.y_hypotheses.permute(1, 0, 2))  # [3, tasks, n, 2]
    scores = A.ambiguity_scores(exact, tasks)
    assert scores["coverage"].tolist() == [3.0] * 6
    assert scores["accuracy"].tolist() == [100.0] * 6
    # the NLL of the true labels under the average: a third of the time the true hypothesis says yes for
    # sure, two thirds no; per image p(true label) is the share of samples agreeing with the truth
    p_yes = torch.sigmoid(torch.tensor(4.0))
    agree = (tasks.y_hypotheses == tasks.y_query[:, None]).float().mean(1)  # [tasks, n]
    p_true = agree * p_yes + (1 - agree) * (1 - p_yes)
    torch.testing.assert_close(scores["nll"], -torch.log(p_true).mean(1))
    # one deterministic classifier always covers exactly one hypothesis
    single = A.ambiguity_scores(exact[:1], tasks)
    assert single["coverage"].tolist() == [1.0] * 6
    # ten copies of the same classifier still cover one
    assert A.ambiguity_scores(exact[1:2].expand(10, -1, -1, -1), tasks)["coverage"].tolist() == [1.0] * 6


def test_hypothesis_scores_against_a_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 5, 2, generator=g)
    labels = torch.randint(0, 2, (3, 3, 5), generator=g)
    nll, acc = A.hypothesis_scores(logits, labels)
    for s in range(4):
        for t in range(3):
            for h in range(3):
                ref = torch.nn.functional.cross_entropy(logits[s, t], labels[t, h])
                torch.testing.assert_close(nll[s, t, h], ref)
                assert acc[s, t, h] == pytest.approx(
                    float((logits[s, t].argmax(-1) == labels[t, h]).float().mean()) * 100
                )


def test_evaluate_ambiguous_pairs_methods_on_the_same_tasks(values):
    def predictor(decide):
        return lambda xs, ys, xq: logits_for(decide(xq))[None]

    a = AM.evaluate_ambiguous(predictor(lambda xq: torch.zeros_like(xq)), sampler_over_rows(values, seed=5), 30, 7)
    b = AM.evaluate_ambiguous(predictor(lambda xq: torch.zeros_like(xq)), sampler_over_rows(values, seed=5), 30, 7)
    assert a["accuracy"].shape == (30,) and torch.equal(a["accuracy"], b["accuracy"])
    # "always negative" is right on the 3 groups of 5 that are negative for the truth
    assert a["accuracy"].mean() == pytest.approx(60.0)


# ----------------------------------------------------------------------------- lines or sines


def regression(x, y) -> RegressionTasks:
    return RegressionTasks(x, y, x, y)


def test_family_fits_are_exact_for_members_of_the_family():
    x = torch.linspace(-1, 1, 5).view(1, 5, 1).expand(2, -1, -1)
    line = 1.5 * x - 2.0
    sine = 3.0 * torch.sin(x - 1.0)
    l_line, s_line = family_fits(x, line)
    l_sine, s_sine = family_fits(x, sine)
    assert float(l_line[0]) < 0.02 and float(s_sine[0]) < 0.02
    assert float(s_line[0]) > 0.3  # a line with an intercept of -2 is no sinusoid of amplitude <= 5 here
    # outside the ranges a line does not count: slope 10 is steeper than any line of the family
    steep = 10.0 * x
    assert float(family_fits(x, steep)[0][0]) > 1.0


def test_ambiguous_tasks_fit_both_families():
    sampler = LinesOrSinesTasks(5, 10, 0.3, seed=0, support_range=(-1.0, 1.0))
    tasks = ambiguous_tasks(sampler, 50)
    assert tasks.x_support.shape == (50, 5, 1)
    assert is_ambiguous(tasks, 0.3).all()
    line, sine = family_fits(tasks.x_support, tasks.y_support)
    assert (line <= 0.3).all() and (sine <= 0.3).all()
    with pytest.raises(ValueError, match="ambiguous tasks"):
        ambiguous_tasks(LinesOrSinesTasks(5, 10, 0.0, seed=0), 10, tolerance=1e-6, max_draws=2)


def test_curve_kinds_tell_a_line_from_a_sinusoid_and_from_neither():
    x = x_grid(200)
    wiggle = torch.sin(3 * x) + 0.1 * x  # three times too fast: neither shape explains it
    curves = torch.stack(
        [
            0.5 * x + 1,
            -2 * x,
            2 * torch.sin(x - 0.5),
            0.3 * torch.sin(x + 3.0),
            0 * x + 0.7,
            wiggle,
            0.5 * x + 0.4 * torch.sin(x),
        ]
    )  # the last: mostly line
    assert curve_kinds(x, curves).tolist() == [LINE, LINE, SINE, SINE, LINE, NEITHER, LINE]
    assert curve_kinds(x, wiggle, min_fit=0.0).item() in (LINE, SINE)  # without a bar, the better shape wins
    with pytest.raises(ValueError, match="period"):
        curve_kinds(torch.linspace(-1, 1, 50), torch.zeros(50))
    with pytest.raises(ValueError, match="min_fit"):
        curve_kinds(x, curves, min_fit=1.0)


def test_both_kinds_needs_a_line_and_a_sinusoid():
    kinds = torch.tensor([[LINE, LINE, NEITHER], [SINE, LINE, NEITHER], [NEITHER, LINE, SINE]])  # [samples, tasks]
    assert AM.both_kinds(kinds).tolist() == [1.0, 0.0, 0.0]


def test_lines_or_sines_support_range():
    t = LinesOrSinesTasks(5, 50, seed=0, support_range=(-1.0, 0.5)).sample(20)
    assert t.x_support.min() >= -1.0 and t.x_support.max() <= 0.5
    assert t.x_query.min() < -3 and t.x_query.max() > 3  # queries still span the whole range
    default = LinesOrSinesTasks(5, 5, seed=0).sample(200)
    assert default.x_support.min() < INPUT_RANGE[0] + 0.5 and default.x_support.max() > INPUT_RANGE[1] - 0.5
    for bad in ((1.0, -1.0), (-6.0, 0.0)):
        with pytest.raises(ValueError, match="support_range"):
            LinesOrSinesTasks(support_range=bad)


def test_active_learning_asks_where_the_samples_disagree():
    """Two hypotheses that agree everywhere but at candidate 3: one label there settles it; a random label
    settles it only if it happens to land there."""
    truth = torch.zeros(4, 5)
    samples = torch.zeros(2, 4, 5)
    samples[1, :, 3] = 10.0  # the second sample is wrong at candidate 3 only
    curves = AM.active_learning_curves(samples, truth, 2, 0.3, torch.Generator().manual_seed(0))
    assert curves["active"].shape == (3, 4)
    first = (5.0**2) / 5  # the mean (0 and 10 equally weighted) is 5 off at one of 5 candidates
    torch.testing.assert_close(curves["active"][0], torch.full((4,), first))
    assert curves["active"][1].max() < 1e-6  # asked at candidate 3: the wrong sample's weight vanishes
    random = AM.active_learning_curves(samples, truth, 1, 0.3, torch.Generator().manual_seed(1))["random"][1]
    assert ((random < 1e-6) | torch.isclose(random, torch.tensor(first))).all()  # it either hit 3 or learned nothing


def test_active_learning_rejects_bad_input():
    with pytest.raises(ValueError, match="samples must be"):
        AM.active_learning_curves(torch.zeros(2, 3), torch.zeros(3), 1, 0.3, torch.Generator())
    with pytest.raises(ValueError, match="noise_std"):
        AM.active_learning_curves(torch.zeros(2, 3, 4), torch.zeros(3, 4), 1, 0.0, torch.Generator())


# ----------------------------------------------------------------------------- quick mode's encoder and the splits


def test_attribute_encoder_learns_visible_attributes_and_ignores_undefined_ones():
    g = torch.Generator().manual_seed(0)
    values = torch.randint(0, 2, (256, 3), generator=g)
    images = 0.1 * torch.rand(256, 1, 16, 16, generator=g)
    images[values[:, 0] == 1, :, :8, :] += 0.8  # attribute 0: a bright top half
    images[values[:, 1] == 1, :, :, :8] += 0.8  # attribute 1: a bright left half
    values[:, 2] = -1  # attribute 2 is never defined: it must not disturb training
    settings = AM.AmbiguousGlyphSettings(encoder="attributes", image_size=16, hidden=8, encoder_epochs=8)
    net, history = AM.attribute_encoder(images, values, settings, batch_size=32, lr=1e-2, progress=False)
    assert all(math.isfinite(v) for v in history["loss"])
    with torch.no_grad(), evaluation_mode(net):
        guess = net(images) > 0
    for j in (0, 1):
        assert (guess[:, j] == values[:, j].bool()).float().mean() > 0.9
    assert not any(p.requires_grad for p in net.parameters())  # frozen
    with torch.no_grad(), evaluation_mode(net):
        assert AM.feature_extractor(net, 16)(images).shape == (256, 8)


def test_prepared_glyph_splits_hold_only_defined_attributes(glyphs):
    settings = AM.AmbiguousGlyphSettings(encoder="none", image_size=28)
    prepared = AM.prepare_glyphs(glyphs, settings, progress=False)
    assert set(prepared.inputs) == {"train", "validation", "test"}
    values = A.glyph_attributes(glyphs.types)
    defined = (values >= 0).all(1)
    sides = np.array(glyphs.sides)
    evaluation = int(defined[torch.from_numpy(sides == "evaluation")].sum()) * 20  # 20 drawings per character
    background = int(defined[torch.from_numpy(sides == "background")].sum()) * 20
    assert prepared.inputs["test"].shape == (evaluation, 1, 28, 28)
    assert prepared.inputs["train"].shape[0] + prepared.inputs["validation"].shape[0] == background
    for split in prepared.values.values():
        assert (split >= 0).all()
    assert prepared.in_features is None
    tasks = prepared.sampler("test", 5, 2, seed=0).sample(3)
    assert tasks.x_support.shape == (3, 10, 1, 28, 28)


def test_nearest_prototype_labels_by_the_closer_class_mean():
    xs = torch.tensor(
        [[[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0]]]
    )  # class 0 around (0, 1), class 1 around (4, 1)
    ys = torch.tensor([[0, 0, 1, 1]])
    xq = torch.tensor([[[1.0, 1.0], [3.5, 0.0]]])
    logits = AM.nearest_prototype(xs, ys, xq)
    assert logits.shape == (1, 1, 2, 2)
    assert logits[0, 0].argmax(-1).tolist() == [0, 1]
    torch.testing.assert_close(logits[0, 0, 0], torch.tensor([-1.0, -9.0]))
