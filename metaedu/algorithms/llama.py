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
   (:meth:`LLAMA.predictive_samples`), scored by :func:`metaedu.evaluation.predictive_log_likelihood`
   and :func:`metaedu.evaluation.pit`.

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

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from metaedu.algorithms import maml
from metaedu.algorithms.hierarchical_bayes import nll
from metaedu.algorithms.maml import MAML
from metaedu.evaluation import predictive_log_likelihood
from metaedu.nn import kfac
from metaedu.nn.backbones import MLP, Conv4
from metaedu.nn.functional import Params, batched_forward
from metaedu.runtime import check_settings, seeded

# ----------------------------------------------------------------------------- settings


#: eta of the presets, chosen among 0, 1e-3 and 1e-2 on meta-validation data at the quick budget by
#: ``scripts/choose_llama_eta.py`` (its printout gives every candidate's score; a slow test reruns it).
#: Full mode keeps these values: the paper gives none for these tasks.
QUICK_ETA = {"sinusoids": 1e-3, "glyphs": 1e-2}


@dataclass
class LLAMASinusoidSettings(maml.SinusoidSettings):
    """LLAMA on Finn's sinusoids: MAML's setting (the MAML baseline trains on the same one) plus (5)'s terms."""

    eta: float = QUICK_ETA["sinusoids"]  # eta, weight of log det H_hat in (5), chosen on validation tasks
    prior_precision: float = 10.0  # tau in training: precision of the isotropic prior term in every curvature block
    noise_std: float = 0.3  # sigma of the Gaussian likelihood in training and in the curvature
    test_shots: tuple[int, ...] = (5, 10)  # K of the validation and test tasks
    n_samples: int = 100  # posterior draws per test task
    val_tasks: int = 200  # meta-validation tasks (their own seed) behind every choice of sigma and tau
    val_samples: int = 30  # posterior draws per meta-validation task
    test_points: int = 50  # held-out points per validation or test task
    noise_grid: tuple[float, ...] = (0.2, 0.3, 0.5, 0.8)  # sigma candidates for the predictive (chosen on validation)
    tau_grid: tuple[float, ...] = (1e3, 1e4, 1e5)  # tau candidates for the predictive (chosen on validation)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_settings(
            self,
            positive=(
                "prior_precision",
                "noise_std",
                "test_shots",
                "n_samples",
                "val_tasks",
                "val_samples",
                "test_points",
                "noise_grid",
                "tau_grid",
            ),
            non_negative=("eta",),
        )

    @classmethod
    def quick(cls) -> "LLAMASinusoidSettings":
        return cls(steps=1500, outer_lr=0.003, eval_tasks=300, val_tasks=100, val_samples=20, n_samples=30)

    @classmethod
    def full(cls) -> "LLAMASinusoidSettings":
        return cls(checkpoint=True)


@dataclass
class LLAMAGlyphSettings(maml.GlyphSettings):
    """LLAMA on N-way 1-shot glyph episodes with Conv4: MAML's glyph setting plus (5)'s terms (head curvature)."""

    eta: float = QUICK_ETA["glyphs"]  # eta, weight of log det H_hat in (5), chosen on validation alphabets
    prior_precision: float = 1.0  # tau, precision of the isotropic prior term added to the head's curvature
    test_query: int = 5  # query images per class in each test episode

    def __post_init__(self) -> None:
        super().__post_init__()
        check_settings(self, positive=("prior_precision", "test_query"), non_negative=("eta",))

    @classmethod
    def quick(cls) -> "LLAMAGlyphSettings":
        return cls(hidden=16, n_query=5, meta_batch=4, steps=120, outer_lr=0.005, eval_episodes=300)

    @classmethod
    def full(cls) -> "LLAMAGlyphSettings":
        return cls(checkpoint=True)


