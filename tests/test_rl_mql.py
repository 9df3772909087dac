"""Meta-Q-Learning's ingredients against known values: a Gaussian density ratio, TD3 targets by hand,
the effective sample size at its extremes, and the proximal term."""

from __future__ import annotations

import pytest
import torch

from metaedu.rl.mql import (
    ContextActorCritic,
    adaptation_loss,
    effective_sample_size,
    fit_logistic_regression,
    propensity_weights,
    proximal_term,
    smoothed_target_action,
    td3_target,
)

D = torch.float64


def test_propensity_weights_recover_the_density_ratio_of_two_gaussians():
    """N(mu_1, I) over N(mu_0, I): log ratio = (mu_1 - mu_0)^T x - (|mu_1|^2 - |mu_0|^2) / 2, linear in x."""
    gen = torch.Generator().manual_seed(0)
    mu0, mu1 = torch.tensor([0.0, 0.0], dtype=D), torch.tensor([0.8, -0.4], dtype=D)
    old = mu0 + torch.randn(40_000, 2, generator=gen, dtype=D)
    new = mu1 + torch.randn(10_000, 2, generator=gen, dtype=D)  # unequal sizes: the prior factor matters
    query = torch.randn(200, 2, generator=gen, dtype=D) * 0.7 + 0.3
    beta = propensity_weights(new, old, query, clip=1e9, l2=0.0)
    p0 = torch.distributions.MultivariateNormal(mu0, torch.eye(2, dtype=D)).log_prob(query)
    p1 = torch.distributions.MultivariateNormal(mu1, torch.eye(2, dtype=D)).log_prob(query)
    torch.testing.assert_close(beta.log(), p1 - p0, atol=0.06, rtol=0)


def test_logistic_regression_finds_the_optimum_and_weights_are_clipped():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(300, 3, generator=gen, dtype=D)
    labels = (x[:, 0] + 0.5 * torch.randn(300, generator=gen, dtype=D) > 0).to(D)
    w, b = fit_logistic_regression(x, labels, l2=0.1)
    wb = torch.cat([w, b[None]]).requires_grad_()
    features = torch.cat([x, torch.ones(300, 1, dtype=D)], 1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ wb, labels) + 0.05 * (wb[:-1] ** 2).sum()
    (grad,) = torch.autograd.grad(loss, wb)
    assert grad.abs().max() < 1e-5  # a stationary point of a convex loss: the optimum
    far = torch.tensor([[50.0, 0.0, 0.0]], dtype=D)
    assert float(propensity_weights(x[labels == 1], x[labels == 0], far, clip=3.0)) == 3.0
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic_regression(x, torch.ones(300, dtype=D))


def test_td3_target_and_target_smoothing_by_hand():
    r = torch.tensor([1.0, -0.5, 2.0])
    done = torch.tensor([0.0, 1.0, 0.0])
    q1, q2 = torch.tensor([3.0, 4.0, -1.0]), torch.tensor([2.0, 5.0, 0.5])
    torch.testing.assert_close(td3_target(r, done, q1, q2, 0.9), torch.tensor([1 + 0.9 * 2.0, -0.5, 2 + 0.9 * -1.0]))
    a = smoothed_target_action(torch.tensor([0.9, -0.2, 0.0]), torch.tensor([0.3, -0.8, 0.1]), 0.5, 1.0)
    torch.testing.assert_close(a, torch.tensor([1.0, -0.7, 0.1]))  # 1.2 clipped to 1; -0.8 clipped to -0.5
    with pytest.raises(ValueError, match="discount"):
        td3_target(r, done, q1, q2, 1.5)


def test_effective_sample_size_and_the_adaptation_objective():
    assert float(effective_sample_size(torch.ones(5))) == pytest.approx(1.0)
    assert float(effective_sample_size(torch.tensor([0.0, 0.0, 3.0, 0.0]))) == pytest.approx(0.25)
    torch.manual_seed(0)
    model = ContextActorCritic(2, 2, (4,), context=3)
    anchor = {n: p.detach() + 0.1 for n, p in model.named_parameters()}
    count = sum(p.numel() for p in model.parameters())
    assert float(proximal_term(model, anchor).detach()) == pytest.approx(0.5 * 0.01 * count, rel=1e-4)
    new_td, old_td, beta = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0]), torch.tensor([1.0, 3.0])
    loss, lam = adaptation_loss(new_td, old_td, beta, model, anchor)
    assert lam == pytest.approx(1 - 16 / (2 * 10))
    assert float(loss.detach()) == pytest.approx(2.0 + (2 + 12) / 2 + lam * 0.5 * 0.01 * count, rel=1e-4)
    with pytest.raises(ValueError, match="must match"):
        adaptation_loss(new_td, old_td, beta[:1], model, anchor)


def test_the_actor_critic_reads_a_context_and_keeps_actions_in_range():
    model = ContextActorCritic(3, 2, (8,), context=5, max_action=0.1)
    history = torch.randn(4, 6, 3 + 2 + 1 + 3)
    z = model.context(history)
    assert z.shape == (4, 5)
    a = model.actor(torch.randn(4, 3), z)
    assert a.shape == (4, 2) and a.abs().max() <= 0.1
    q1, q2 = model.critics(torch.randn(4, 3), a, z)
    assert q1.shape == q2.shape == (4,) and not torch.equal(q1, q2)  # twin critics are separate networks
