"""MAML as hierarchical Bayes (Grant, Finn, Levine, Darrell & Griffiths, ICLR 2018).

The model: meta-parameters theta, one parameter vector phi_j per task, data x_j of task j
(theta -> phi_j -> x_j). Meta-learning is empirical Bayes: choose theta to maximise

    p(X | theta) = prod_j  integral  p(x_j1 .. x_jN | phi_j) p(phi_j | theta) d phi_j.         (1)

Read next to the paper:

1. **MAML as empirical Bayes** (subroutine ML-POINT). Each integral is replaced by the
   likelihood of new data of the task at a point estimate from k gradient steps started at theta:

       -log p(X | theta) ~ sum_j -log p(x_j,N+1 .. x_j,N+M | phi_hat_j),
       phi_hat_j = theta + alpha grad_theta log p(x_j1 .. x_jN | theta)   (k = 1).             (2)

   :func:`ml_point` is (2)'s term per task. With a Gaussian likelihood it is MAML's squared
   error, scaled and shifted (:func:`gaussian_nll`), so MAML maximises (2).
2. **Early stopping is a prior** (linear least squares). k steps of
   ``phi(k) = phi(k-1) - B grad 1/2 ||y - X phi||^2`` from ``phi(0) = theta`` land exactly on the
   MAP estimate under ``p(phi | theta) = N(theta, Q)`` with, for ``B = alpha I`` and ``X^T X = O Lambda O^T``,

       Q = O Lambda^-1 ((I - B Lambda)^-k - I) O^T.                                           (3)

   For a preconditioner B that does not share the eigenvectors of ``X^T X``, the step is plain
   gradient descent in the coordinates ``psi = B^-1/2 phi``, so (3) holds there:
   ``Q = B^1/2 O~ Lambda~^-1 ((I - Lambda~)^-k - I) O~^T B^1/2`` with
   ``O~ Lambda~ O~^T = B^1/2 X^T X B^1/2`` (it reduces to (3) when B and ``X^T X`` commute).
   :func:`gradient_descent`, :func:`implicit_prior_covariance` (and its inverse,
   :func:`implicit_prior_precision`), :func:`map_estimate`.
   Q is symmetric positive definite when every eigenvalue x of ``B^1/2 X^T X B^1/2`` lies below 1
   (each step undershoots the minimum along every direction); for 1 < x < 2 and odd k it has
   negative eigenvalues: an overshooting step is no Gaussian prior.
3. **Laplace's method** (subroutine ML-LAPLACE). Around a mode phi* of the integrand,

       integral p(X_j | phi) p(phi | theta) d phi ~ p(X_j | phi*) p(phi* | theta) det(H_j / 2 pi)^-1/2   (4)

   with H_j the curvature of the negative log integrand at phi* (:func:`laplace_log_evidence`;
   exact for a Gaussian integrand, :func:`linear_log_marginal`). LLAMA, which uses (4) around
   the fast-adapted phi_hat_j, is :mod:`metaedu.algorithms.llama`.

Symbols and names: theta = the model's parameters (``theta`` in the linear case); phi_hat_j =
``fast``; alpha = ``inner_lr``; k = ``steps``; B = ``preconditioner``; Q = ``Q``; N = support
points (``k_shot``); M = query points; sigma = ``noise_std`` of a Gaussian likelihood.
"""

from __future__ import annotations

import math

import torch

from metaedu.algorithms import maml
from metaedu.algorithms.maml import MAML
from metaedu.nn import gaussian
from metaedu.nn.functional import batched_forward

# ----------------------------------------------------------------------------- 1. the MAML objective as a likelihood


def gaussian_nll(out: torch.Tensor, y: torch.Tensor, noise_std: float) -> torch.Tensor:
    """Mean negative log-likelihood per point of ``N(y; out, sigma^2)``, per task: ``[tasks]``.

    Equals ``mse / (2 sigma^2) + log(2 pi sigma^2) / 2``, MAML's loss scaled and shifted.
    """
    if not noise_std > 0:
        raise ValueError(f"noise_std must be positive, got {noise_std!r}")
    if out.shape != y.shape:
        raise ValueError(f"outputs {tuple(out.shape)} and targets {tuple(y.shape)} differ in shape")
    log_var = 2 * math.log(noise_std)
    return -gaussian.log_density(y, out, log_var, event_dims=1).flatten(1).mean(1)


def nll(out: torch.Tensor, y: torch.Tensor, loss: str, noise_std: float = 1.0) -> torch.Tensor:
    """Per-task mean negative log-likelihood: Gaussian (``"mse"``) or categorical (``"cross_entropy"``)."""
    if loss == "mse":
        return gaussian_nll(out, y, noise_std)
    if loss != "cross_entropy":
        raise ValueError(f"loss must be one of {maml.LOSSES}, got {loss!r}")
    return maml.task_loss(out, y, "cross_entropy")  # cross-entropy is the categorical NLL


