"""The Conditional Neural Process against hand-computed references."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from metaedu.algorithms.cnp import CNP
from metaedu.tasks.regression import SinusoidTasks


def _data(tasks=3, k=4, q=5, x_dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(tasks, k, x_dim, generator=g), torch.randn(tasks, k, 1, generator=g),
            torch.randn(tasks, q, x_dim, generator=g), torch.randn(tasks, q, 1, generator=g))


def test_likelihood_is_the_hand_computed_gaussian_log_density():
    torch.manual_seed(0)
    cnp = CNP(x_dim=2, y_dim=1, r_dim=8, hidden=(16,)).double()
    xs, ys, xq, yq = (t.double() for t in _data())
    with torch.no_grad():
        mu, log_var = cnp(xs, ys, xq)
        nll = cnp.nll(xs, ys, xq, yq)
    for t in range(xs.shape[0]):
        total = 0.0
        for j in range(xq.shape[1]):
            m, v, y = float(mu[t, j, 0]), math.exp(float(log_var[t, j, 0])), float(yq[t, j, 0])
            total += -0.5 * math.log(2 * math.pi * v) - (y - m) ** 2 / (2 * v)  # log N(y; m, v) by hand
        assert abs(-total / xq.shape[1] - float(nll[t])) < 1e-10
    ref = -Normal(mu, torch.exp(0.5 * log_var)).log_prob(yq).mean((1, 2))
    torch.testing.assert_close(nll, ref)


def test_standard_deviation_is_kept_above_its_floor():
    cnp = CNP(x_dim=2, r_dim=8, hidden=(16,), min_std=0.1)
    with torch.no_grad():
        cnp.decoder.net[-1].bias.fill_(-50.0)  # softplus(-50) is about 0
        _, log_var = cnp(*_data()[:3])
    std = torch.exp(0.5 * log_var)
    assert float(std.min()) >= 0.1 - 1e-6 and float(std.max()) < 0.1 + 1e-4


def test_a_fixed_standard_deviation_makes_the_loss_a_squared_error():
    torch.manual_seed(3)
    cnp = CNP(x_dim=2, r_dim=8, hidden=(16,), learn_std=False)
    xs, ys, xq, yq = _data()
    with torch.no_grad():
        mu, log_var = cnp(xs, ys, xq)
        nll = cnp.nll(xs, ys, xq, yq)
    assert float(log_var.abs().max()) == 0.0
    torch.testing.assert_close(nll, 0.5 * ((yq - mu) ** 2).mean((1, 2)) + 0.5 * math.log(2 * math.pi))


def test_representation_is_the_mean_over_the_support_and_ignores_its_order():
    torch.manual_seed(1)
    cnp = CNP(x_dim=2, r_dim=8, hidden=(16,))
    xs, ys, xq, _ = _data()
    r = cnp.represent(xs, ys)
    by_hand = torch.stack([cnp.context_net(torch.cat([xs[t], ys[t]], -1)).mean(0) for t in range(xs.shape[0])])
    torch.testing.assert_close(r, by_hand)
    perm = torch.randperm(xs.shape[1])
    torch.testing.assert_close(cnp(xs[:, perm], ys[:, perm], xq)[0], cnp(xs, ys, xq)[0])


def test_tasks_of_a_batch_do_not_see_each_other():
    torch.manual_seed(2)
    cnp = CNP(x_dim=2, r_dim=8, hidden=(16,))
    xs, ys, xq, _ = _data(tasks=4)
    together = cnp(xs, ys, xq)[0]
    one_by_one = torch.cat([cnp(xs[t:t + 1], ys[t:t + 1], xq[t:t + 1])[0] for t in range(4)])
    torch.testing.assert_close(together, one_by_one)


def test_an_empty_support_set_gives_a_zero_representation():
    cnp = CNP(x_dim=2, r_dim=8, hidden=(16,))
    xs, ys, xq, _ = _data()
    r = cnp.represent(xs[:, :0], ys[:, :0])
    assert r.shape == (3, 8) and float(r.abs().max()) == 0.0
    mu, _ = cnp(xs[:, :0], ys[:, :0], xq)
    assert mu.shape == (3, 5, 1)


def test_bad_shapes_are_rejected():
    cnp = CNP(x_dim=2, r_dim=8, hidden=(16,))
    xs, ys, xq, _ = _data()
    with pytest.raises(ValueError, match="inputs of size 2"):
        cnp.represent(xs[..., :1], ys)
    with pytest.raises(ValueError, match="same tasks and K"):
        cnp.represent(xs, ys[:, :2])
    with pytest.raises(ValueError, match="query inputs"):
        cnp(xs, ys, xq[..., :1])
    with pytest.raises(ValueError, match="min_std"):
        CNP(x_dim=2, min_std=0.0)
    with pytest.raises(ValueError, match="r_dim"):
        CNP(x_dim=2, r_dim=0)


def test_a_cnp_learns_sinusoids_from_its_context():
    """A few hundred steps on Finn's sinusoids: the context must lower the error well below the prior's."""
    torch.manual_seed(0)
    cnp = CNP(x_dim=1, r_dim=32, hidden=(64, 64))
    opt = torch.optim.Adam(cnp.parameters(), lr=3e-3)
    train = SinusoidTasks(k_shot=10, n_query=10, seed=0)
    for _ in range(600):
        t = train.sample(16)
        loss = cnp.nll(t.x_support, t.y_support, t.x_query, t.y_query).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = SinusoidTasks(k_shot=10, n_query=20, seed=99).sample(200)
    with torch.no_grad():
        with_context = ((cnp.predict(test.x_support, test.y_support, test.x_query) - test.y_query) ** 2).mean()
        prior = (test.y_query ** 2).mean()  # predicting zero, the mean sinusoid
    assert float(with_context) < 0.5 * float(prior)
