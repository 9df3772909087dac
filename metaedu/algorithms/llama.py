"""LLAMA: Lightweight Laplace Approximation for Meta-Adaptation (Grant et al., ICLR 2018, section 4).

MAML (:mod:`metaedu.algorithms.maml`) replaces each task's integral in the marginal likelihood
(:mod:`metaedu.algorithms.hierarchical_bayes`, equation (1)) by the likelihood at one point, the
fast-adapted phi_hat_j. LLAMA keeps the volume around that point too, by Laplace's method
(subroutine ML-LAPLACE):

1. Adapt: phi_hat_j = k gradient steps from theta on the task's N support points (MAML's inner loop).
2. Estimate the curvature H_hat_j of the support set's negative log-likelihood at phi_hat_j
   (K-FAC, :mod:`metaedu.nn.kfac`), plus ``tau I``.
3. Meta-train theta on

       sum_j [ -log p(x_j,N+1 .. x_j,N+M | phi_hat_j) + eta log det H_hat_j ].                 (5)

4. MAML with uncertainty: draws phi ~ N(phi_hat_j, H_hat_j^-1) each give a prediction
   (:meth:`LLAMA.predictive_samples`), scored by :func:`predictive_log_likelihood` and :func:`pit`.

:class:`LLAMA` is MAML with (5) as its per-task query loss, so it trains through the same
batched inner loop and the same training loop (:func:`metaedu.algorithms.maml.meta_train`);
no Python loop runs over tasks.

Symbols and names: phi_hat_j = ``fast``; alpha = ``inner_lr``; k = ``steps``; N = ``k_shot``;
M = ``n_query``; eta = ``eta``; tau = ``prior_precision``; sigma = ``noise_std`` (the Gaussian
likelihood's, regression only); H_hat_j = :class:`~metaedu.nn.kfac.Factors` per layer.

Our choices where the paper leaves room (the lecture states them too): H_hat_j is the
generalised Gauss-Newton matrix (the Fisher, for these likelihoods) of the support set's summed
negative log-likelihood at phi_hat_j, in K-FAC form per fully connected layer, plus ``tau I``,
the curvature of an isotropic Gaussian prior term; the query term of (5) is a mean over the M
points (as in MAML's objective; eta absorbs the 1/M); on Conv4 only the head enters H_hat_j,
because batch norm mixes the examples of a task, so the convolutional body has no per-example
factors; the inner loop is MAML's, unchanged (alpha on the mean squared error is gradient
descent on the Gaussian NLL with step ``alpha * 2 sigma^2 / N``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from metaedu.algorithms import maml
from metaedu.algorithms.hierarchical_bayes import nll
from metaedu.algorithms.maml import MAML
from metaedu.nn import gaussian, kfac
from metaedu.nn.backbones import MLP, Conv4
from metaedu.nn.functional import Params, batched_forward

# ----------------------------------------------------------------------------- settings


# Note 1. ``python benchmarks/llama_meta_validation.py`` (quick budget, one thread) trains LLAMA with each eta and
# scores it on meta-validation data only. Sinusoids, held-out log-likelihood per point (K = 5 / K = 10):
# eta 0: -1.116 / -0.863, 1e-3: -1.102 / -0.792, 1e-2: -1.118 / -0.891. Glyphs, 5-way 1-shot accuracy on held-out
# background alphabets: eta 0: 72.5 ± 1.5, 1e-3: 71.9 ± 1.7, 1e-2: 73.1 ± 1.6 (all within each other's intervals).


@dataclass
class SinusoidSettings(maml.SinusoidSettings):
    """LLAMA on Finn's sinusoids: MAML's setting (the MAML baseline trains on the same one) plus (5)'s terms."""

    eta: float = 1e-3  # eta, weight of log det H_hat in (5); best of 0, 1e-3, 1e-2 on validation tasks (note 1)
    prior_precision: float = 10.0  # tau in training: precision of the isotropic prior term in every curvature block
    noise_std: float = 0.3  # sigma of the Gaussian likelihood in training and in the curvature
    n_samples: int = 100  # posterior draws per test task
    val_tasks: int = 200  # meta-validation tasks (their own seed) behind every choice of sigma and tau
    val_samples: int = 30  # posterior draws per meta-validation task
    test_points: int = 50  # held-out points per validation or test task
    noise_grid: tuple[float, ...] = (0.2, 0.3, 0.5, 0.8)  # sigma candidates for the predictive (chosen on validation)
    tau_grid: tuple[float, ...] = (1e3, 1e4, 1e5)  # tau candidates for the predictive (chosen on validation)

    def __post_init__(self) -> None:
        _check_common(self)
        if not self.noise_std > 0 or not all(v > 0 for v in (*self.noise_grid, *self.tau_grid)):
            raise ValueError(f"noise_std and every noise_grid / tau_grid value must be positive, got {self.noise_std!r}, "
                             f"{self.noise_grid!r}, {self.tau_grid!r}")
        if not self.noise_grid or not self.tau_grid:
            raise ValueError("noise_grid and tau_grid need at least one candidate each")
        for name in ("n_samples", "val_tasks", "val_samples", "test_points", "eval_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")

    @classmethod
    def quick(cls) -> "SinusoidSettings":
        return cls(steps=1500, outer_lr=0.003, eval_tasks=300, val_tasks=100, val_samples=20, n_samples=30)

    @classmethod
    def full(cls) -> "SinusoidSettings":
        return cls(eval_tasks=600)