def ml_point(learner: MAML, x_support, y_support, x_query, y_query, steps: int, noise_std: float = 1.0) -> torch.Tensor:
    """ML-POINT for every task: adapt k steps from theta, return the query points' mean NLL ``[tasks]``."""
    fast = learner.adapt(x_support, y_support, steps)
    return nll(batched_forward(learner.model, fast, x_query), y_query, learner.loss, noise_std)


# ----------------------------------------------------------------------------- 2. early stopping as a prior


def _check_linear(X: torch.Tensor, y: torch.Tensor | None = None, theta: torch.Tensor | None = None) -> None:
    if X.dim() < 2:
        raise ValueError(f"X must be [..., N, D] (N points of D features), got shape {tuple(X.shape)}")
    if y is not None and y.shape != X.shape[:-1]:
        raise ValueError(f"y must be [..., N] to match X {tuple(X.shape)}, got {tuple(y.shape)}")
    if theta is not None and theta.shape[-1] != X.shape[-1]:
        raise ValueError(f"theta must have D = {X.shape[-1]} entries, got shape {tuple(theta.shape)}")


def _step_matrix(D: int, inner_lr: float | None, preconditioner: torch.Tensor | None, like: torch.Tensor):
    """B as a matrix: ``inner_lr * I`` or the given symmetric positive definite preconditioner."""
    if (inner_lr is None) == (preconditioner is None):
        raise ValueError("give exactly one of inner_lr (B = alpha I) and preconditioner (a matrix B)")
    if preconditioner is None:
        if not inner_lr > 0:
            raise ValueError(f"the step size alpha must be positive, got {inner_lr!r}")
        return inner_lr * torch.eye(D, dtype=like.dtype, device=like.device)
    B = preconditioner.to(like.dtype)
    if B.shape[-2:] != (D, D):
        raise ValueError(f"the preconditioner must be {D} x {D}, got shape {tuple(B.shape)}")
    if not torch.allclose(B, B.transpose(-2, -1), atol=1e-12 * float(B.abs().max())):
        raise ValueError("the preconditioner B must be symmetric")
    if float(torch.linalg.eigvalsh(B).min()) <= 0:
        raise ValueError("the preconditioner B must be positive definite (every eigenvalue > 0)")
    return B


def gradient_descent(
    X: torch.Tensor,
    y: torch.Tensor,
    theta: torch.Tensor,
    steps: int,
    inner_lr: float | None = None,
    preconditioner: torch.Tensor | None = None,
    keep_path: bool = False,
) -> torch.Tensor:
    """k steps of ``phi <- phi - B X^T (X phi - y)`` from ``phi = theta`` (the slides' update).

    ``X`` ``[..., N, D]``, ``y`` ``[..., N]``, ``theta`` ``[..., D]``; returns ``phi(k)`` ``[..., D]``,
    or ``[k + 1, ..., D]`` (``phi(0) .. phi(k)``) with ``keep_path``.
    """
    _check_linear(X, y, theta)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    B = _step_matrix(X.shape[-1], inner_lr, preconditioner, X)
    phi = theta.expand(*X.shape[:-2], X.shape[-1]).to(X.dtype)
    path = [phi]
    for _ in range(steps):
        grad = (X.transpose(-2, -1) @ (X @ phi.unsqueeze(-1) - y.unsqueeze(-1))).squeeze(-1)  # [..., D]
        phi = phi - (B @ grad.unsqueeze(-1)).squeeze(-1)
        path.append(phi)
    return torch.stack(path) if keep_path else phi


