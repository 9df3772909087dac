import math

import pytest
import torch

from metaedu.tasks.regression import LinesOrSinesTasks, QuadraticTasks, SinusoidTasks


def test_sinusoids_follow_their_parameters():
    t = SinusoidTasks(k_shot=5, n_query=7, seed=0).sample(25)
    assert t.x_support.shape == (25, 5, 1) and t.y_query.shape == (25, 7, 1)
    a, b = t.params["amplitude"], t.params["phase"]
    assert (a >= 0.1).all() and (a <= 5).all() and (b >= 0).all() and (b <= math.pi).all()
    assert (t.x_support.abs() <= 5).all()
    expect = a[:, None, None] * torch.sin(t.x_query - b[:, None, None])
    torch.testing.assert_close(t.y_query, expect)


def test_sinusoids_deterministic():
    a = SinusoidTasks(seed=1).sample(3)
    b = SinusoidTasks(seed=1).sample(3)
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.y_query, b.y_query)


def test_lines_or_sines_mix_both():
    t = LinesOrSinesTasks(k_shot=5, n_query=5, seed=0).sample(400)
    share = t.params["is_sine"].float().mean()
    assert 0.4 < share < 0.6
    line = ~t.params["is_sine"]
    slope, icpt = t.params["slope"][line], t.params["intercept"][line]
    torch.testing.assert_close(t.y_support[line], slope[:, None, None] * t.x_support[line] + icpt[:, None, None])


def test_quadratics_minimum_is_a_stationary_point():
    q = QuadraticTasks(dim=10, seed=0).sample(4)
    theta = q.minimum().requires_grad_(True)
    (grad,) = torch.autograd.grad(q(theta).sum(), theta)
    assert grad.abs().max() < 1e-3
    assert (q(theta + 0.1) > q(theta)).all()


def test_bad_sizes():
    with pytest.raises(ValueError):
        SinusoidTasks(k_shot=0)
    with pytest.raises(ValueError):
        QuadraticTasks().sample(0)