@dataclass
class GlyphSettings(maml.GlyphSettings):
    """LLAMA on N-way 1-shot glyph episodes with Conv4: MAML's glyph setting plus (5)'s terms (head curvature)."""

    eta: float = 1e-2  # eta, weight of log det H_hat in (5); best of 0, 1e-3, 1e-2 on validation alphabets (note 1)
    prior_precision: float = 1.0  # tau, precision of the isotropic prior term added to the head's curvature

    def __post_init__(self) -> None:
        _check_common(self)

    @classmethod
    def quick(cls) -> "GlyphSettings":
        return cls(hidden=16, n_query=5, meta_batch=4, steps=120, outer_lr=0.005, eval_episodes=300)

    @classmethod
    def full(cls) -> "GlyphSettings":
        return cls()


def _check_common(s) -> None:
    if not s.eta >= 0:
        raise ValueError(f"eta must be >= 0, got {s.eta!r}")
    if not s.prior_precision > 0:
        raise ValueError(f"prior_precision (tau) must be positive, got {s.prior_precision!r}")
    if not s.inner_lr > 0 or not s.outer_lr > 0:
        raise ValueError(f"step sizes must be positive, got inner_lr={s.inner_lr!r}, outer_lr={s.outer_lr!r}")
    if s.k_shot < 1 or s.meta_batch < 1 or s.steps < 0 or s.inner_steps < 0:
        raise ValueError("k_shot and meta_batch must be >= 1, steps and inner_steps >= 0; got "
                         f"{s.k_shot}, {s.meta_batch}, {s.steps}, {s.inner_steps}")


def sinusoid_learner(settings: SinusoidSettings, device="cpu") -> "LLAMA":
    """LLAMA on Finn's regressor (MLP 1-hidden-1), with the settings' eta, tau and sigma."""
    model = MLP((1, *settings.hidden, 1)).to(device)
    return LLAMA(model, "mse", settings.inner_lr, settings.eta, settings.prior_precision, settings.noise_std,
                 settings.first_order).to(device)


def glyph_learner(settings: GlyphSettings, in_channels: int = 1, image_size: int = 28, device="cpu") -> "LLAMA":
    """LLAMA on Conv4 with an ``n_way`` head (batch statistics only); the head carries the curvature."""
    model = Conv4(in_channels, settings.hidden, settings.n_way, track_running_stats=False, image_size=image_size)
    return LLAMA(model.to(device), "cross_entropy", settings.inner_lr, settings.eta, settings.prior_precision,
                 first_order=settings.first_order).to(device)


# ----------------------------------------------------------------------------- the learner