def _shrinkage(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``((1 - x)^-k - 1) / x`` element-wise (Q's eigenvalues in the plain coordinates); k at x = 0."""
    small = x.abs() < 1e-8
    safe = torch.where(small, torch.ones_like(x), x)
    below = torch.expm1(-steps * torch.log1p(-torch.clamp(safe, max=1 - 1e-16))) / safe  # x < 1, accurate near 0
    above = (torch.pow(1 - safe, -float(steps)) - 1) / safe  # x > 1, where 1 - x is negative
    return torch.where(small, steps + steps * (steps + 1) / 2 * x, torch.where(safe < 1, below, above))


def _implicit_prior(X, steps, inner_lr, preconditioner, precision: bool) -> torch.Tensor:
    _check_linear(X)
    if steps < (1 if precision else 0):
        raise ValueError(
            f"steps must be >= {1 if precision else 0}, got {steps}"
            + (" (after no step the prior is a point mass: its precision is infinite)" if precision else "")
        )
    B = _step_matrix(X.shape[-1], inner_lr, preconditioner, X)
    b, V = torch.linalg.eigh(B)
    power = -0.5 if precision else 0.5
    root = V @ torch.diag_embed(b**power) @ V.transpose(-2, -1)  # B^1/2 (or B^-1/2 for the precision)
    half = V @ torch.diag_embed(b.sqrt()) @ V.transpose(-2, -1)
    lam, O = torch.linalg.eigh(half @ X.transpose(-2, -1) @ X @ half)  # Lambda~, O~ of B^1/2 X^T X B^1/2
    lam = lam.clamp_min(0.0)
    if bool(((lam - 1).abs() < 1e-12).any()):
        raise ValueError(
            "a step lands exactly on the minimum along some direction (B lambda = 1): "
            "the implicit prior variance there is infinite"
        )
    values = _shrinkage(lam, steps)
    inner = O @ torch.diag_embed(1 / values if precision else values) @ O.transpose(-2, -1)
    return root @ inner @ root


def implicit_prior_covariance(
    X: torch.Tensor, steps: int, inner_lr: float | None = None, preconditioner: torch.Tensor | None = None
) -> torch.Tensor:
    """Q of (3): the prior covariance whose MAP estimate is k steps of (preconditioned) gradient descent.

    ``X`` ``[..., N, D]`` -> ``Q`` ``[..., D, D]``. ``steps = 0`` gives Q = 0 (the estimate stays at theta).
    Q's eigenvalues grow like ``(1 - B lambda)^-k``: after many large steps a dense Q can no longer
    hold its small eigenvalues to double precision; :func:`implicit_prior_precision` then can.
    """
    return _implicit_prior(X, steps, inner_lr, preconditioner, precision=False)


def implicit_prior_precision(
    X: torch.Tensor, steps: int, inner_lr: float | None = None, preconditioner: torch.Tensor | None = None
) -> torch.Tensor:
    """``Q^-1`` (``steps >= 1``), computed directly; it tends to 0 as k grows (the prior fades away)."""
    return _implicit_prior(X, steps, inner_lr, preconditioner, precision=True)


def map_estimate(
    X: torch.Tensor,
    y: torch.Tensor,
    theta: torch.Tensor,
    Q: torch.Tensor | None = None,
    precision: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mode of ``N(y; X phi, I) N(phi; theta, Q)``, ``[..., D]``; give Q or its inverse ``precision``.

    With Q: ``theta + Q (X^T X Q + I)^-1 X^T (y - X theta)``, written without ``Q^-1``, so a
    singular Q (k = 0 gives Q = 0) is fine. With the precision P:
    ``theta + (X^T X + P)^-1 X^T (y - X theta)``.
    """
    _check_linear(X, y, theta)
    if (Q is None) == (precision is None):
        raise ValueError("give exactly one of Q (the prior covariance) and precision (its inverse)")
    H = X.transpose(-2, -1) @ X
    residual = y - (X @ theta.unsqueeze(-1)).squeeze(-1)  # [..., N]
    rhs = X.transpose(-2, -1) @ residual.unsqueeze(-1)  # [..., D, 1]
    if precision is not None:
        return theta + torch.linalg.solve(H + precision, rhs).squeeze(-1)
    eye = torch.eye(X.shape[-1], dtype=X.dtype, device=X.device)
    return theta + (Q @ torch.linalg.solve(H @ Q + eye, rhs)).squeeze(-1)


def linear_log_marginal(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """The exact evidence of (1) for one linear-Gaussian task: ``log N(y; X theta, I + X Q X^T)``."""
    _check_linear(X, y, theta)
    cov = torch.eye(X.shape[-2], dtype=X.dtype, device=X.device) + X @ Q @ X.transpose(-2, -1)
    r = y - (X @ theta.unsqueeze(-1)).squeeze(-1)
    L = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(L, r.unsqueeze(-1), upper=False).squeeze(-1)
    log_det = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * ((z**2).sum(-1) + log_det + X.shape[-2] * gaussian.LOG_2PI)


# ----------------------------------------------------------------------------- 3. Laplace's method


def laplace_log_evidence(log_joint_at_mode: torch.Tensor, hessian_log_det: torch.Tensor, dim: int) -> torch.Tensor:
    """(4) in logs: ``log integral exp(l(phi)) d phi ~ l(phi*) + dim/2 log(2 pi) - 1/2 log det H``.

    ``l`` is the log joint ``log p(X | phi) + log p(phi | theta)``, ``H = -grad^2 l(phi*)`` its
    curvature at the mode, ``dim`` the number of parameters integrated out.
    """
    if dim < 1:
        raise ValueError(f"dim must be the number of integrated parameters (>= 1), got {dim}")
    return log_joint_at_mode + 0.5 * dim * gaussian.LOG_2PI - 0.5 * hessian_log_det
