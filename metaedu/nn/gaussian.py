"""Diagonal Gaussians: the one place for the reparameterised sample, the KL and the log-density.

Lectures 07 (Laplace posteriors), 08 (PLATIPUS's q and p over theta) and 09 (the
meta-regularisers' bottleneck and weight posteriors) all work with Gaussians whose
covariance is diagonal. Everything is element-wise and sums over the trailing
``event_dims`` dimensions, so a leading task or sample dimension passes through:

* reparameterised sample: ``z = mu + sigma * eps``, ``eps ~ N(0, I)``, differentiable in
  ``mu`` and ``sigma`` (the "reparameterisation trick");
* ``KL(N(mu_q, diag var_q) || N(mu_p, diag var_p))
  = 1/2 sum( log(var_p / var_q) + (var_q + (mu_q - mu_p)^2) / var_p - 1 )``;
* ``log N(x; mu, diag var) = -1/2 sum( log(2 pi var) + (x - mu)^2 / var )``.

Variances are passed as ``log_var`` (unconstrained, what a network or a learned
parameter holds); ``var = exp(log_var)``.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def _sum_last(x: torch.Tensor, event_dims: int) -> torch.Tensor:
    if event_dims < 0 or event_dims > x.dim():
        raise ValueError(f"event_dims must be between 0 and {x.dim()}, got {event_dims}")
    return x.sum(dim=tuple(range(x.dim() - event_dims, x.dim()))) if event_dims else x


def sample(mu: torch.Tensor, log_var: torch.Tensor, n: int | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """A reparameterised draw from N(mu, diag exp(log_var)); ``n`` draws stacked in front when given.

    Returns ``mu.shape`` (or ``[n, *mu.shape]``); gradients flow to ``mu`` and ``log_var``.
    """
    mu, log_var = torch.broadcast_tensors(mu, log_var)
    shape = mu.shape if n is None else (n, *mu.shape)
    eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * log_var) * eps


def kl(mu_q: torch.Tensor, log_var_q: torch.Tensor, mu_p: torch.Tensor | float = 0.0,
       log_var_p: torch.Tensor | float = 0.0, event_dims: int = 1) -> torch.Tensor:
    """KL(q || p) between diagonal Gaussians, summed over the last ``event_dims`` dimensions.

    ``mu_p = 0, log_var_p = 0`` (the defaults) give KL(q || N(0, I)).
    """
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    log_var_p = torch.as_tensor(log_var_p, dtype=mu_q.dtype, device=mu_q.device)
    terms = log_var_p - log_var_q + (torch.exp(log_var_q) + (mu_q - mu_p) ** 2) / torch.exp(log_var_p) - 1
    return 0.5 * _sum_last(terms, event_dims)


def log_density(x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor | float, event_dims: int = 1) -> torch.Tensor:
    """log N(x; mu, diag exp(log_var)), summed over the last ``event_dims`` dimensions."""
    log_var = torch.as_tensor(log_var, dtype=x.dtype, device=x.device)
    terms = LOG_2PI + log_var + (x - mu) ** 2 / torch.exp(log_var)
    return -0.5 * _sum_last(terms, event_dims)