@dataclass
class Posterior:
    """The Laplace posterior of every task: mean ``fast`` (phi_hat_j) and K-FAC precision blocks."""

    fast: Params  # {name: [tasks, ...]}, detached
    factors: list[kfac.Factors]  # one per layer in the curvature
    prior_precision: float  # tau
    noise_std: float  # sigma the factors were computed with (regression; 1.0 for classification)

    def rescaled(self, noise_std: float, prior_precision: float) -> "Posterior":
        """The same posterior under another sigma and tau, without adapting again.

        The Gauss-Newton factor G scales as 1 / sigma^2 (each backpropagated column as 1 / sigma).
        """
        if not noise_std > 0 or not prior_precision > 0:
            raise ValueError(f"noise_std and prior_precision must be positive, got {noise_std!r}, {prior_precision!r}")
        scale = self.noise_std / noise_std
        factors = [kfac.Factors(f.layer, f.a_bar, f.g * scale, f.n) for f in self.factors]
        return Posterior(self.fast, factors, float(prior_precision), float(noise_std))


class LLAMA(MAML):
    """MAML whose per-task query loss is ML-LAPLACE's (5): query NLL + eta log det H_hat_j.

    Args:
        model: the network (an ``MLP``, or ``Conv4`` with a head and ``track_running_stats=False``).
        loss: ``"mse"`` (Gaussian likelihood with ``noise_std``) or ``"cross_entropy"``.
        inner_lr: alpha of MAML's inner loop.
        eta: weight of ``log det H_hat`` in the meta-objective (0 gives MAML on the NLL).
        prior_precision: tau, added to every curvature block (an isotropic Gaussian prior's).
        noise_std: sigma of the Gaussian likelihood (regression only).
        first_order, task_chunk: as in :class:`~metaedu.algorithms.maml.MAML`.

    Example::

        learner = LLAMA(MLP((1, 40, 40, 1)), "mse", inner_lr=0.01, eta=1e-3, prior_precision=10.0, noise_std=0.3)
        maml.meta_train(learner, SinusoidTasks(10, 10), settings)      # the one training loop
        samples = learner.predictive_samples(x_s, y_s, x_q, steps=1, n_samples=50)  # [50, tasks, n, 1]
    """

    def __init__(self, model: nn.Module, loss: str = "mse", inner_lr: float = 0.01, eta: float = 1e-3,
                 prior_precision: float = 1.0, noise_std: float = 1.0, first_order: bool = False,
                 task_chunk: int | None = None) -> None:
        super().__init__(model, loss, inner_lr, first_order=first_order, task_chunk=task_chunk)
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta!r}")
        if not prior_precision > 0:
            raise ValueError(f"prior_precision (tau) must be positive, got {prior_precision!r}")
        if not noise_std > 0:
            raise ValueError(f"noise_std (sigma) must be positive, got {noise_std!r}")
        if not isinstance(model, (MLP, Conv4)) or (isinstance(model, Conv4) and model.head is None):
            raise ValueError("LLAMA's K-FAC curvature needs an MLP or a Conv4 with a head (fully connected layers)")
        self.eta, self.prior_precision, self.noise_std = float(eta), float(prior_precision), float(noise_std)

    def curvature(self, fast: Params, x_support: torch.Tensor, create_graph: bool = True,
                  noise_std: float | None = None) -> list[kfac.Factors]:
        """K-FAC factors of the support set's summed NLL at ``fast``, one per adapted fully connected layer."""
        taps: list = []
        out = batched_forward(self.model, fast, x_support, taps=taps)  # [tasks, N, out]
        taps = [t for t in taps if f"{t.layer}.weight" in self.adapted and f"{t.layer}.bias" in self.adapted]
        factor = kfac.output_hessian_factor(out, self.loss, self.noise_std if noise_std is None else noise_std)
        return kfac.kronecker_factors(out, factor, taps, create_graph=create_graph)

    def query_losses(self, x_support, y_support, x_query, y_query, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(5) per task ``[tasks]``, and the query outputs: what MAML's training loop minimises."""
        fast = self.adapt(x_support, y_support, steps)  # phi_hat_j, differentiable in theta
        out = batched_forward(self.model, fast, x_query)  # [tasks, M, out]
        loss = nll(out, y_query, self.loss, self.noise_std)
        if self.eta:
            loss = loss + self.eta * kfac.log_det(self.curvature(fast, x_support), self.prior_precision)
        return loss, out

    def posterior(self, x_support, y_support, steps: int, noise_std: float | None = None,
                  prior_precision: float | None = None) -> Posterior:
        """phi_hat_j and the K-FAC curvature at it, for every task (no meta-gradient)."""
        with torch.enable_grad():
            fast = self.adapt(x_support, y_support, steps, create_graph=False)
            fast = {n: p.detach().requires_grad_(n in self.adapted) for n, p in fast.items()}
            factors = self.curvature(fast, x_support, create_graph=False, noise_std=noise_std)
        tau = self.prior_precision if prior_precision is None else prior_precision
        sigma = self.noise_std if noise_std is None else noise_std
        return Posterior({n: p.detach() for n, p in fast.items()}, factors, float(tau), float(sigma))

    def sample_parameters(self, post: Posterior, n_samples: int, generator: torch.Generator | None = None) -> Params:
        """``n_samples`` draws of phi ~ N(phi_hat_j, H_hat_j^-1) per task, as ``{name: [n_samples * tasks, ...]}``.

        Sample-major: entry ``s * tasks + j`` is draw s of task j. Layers outside the curvature
        keep phi_hat_j.
        """
        params = {n: p.unsqueeze(0).expand(n_samples, *p.shape).clone() for n, p in post.fast.items()}
        for f in post.factors:
            delta = kfac.sample(f, post.prior_precision, n_samples, generator)  # [S, tasks, out, in + 1]
            params[f"{f.layer}.weight"] += delta[..., :-1]
            params[f"{f.layer}.bias"] += delta[..., -1]
        return {n: p.flatten(0, 1) for n, p in params.items()}

    @torch.no_grad()
    def sample_outputs(self, post: Posterior, x_query: torch.Tensor, n_samples: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Outputs on ``x_query`` of ``n_samples`` draws from ``post`` per task: ``[n_samples, tasks, n, out]``."""
        params = self.sample_parameters(post, n_samples, generator)
        x = x_query.unsqueeze(0).expand(n_samples, *x_query.shape).flatten(0, 1)  # [S * tasks, n, ...]
        out = batched_forward(self.model, params, x)
        return out.view(n_samples, *x_query.shape[:2], out.shape[-1])

    def predictive_samples(self, x_support, y_support, x_query, steps: int, n_samples: int,
                           generator: torch.Generator | None = None, noise_std: float | None = None,
                           prior_precision: float | None = None) -> torch.Tensor:
        """Adapt, form the Laplace posterior, and return ``n_samples`` draws' outputs: ``[n_samples, tasks, n, out]``."""
        post = self.posterior(x_support, y_support, steps, noise_std, prior_precision)
        return self.sample_outputs(post, x_query, n_samples, generator)


def from_maml(learner: MAML, prior_precision: float = 1.0, noise_std: float = 1.0) -> LLAMA:
    """A Laplace view of a trained MAML learner (the same network, eta = 0): its posterior after the fact."""
    if learner.meta_sgd or learner.anil:
        raise ValueError("from_maml takes a plain (or first-order) MAML learner, not Meta-SGD or ANIL")
    return LLAMA(learner.model, learner.loss, learner.inner_lr, 0.0, prior_precision, noise_std, learner.first_order)


def choose_laplace(learner: LLAMA, tasks, steps: int, noise_stds: list[float], prior_precisions: list[float],
                   n_samples: int, seed: int = 0) -> tuple[float, float, dict]:
    """(sigma, tau) of the grid with the best mean held-out log-likelihood on ``tasks`` (meta-validation tasks).

    Adapts once; every grid point rescales the same posterior (:meth:`Posterior.rescaled`) and draws
    ``n_samples`` with the same seed. Returns the choice and the mean score of every grid point.
    """
    if not noise_stds or not prior_precisions:
        raise ValueError("the grids of noise levels and prior precisions must not be empty")
    post = learner.posterior(tasks.x_support, tasks.y_support, steps)
    scores = {}
    for sigma in noise_stds:
        for tau in prior_precisions:
            out = learner.sample_outputs(post.rescaled(sigma, tau), tasks.x_query, n_samples,
                                         torch.Generator().manual_seed(seed))
            scores[(sigma, tau)] = float(predictive_log_likelihood(out.cpu(), tasks.y_query.cpu(), sigma).mean())
    sigma, tau = max(scores, key=scores.get)
    return sigma, tau, scores


# ----------------------------------------------------------------------------- scoring predictive distributions


def predictive_log_likelihood(samples: torch.Tensor, y: torch.Tensor, noise_std: float) -> torch.Tensor:
    """Mean log density per held-out point of the mixture ``1/S sum_s N(y; f_s, sigma^2)``, per task.

    ``samples`` ``[S, tasks, n, 1]`` (S = 1: a point prediction), ``y`` ``[tasks, n, 1]`` -> ``[tasks]``.
    """
    if samples.dim() != 4 or samples.shape[1:] != y.shape:
        raise ValueError(f"samples must be [S, *y.shape] = [S, {', '.join(map(str, y.shape))}], "
                         f"got {tuple(samples.shape)}")
    if not noise_std > 0:
        raise ValueError(f"noise_std must be positive, got {noise_std!r}")
    log_p = gaussian.log_density(y.unsqueeze(0), samples, 2 * math.log(noise_std), event_dims=1)  # [S, tasks, n]
    mixture = torch.logsumexp(log_p, dim=0) - math.log(samples.shape[0])  # [tasks, n]
    return mixture.mean(-1)


def pit(samples: torch.Tensor, y: torch.Tensor, noise_std: float) -> torch.Tensor:
    """Probability integral transform: the predictive CDF at each held-out point, ``[tasks, n]``.

    For the mixture ``1/S sum_s N(f_s, sigma^2)``: ``u = 1/S sum_s Phi((y - f_s) / sigma)``. A point lies
    in the central band of level ``l`` exactly when ``|u - 1/2| <= l / 2`` (:func:`coverage`).
    """
    if samples.dim() != 4 or samples.shape[1:] != y.shape:
        raise ValueError(f"samples must be [S, *y.shape], got {tuple(samples.shape)} for y {tuple(y.shape)}")
    z = (y.unsqueeze(0) - samples) / noise_std  # [S, tasks, n, 1]
    return (0.5 * torch.erfc(-z / math.sqrt(2))).mean(0).squeeze(-1)


def coverage(u: torch.Tensor, level: float) -> torch.Tensor:
    """Share (%) of each task's held-out points inside the central ``level`` band, from :func:`pit`: ``[tasks]``."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return ((u - 0.5).abs() <= level / 2).float().mean(-1) * 100


def band(samples: torch.Tensor, noise_std: float, level: float = 0.9, draws: int = 20,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper edges of the central ``level`` predictive band, by sampling (for plots).

    Each of the S function draws gets ``draws`` noise draws; returns two ``samples.shape[1:]`` tensors.
    """
    noise = torch.randn(draws, *samples.shape, generator=generator, dtype=samples.dtype).to(samples.device)
    y = (samples.unsqueeze(0) + noise_std * noise).flatten(0, 1)  # [draws * S, ...]
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=y.dtype, device=y.device)
    low, high = torch.quantile(y, q, dim=0)
    return low, high


def choose_noise_std(log_likelihood, grid: list[float]) -> tuple[float, list[float]]:
    """The sigma of ``grid`` with the highest mean held-out log-likelihood ``log_likelihood(sigma)`` ``[tasks]``.

    Meant for meta-validation tasks. Returns the choice and every sigma's mean score.
    """
    if not grid:
        raise ValueError("the grid of noise levels is empty")
    scores = [float(log_likelihood(s).mean()) for s in grid]
    return grid[max(range(len(grid)), key=scores.__getitem__)], scores
