"""Siamese networks: the weighted L1 similarity, pairs, the regularised loss, one-shot scores, training."""

from __future__ import annotations

import pytest
import torch

from metaedu.algorithms import siamese
from metaedu.tasks.episodes import EpisodeSampler


def tiny(**overrides) -> siamese.SiameseSettings:
    base = dict(hidden=16, pair_classes=32, steps=40, lr=3e-3, l2=1e-4, rotations=(0,), eval_episodes=60,
                eval_query=3, eval_pairs=400)
    base.update(overrides)
    return siamese.SiameseSettings(**base)


def test_pair_logits_are_a_weighted_l1_distance():
    torch.manual_seed(0)
    model = siamese.SiameseNet(tiny())
    d = model.encoder.out_dim
    za, zb = torch.randn(2, 3, d), torch.randn(2, 4, d)
    out = model.pair_logits(za, zb)
    alpha, b = model.weighting.weight[0], model.weighting.bias[0]
    for t in range(2):
        for i in range(3):
            for j in range(4):
                expected = (alpha * (za[t, i] - zb[t, j]).abs()).sum() + b
                assert out[t, i, j].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)


def test_class_score_is_the_best_shot():
    torch.manual_seed(1)
    model = siamese.SiameseNet(tiny())
    d = model.encoder.out_dim
    zs, zq = torch.randn(1, 6, d), torch.randn(1, 2, d)
    y = torch.tensor([[1, 0, 2, 0, 1, 2]])
    scores = model.logits(zs, y, zq, 3)
    sim = model.pair_logits(zq, zs)
    for i in range(2):
        for k in range(3):
            assert scores[0, i, k] == sim[0, i][y[0] == k].max()


def test_pairs_are_half_same_half_different(glyphs):
    sampler = EpisodeSampler(glyphs.split("evaluation"), 6, 1, 1, seed=0)
    eps = sampler.sample(2)
    x_1, x_2, y = siamese.pairs_from_episode(eps)
    assert x_1.shape == x_2.shape == (2, 12, 1, 28, 28)
    assert y.sum().item() == 12
    torch.testing.assert_close(x_2[:, :6], eps.x_query)  # same: the query of the same class
    torch.testing.assert_close(x_2[:, 6:7], eps.x_query[:, 1:2])  # different: the next class's query
    with pytest.raises(ValueError, match="k_shot = 1"):
        siamese.pairs_from_episode(EpisodeSampler(glyphs.split("evaluation"), 3, 2, 1).sample(1))


def test_all_pairs_weights_and_loss_against_the_formula(glyphs):
    torch.manual_seed(2)
    model = siamese.SiameseNet(tiny(l2=0.01))
    eps = EpisodeSampler(glyphs.split("evaluation"), 4, 1, 1, seed=0).sample(1)
    logit, y, weight = siamese.all_pairs_batch(model, eps)
    assert logit.shape == y.shape == weight.shape == (1, 4, 4)
    assert (weight * y).sum().item() == pytest.approx(0.5)
    assert (weight * (1 - y)).sum().item() == pytest.approx(0.5)
    loss = siamese.verification_loss(model, logit, y, weight)
    p = torch.sigmoid(logit)
    nll = -(weight * (y * p.log() + (1 - y) * (1 - p).log())).sum()
    penalty = sum((m.weight ** 2).sum() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert loss.item() == pytest.approx((nll + 0.01 * penalty).item(), rel=1e-4)


@pytest.fixture(scope="module")
def trained(glyphs):
    torch.manual_seed(0)
    return siamese.train_siamese(tiny(), glyphs.split("background"), progress=False)


def test_training_lowers_the_loss(trained):
    _, history = trained
    loss = history["loss"]
    assert sum(loss[-5:]) / 5 < 0.93 * sum(loss[:5]) / 5  # from ln 2 = 0.69 (a coin) down


def test_verification_and_one_shot_beat_chance(trained, glyphs):
    model, _ = trained
    data = glyphs.split("evaluation")
    p, y = siamese.verification_scores(model, data, n_pairs=400)
    assert p.shape == y.shape == (400,) and y.mean().item() == pytest.approx(0.5)
    verification = siamese.verification_accuracy(model, data, n_pairs=400)
    assert verification.mean - verification.ci95 > 55.0  # chance is 50%
    score = siamese.evaluate(model, data, 5, 1, n_episodes=60)
    assert score.mean - score.ci95 > 30.0  # chance is 20%
    eps = EpisodeSampler(data, 5, 2, 3, seed=1).sample(2)
    assert siamese.predict(model, eps).shape == (2, 15, 5)


def test_roc_auc_is_the_chance_a_same_pair_outscores_a_different_one():
    from metaedu.evaluation import roc_curve

    g = torch.Generator().manual_seed(3)
    p = torch.rand(40, generator=g)
    y = (torch.rand(40, generator=g) < 0.5).float()
    fpr, tpr, auc = roc_curve(p, y)
    pos, neg = p[y == 1], p[y == 0]
    pairwise = (pos[:, None] > neg[None, :]).float().mean().item()  # Mann-Whitney, no ties
    assert auc == pytest.approx(pairwise, abs=1e-6)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