def sinusoid_learner(settings: LLAMASinusoidSettings, device="cpu", seed: int | None = None) -> "LLAMA":
    """LLAMA on Finn's regressor (MLP 1-hidden-1), with the settings' eta, tau and sigma.

    With ``seed``, the initial weights are drawn inside :func:`metaedu.runtime.seeded` (the caller's random
    state is left alone); without, from PyTorch's global generator as it stands.
    """
    with seeded(seed) if seed is not None else nullcontext():
        model = MLP((1, *settings.hidden, 1))
    return LLAMA(
        model.to(device),
        "mse",
        settings.inner_lr,
        settings.eta,
        settings.prior_precision,
        settings.noise_std,
        settings.first_order,
    ).to(device)


def glyph_learner(
    settings: LLAMAGlyphSettings, in_channels: int = 1, image_size: int = 28, device="cpu", seed: int | None = None
) -> "LLAMA":
    """LLAMA on Conv4 with an ``n_way`` head (batch statistics only); the head carries the curvature (``seed``: as above)."""
    with seeded(seed) if seed is not None else nullcontext():
        model = Conv4(in_channels, settings.hidden, settings.n_way, track_running_stats=False, image_size=image_size)
    return LLAMA(
        model.to(device),
        "cross_entropy",
        settings.inner_lr,
        settings.eta,
        settings.prior_precision,
        first_order=settings.first_order,
    ).to(device)


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
        maml.meta_train(learner, SinusoidTasks(10, 10), settings)      # the one training loop (settings: LLAMASinusoidSettings)
        samples = learner.predictive_samples(x_s, y_s, x_q, steps=1, n_samples=50)  # [50, tasks, n, 1]
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str = "mse",
        inner_lr: float = 0.01,
        eta: float = 1e-3,
        prior_precision: float = 1.0,
        noise_std: float = 1.0,
        first_order: bool = False,
        task_chunk: int | None = None,
    ) -> None:
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

    def curvature(
        self, fast: Params, x_support: torch.Tensor, create_graph: bool = True, noise_std: float | None = None
    ) -> list[kfac.Factors]:
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

    def posterior(
        self, x_support, y_support, steps: int, noise_std: float | None = None, prior_precision: float | None = None
    ) -> Posterior:
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
    def sample_outputs(
        self, post: Posterior, x_query: torch.Tensor, n_samples: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Outputs on ``x_query`` of ``n_samples`` draws from ``post`` per task: ``[n_samples, tasks, n, out]``."""
        params = self.sample_parameters(post, n_samples, generator)
        x = x_query.unsqueeze(0).expand(n_samples, *x_query.shape).flatten(0, 1)  # [S * tasks, n, ...]
        out = batched_forward(self.model, params, x)
        return out.view(n_samples, *x_query.shape[:2], out.shape[-1])

    def predictive_samples(
        self,
        x_support,
        y_support,
        x_query,
        steps: int,
        n_samples: int,
        generator: torch.Generator | None = None,
        noise_std: float | None = None,
        prior_precision: float | None = None,
    ) -> torch.Tensor:
        """Adapt, form the Laplace posterior, and return ``n_samples`` draws' outputs: ``[n_samples, tasks, n, out]``."""
        post = self.posterior(x_support, y_support, steps, noise_std, prior_precision)
        return self.sample_outputs(post, x_query, n_samples, generator)


def from_maml(learner: MAML, prior_precision: float = 1.0, noise_std: float = 1.0) -> LLAMA:
    """A Laplace view of a trained MAML learner (the same network, eta = 0): its posterior after the fact."""
    if learner.meta_sgd or learner.anil:
        raise ValueError("from_maml takes a plain (or first-order) MAML learner, not Meta-SGD or ANIL")
    return LLAMA(learner.model, learner.loss, learner.inner_lr, 0.0, prior_precision, noise_std, learner.first_order)


def choose_laplace(
    learner: LLAMA,
    tasks,
    steps: int,
    noise_stds: list[float],
    prior_precisions: list[float],
    n_samples: int,
    seed: int = 0,
) -> tuple[float, float, dict]:
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
            out = learner.sample_outputs(
                post.rescaled(sigma, tau), tasks.x_query, n_samples, torch.Generator().manual_seed(seed)
            )
            scores[(sigma, tau)] = float(predictive_log_likelihood(out.cpu(), tasks.y_query.cpu(), sigma).mean())
    sigma, tau = max(scores, key=scores.get)
    return sigma, tau, scores
