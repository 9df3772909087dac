"""Kronecker-factored curvature of fully connected layers (K-FAC, Martens & Grosse 2015), per task.

Lecture 07's LLAMA needs, for every task of a meta-batch, the curvature of the support-set
negative log-likelihood at the adapted weights: its log-determinant (a term of the
meta-objective) and samples from the Gaussian it defines (predictions with uncertainty).
A dense Hessian of a network is out of reach; K-FAC gives each layer a block made of
two small matrices.

**The block of one layer.** A fully connected layer computes ``s = W_bar a_bar`` with
``a_bar = [a; 1]`` (its input and a one for the bias) and ``W_bar = [W | b]`` of shape
``[out, in + 1]``. The generalised Gauss-Newton matrix (GGN; for the Gaussian and the
categorical likelihood it equals the Fisher) of the loss summed over N examples has, for
this layer, the block

    F = sum_n sum_c (a_bar_n a_bar_n^T) kron (g_nc g_nc^T)

where ``g_nc`` is column c of ``L_n``, a factor of the loss's Hessian in the network output
(``L_n L_n^T = d^2 loss_n / d f_n^2``), carried back to ``s_n`` by the chain rule
(``g_nc = (d f_n / d s_n)^T L_n[:, c]``). K-FAC replaces the mean of the Kronecker products by the
Kronecker product of the means:

    F ~ N * A kron G,   A = (1/N) sum_n a_bar_n a_bar_n^T   [in + 1, in + 1]
                        G = (1/N) sum_n sum_c g_nc g_nc^T    [out, out]

This is exact when N = 1, and when ``g_nc`` is the same for every example (a linear model
with one output). Adding the precision ``tau`` of an isotropic Gaussian prior, the layer's
curvature is ``H = N A kron G + tau I``; with ``A = U_A diag(a) U_A^T`` and
``G = U_G diag(g) U_G^T`` its eigenvalues are ``N a_i g_j + tau``, so

    log det H = sum_ij log(N a_i g_j + tau),
    a sample of N(0, H^-1) is  U_G E U_A^T  with  E_ji ~ N(0, 1 / (N a_i g_j + tau)).

Only eigenvalues enter the log-determinant (``eigvalsh``), whose gradient is well defined
even when eigenvalues repeat, so the meta-gradient can flow through it.

Ordering: a layer's parameters are ``W_bar`` read column by column (``vec``), which matches
``A kron G`` (the index of ``A`` is the outer one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metaedu.nn import gaussian
from metaedu.nn.functional import Tap

LOSSES = ("mse", "cross_entropy")


@dataclass
class Factors:
    """K-FAC factors of one fully connected layer for every task: ``H ~ n * A kron G + tau I``.

    Kept as the rows whose second moments they are, ``A = a_bar^T a_bar / n`` and
    ``G = g^T g / n``: with few examples (n below the layer's width) the non-zero eigenvalues
    are those of the much smaller Gram matrices ``a_bar a_bar^T / n`` and ``g g^T / n``.
    """

    layer: str  # parameter prefix (``layer + ".weight"``, ``layer + ".bias"``)
    a_bar: torch.Tensor  # [tasks, n, in + 1], the layer's inputs with a 1 appended (for the bias)
    g: torch.Tensor  # [tasks, n * c, out], backpropagated output factors, c per example
    n: int  # examples behind the moments (the curvature is of their summed loss)

    @property
    def A(self) -> torch.Tensor:
        """``[tasks, in + 1, in + 1]``: the second moment of the inputs."""
        return self.a_bar.transpose(1, 2) @ self.a_bar / self.n

    @property
    def G(self) -> torch.Tensor:
        """``[tasks, out, out]``: the second moment of the backpropagated output factors."""
        return self.g.transpose(1, 2) @ self.g / self.n

    @property
    def size(self) -> int:
        """Number of parameters in the block: ``(in + 1) * out``."""
        return self.a_bar.shape[-1] * self.g.shape[-1]


def output_hessian_factor(out: torch.Tensor, loss: str, noise_std: float = 1.0) -> torch.Tensor:
    """A factor ``L`` of each example's loss Hessian in the network output: ``L L^T = d^2 loss / d out^2``.

    ``out`` ``[tasks, n, d]`` -> ``[tasks, n, d, c]``. For ``"mse"`` (a Gaussian likelihood with
    standard deviation ``noise_std``) ``L = I / noise_std``; for ``"cross_entropy"`` (softmax
    over ``d`` classes, probabilities ``p``) ``L = diag(sqrt p) - p sqrt(p)^T``, whose product with its
    transpose is ``diag(p) - p p^T``.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if out.dim() != 3:
        raise ValueError(f"outputs must be [tasks, n, d], got shape {tuple(out.shape)}")
    d = out.shape[-1]
    if loss == "mse":
        if not noise_std > 0:
            raise ValueError(f"noise_std must be positive, got {noise_std!r}")
        eye = torch.eye(d, dtype=out.dtype, device=out.device) / noise_std
        return eye.expand(*out.shape[:2], d, d)
    p = torch.softmax(out, dim=-1)  # [tasks, n, d]
    root = p.sqrt()
    return torch.diag_embed(root) - p.unsqueeze(-1) * root.unsqueeze(-2)  # [tasks, n, d, d]


def kronecker_factors(
    out: torch.Tensor, factor: torch.Tensor, taps: list[Tap], create_graph: bool = False
) -> list[Factors]:
    """K-FAC factors of the tapped layers, from one forward pass (``taps``) and its outputs ``out``.

    ``factor`` is :func:`output_hessian_factor` of ``out``. Each of its ``c`` columns is carried
    back to every tapped layer's pre-activation by one backward pass (a vector-Jacobian product
    per column); examples must not interact (no batch norm between a tapped layer and the
    output), which holds for MLPs and for Conv4's head. ``create_graph`` keeps the result
    differentiable (for a meta-gradient through it).
    """
    if not taps:
        raise ValueError("no fully connected layer was tapped: nothing to estimate the curvature of")
    n = out.shape[1]
    columns = factor.shape[-1]
    outputs = [t.outputs for t in taps]
    per_column = [
        torch.autograd.grad(out, outputs, grad_outputs=factor[..., c], create_graph=create_graph, retain_graph=True)
        for c in range(columns)
    ]  # c tuples of [tasks, n, out_l]
    result = []
    for i, tap in enumerate(taps):
        a = tap.inputs if create_graph else tap.inputs.detach()
        a_bar = torch.cat([a, torch.ones_like(a[..., :1])], dim=-1)  # [tasks, n, in + 1]
        g = torch.cat([grads[i] for grads in per_column], dim=1)  # [tasks, n * c, out]
        g = g if create_graph else g.detach()  # the output layer's g is the factor itself, which has a graph
        result.append(Factors(tap.layer, a_bar, g, n))
    return result


def _float64(t: torch.Tensor) -> torch.Tensor:
    """``t`` in double precision, for eigensolvers (on the CPU when the device has no float64, e.g. Apple's MPS)."""
    return (t.cpu() if t.device.type == "mps" else t).double()


def moment_eigenvalues(rows: torch.Tensor, n: int) -> torch.Tensor:
    """Eigenvalues of ``rows^T rows / n`` (``rows`` ``[tasks, r, d]``) -> ``[tasks, d]``, ascending.

    When r < d the d x d matrix has rank r at most: its non-zero eigenvalues are those of the
    r x r Gram matrix ``rows rows^T / n``, and the other d - r are zero.
    """
    r, d = rows.shape[-2:]
    wide = _float64(rows)  # float32 eigensolvers can fail on these nearly singular matrices; float64 does not
    if r < d:
        small = torch.linalg.eigvalsh(wide @ wide.transpose(-2, -1) / n)  # [tasks, r]
        values = torch.cat([small.new_zeros(*small.shape[:-1], d - r), small], dim=-1)
    else:
        values = torch.linalg.eigvalsh(wide.transpose(-2, -1) @ wide / n)
    return values.clamp_min(0.0).to(
        rows.device, rows.dtype
    )  # positive semi-definite; rounding may leave tiny negatives


def log_det(factors: list[Factors], tau: float) -> torch.Tensor:
    """``sum over layers of log det(n A kron G + tau I)``, per task: ``[tasks]``."""
    if not tau > 0:
        raise ValueError(
            f"the prior precision tau must be positive (else the log-determinant can be -inf), got {tau!r}"
        )
    total = 0.0
    for f in factors:
        a = moment_eigenvalues(f.a_bar, f.n)  # [tasks, in + 1]
        g = moment_eigenvalues(f.g, f.n)  # [tasks, out]
        total = total + torch.log(f.n * a.unsqueeze(-1) * g.unsqueeze(-2) + tau).sum(dim=(-2, -1))
    return total


def dense(f: Factors, tau: float = 0.0) -> torch.Tensor:
    """The block ``n A kron G + tau I`` as a dense matrix ``[tasks, P, P]`` (small layers; for checks)."""
    tasks = f.A.shape[0]
    blocks = torch.einsum("tik,tjl->tijkl", f.A, f.G).reshape(tasks, f.size, f.size)  # A kron G per task
    return f.n * blocks + tau * torch.eye(f.size, dtype=f.A.dtype, device=f.A.device)


def sample(f: Factors, tau: float, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws of ``W_bar`` offsets from N(0, (n A kron G + tau I)^-1): ``[n_samples, tasks, out, in + 1]``.

    The last column is the bias offset; the others are the weight's.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    if not tau > 0:
        raise ValueError(f"the prior precision tau must be positive (else the covariance is unbounded), got {tau!r}")
    like = f.a_bar
    a, UA = (
        v.to(like.device, like.dtype) for v in torch.linalg.eigh(_float64(f.A.detach()))
    )  # [tasks, in+1], [.., in+1]
    g, UG = (
        v.to(like.device, like.dtype) for v in torch.linalg.eigh(_float64(f.G.detach()))
    )  # [tasks, out], [.., out]
    precision = f.n * a.clamp_min(0).unsqueeze(-2) * g.clamp_min(0).unsqueeze(-1) + tau  # [tasks, out, in + 1]
    # a diagonal Gaussian in the eigenbasis, rotated back: vec(U_G E U_A^T) = (U_A kron U_G) vec(E)
    where = generator.device if generator is not None else precision.device  # draw where the generator lives
    E = gaussian.sample(
        torch.zeros_like(precision, device=where), -torch.log(precision).to(where), n=n_samples, generator=generator
    ).to(precision.device)
    return UG @ E @ UA.transpose(-2, -1)
