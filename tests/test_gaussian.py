"""Diagonal Gaussians against torch.distributions (an independent implementation)."""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal, kl_divergence

from metaedu.nn import gaussian


def _dist(mu, log_var, event_dims=1):
    return Independent(Normal(mu, torch.exp(0.5 * log_var)), event_dims)


def test_kl_equals_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(4, 3, 5, generator=g, dtype=torch.float64) for _ in range(4))
    for event_dims in (1, 2):
        ours = gaussian.kl(mu_q, lv_q, mu_p, lv_p, event_dims=event_dims)
        ref = kl_divergence(_dist(mu_q, lv_q, event_dims), _dist(mu_p, lv_p, event_dims))
        torch.testing.assert_close(ours, ref)
    standard = gaussian.kl(mu_q, lv_q)
    ref = kl_divergence(_dist(mu_q, lv_q), _dist(torch.zeros_like(mu_q), torch.zeros_like(lv_q)))
    torch.testing.assert_close(standard, ref)
    assert float(gaussian.kl(mu_q, lv_q, mu_q, lv_q).abs().max()) < 1e-12


def test_log_density_equals_torch_distributions():
    g = torch.Generator().manual_seed(1)
    x, mu, lv = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(gaussian.log_density(x, mu, lv), _dist(mu, lv).log_prob(x))
    torch.testing.assert_close(gaussian.log_density(x, mu, lv, event_dims=0), Normal(mu, torch.exp(0.5 * lv)).log_prob(x))


def test_samples_have_the_requested_moments_and_carry_gradients():
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    log_var = torch.log(torch.tensor([0.25, 4.0, 1.0], dtype=torch.float64)).requires_grad_()
    n = 200_000
    z = gaussian.sample(mu, log_var, n=n, generator=torch.Generator().manual_seed(2))
    assert z.shape == (n, 3)
    std = torch.exp(0.5 * log_var.detach())
    # the sample mean is within 5 standard errors, the variance within 5 of its standard errors (2 var^2 / n)
    assert ((z.mean(0) - mu.detach()).abs() < 5 * std / n**0.5).all()
    var = z.var(0)
    assert ((var - std**2).abs() < 5 * std**2 * (2 / n) ** 0.5).all()
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.full((3,), float(n), dtype=torch.float64))
    assert log_var.grad is not None and torch.isfinite(log_var.grad).all()


def test_event_dims_out_of_range_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="event_dims"):
        gaussian.kl(torch.zeros(3), torch.zeros(3), event_dims=2)
