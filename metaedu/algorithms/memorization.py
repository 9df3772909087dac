"""Meta-learning without memorization (Yin, Tucker, Zhou, Levine & Finn, ICLR 2020): meta-regularization.

On non-mutually-exclusive tasks the test input x* alone can tell which task it
belongs to, so a meta-learner can solve every meta-training task while ignoring
the task's training data D ("complete memorization": I(y^*; D | x*, theta) = 0)
and then fails on new tasks. The paper limits the information that reaches the
prediction by routes that avoid D. The network is split as in the paper's code:

    x  --encoder (theta)-->  z  --task learner (theta~, reads D)-->  y^

* the **encoder** x -> z is meta-learned but never adapted to a task; it is the
  only route by which x* reaches y^* without passing through what was learned from D;
* the **task learner** is MAML's adapted head (:class:`~metaedu.algorithms.maml.MAML`,
  the package's MAML core, unchanged) or a CNP (:class:`~metaedu.algorithms.cnp.CNP`).

Two meta-regularizers, both a setting of the same encoder (``regularizer``):

* **on activations**, MR-MAML (A) / MR-CNP (A) (paper eq. 4-5): z* is a stochastic
  bottleneck ``q(z* | x*, theta) = N(mu(x*), diag sigma^2(x*))``, sampled by
  reparameterisation, with ``beta * KL(q(z* | x*, theta) || N(0, I))`` (mean over the
  query points) added to the loss. The KL is an upper bound on I(x*; z* | D, theta).
* **on weights**, MR-MAML (W) / MR-CNP (W) (paper eq. 6-7): the encoder's weights are
  Gaussian, ``q(theta; theta_mu, theta_sigma)``, one draw per meta-batch by
  reparameterisation, with ``beta * KL(q(theta; theta_mu, theta_sigma) || r(theta))``,
  ``r = N(0, I)``, added once per meta-batch. The KL bounds the information about the
  meta-training tasks stored in theta, I(y*_1:N, D_1:N; theta | x*_1:N); the PAC-Bayes
  bound of the paper's theorem 1 gives the same objective with a particular beta
  (:func:`pac_bayes_beta`).

Symbols and names: beta = ``beta``; theta_mu = the encoder's ordinary parameters;
theta_sigma = ``exp(log_var / 2)`` (``GaussianWeights.log_var``); r(theta) = N(0,
``exp(prior_log_var)``); q(z* | x*, theta) = :class:`GaussianBottleneck`. At test
time the encoder uses its means (theta_mu, mu(x*)): the regularizer shapes
training, the prediction itself is deterministic.

Baselines of the paper, settings of the same code path: fine-tuning (``inner_steps=0``
in training: one network fit to all tasks jointly, then adapted by gradient steps at
test time) and weight decay (``weight_decay``: an L2 penalty on the encoder, which is
the mean part of the weight KL without its noise).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from metaedu.algorithms.cnp import CNP
from metaedu.algorithms.maml import MAML
from metaedu.nn import gaussian
from metaedu.nn.functional import Params

REGULARIZERS = ("none", "activations", "weights")


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


# ----------------------------------------------------------------------------- the two regularizers


class GaussianWeights(nn.Module):
    """q(theta; theta_mu, theta_sigma): an independent Gaussian over every weight of ``net``.

    ``net``'s own parameters are the means theta_mu; ``log_var`` holds log theta_sigma^2,
    one entry per weight, initialised to ``init_log_var`` (small: the network starts nearly
    deterministic). The prior r(theta) is N(0, exp(prior_log_var)) for every weight.
    """

    def __init__(self, net: nn.Module, init_log_var: float = -8.0, prior_log_var: float = 0.0) -> None:
        super().__init__()
        self.net, self.prior_log_var = net, float(prior_log_var)
        self.log_var = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.full_like(p, float(init_log_var))) for n, p in net.named_parameters()})

    def means(self) -> Params:
        return dict(self.net.named_parameters())

    def sample(self, generator: torch.Generator | None = None) -> Params:
        """One reparameterised draw theta = theta_mu + theta_sigma * eps of every weight."""
        return {n: gaussian.sample(p, self.log_var[_key(n)], generator=generator) for n, p in self.means().items()}

    def kl(self) -> torch.Tensor:
        """KL(q(theta) || r(theta)), summed over every weight (a scalar)."""
        return sum(gaussian.kl(p, self.log_var[_key(n)], 0.0, self.prior_log_var, event_dims=p.dim())
                   for n, p in self.means().items())

    def forward(self, x: torch.Tensor, weights: Params | None = None) -> torch.Tensor:
        return self.net(x) if weights is None else functional_call(self.net, weights, (x,))


class GaussianBottleneck(nn.Module):
    """q(z | x) = N(mu(h), diag sigma^2(h)) from features h by one linear layer; KL to N(0, I)."""

    def __init__(self, in_dim: int, z_dim: int) -> None:
        super().__init__()
        self.z_dim = int(z_dim)
        self.stats = nn.Linear(in_dim, 2 * self.z_dim)

    def forward(self, h: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        """``z`` (a draw, or the mean when ``sample`` is False) and ``KL(q(z|x) || N(0, I))`` per row."""
        mu, log_var = self.stats(h).split(self.z_dim, -1)
        z = gaussian.sample(mu, log_var, generator=generator) if sample else mu
        return z, gaussian.kl(mu, log_var)


class Encoder(nn.Module):
    """The meta-regularized route x -> z: a network ``net``, deterministic or carrying a regularizer.

    Args:
        net: maps a batch of inputs ``[N, ...]`` to features ``[N, feature_dim]``.
        feature_dim: size of ``net``'s output.
        regularizer: ``"none"``, ``"activations"`` (a :class:`GaussianBottleneck` to ``z_dim``) or
            ``"weights"`` (``net``'s weights become :class:`GaussianWeights`).
        z_dim: size of z for the bottleneck (``feature_dim`` otherwise).
        init_log_var, prior_log_var: of the Gaussian weights.
    """

    def __init__(self, net: nn.Module, feature_dim: int, regularizer: str = "none", z_dim: int | None = None,
                 init_log_var: float = -8.0, prior_log_var: float = 0.0) -> None:
        super().__init__()
        if regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {regularizer!r}")
        self.regularizer = regularizer
        self.body = GaussianWeights(net, init_log_var, prior_log_var) if regularizer == "weights" else net
        self.bottleneck = GaussianBottleneck(feature_dim, z_dim or feature_dim) if regularizer == "activations" else None
        self.z_dim = (z_dim or feature_dim) if self.bottleneck is not None else feature_dim

    def draw_weights(self, generator: torch.Generator | None = None) -> Params | None:
        """A draw of the Gaussian weights (one per meta-batch), or None when the weights are not stochastic."""
        return self.body.sample(generator) if self.regularizer == "weights" else None

    def forward(self, x: torch.Tensor, weights: Params | None = None, sample: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[tasks, n, ...]`` -> ``z`` ``[tasks, n, z_dim]`` and each point's bottleneck KL ``[tasks, n]``.

        ``weights`` (from :meth:`draw_weights`) replace the mean weights; ``sample`` draws the
        bottleneck's z (otherwise its mean). Without a bottleneck the KL is zero.
        """
        lead = x.shape[:2]
        flat = x.reshape(-1, *x.shape[2:])  # [tasks * n, ...]
        h = self.body(flat, weights) if self.regularizer == "weights" else self.body(flat)
        if self.bottleneck is None:
            return h.reshape(*lead, h.shape[-1]), h.new_zeros(lead)
        z, kl = self.bottleneck(h, sample, generator)
        return z.reshape(*lead, z.shape[-1]), kl.reshape(lead)

    def weight_kl(self) -> torch.Tensor:
        """KL(q(theta) || r(theta)) of the Gaussian weights (zero for the other regularizers)."""
        if self.regularizer == "weights":
            return self.body.kl()
        return next(self.parameters()).new_zeros(())

    def l2(self) -> torch.Tensor:
        """Half the squared norm of the encoder's (mean) weights, for the weight-decay baseline."""
        net = self.body.net if self.regularizer == "weights" else self.body
        return 0.5 * sum((p ** 2).sum() for p in net.parameters())


# ----------------------------------------------------------------------------- encoder + task learner


class MetaRegularized(nn.Module):
    """An encoder (possibly meta-regularized) in front of a task learner: MAML's adapted head or a CNP.

    Args:
        encoder: the x -> z route (:class:`Encoder`).
        learner: a :class:`~metaedu.algorithms.maml.MAML` over a head taking z, or a
            :class:`~metaedu.algorithms.cnp.CNP` with ``x_dim = encoder.z_dim``.
        beta: weight of the regularizer's KL (0: plain MAML / CNP).
        inner_steps, test_inner_steps: MAML's inner steps in training and at test time (unused by a CNP).
        weight_decay: coefficient of the L2 penalty on the encoder (the weight-decay baseline).
    """

    def __init__(self, encoder: Encoder, learner: MAML | CNP, beta: float = 0.0, inner_steps: int = 1,
                 test_inner_steps: int = 5, weight_decay: float = 0.0) -> None:
        super().__init__()
        if not isinstance(learner, (MAML, CNP)):
            raise ValueError(f"learner must be a MAML or a CNP, got {type(learner).__name__}")
        if beta < 0 or weight_decay < 0 or not math.isfinite(beta):
            raise ValueError(f"beta and weight_decay must be finite and >= 0, got {beta!r} and {weight_decay!r}")
        if beta > 0 and encoder.regularizer == "none":
            raise ValueError("beta > 0 needs a regularizer ('activations' or 'weights') on the encoder")
        if inner_steps < 0 or test_inner_steps < 0:
            raise ValueError(f"inner steps must be >= 0, got {inner_steps} and {test_inner_steps}")
        self.encoder, self.learner = encoder, learner
        self.beta, self.weight_decay = float(beta), float(weight_decay)
        self.inner_steps, self.test_inner_steps = int(inner_steps), int(test_inner_steps)

    @property
    def is_maml(self) -> bool:
        return isinstance(self.learner, MAML)

    def task_losses(self, x_support, y_support, x_query, y_query, weights: Params | None = None,
                    sample: bool = False, generator: torch.Generator | None = None, steps: int | None = None):
        """Each task's data loss ``[tasks]``, its mean bottleneck KL over the query points ``[tasks]``, and the outputs.

        MAML: query MSE / cross-entropy after ``steps`` inner steps on the support set; CNP: query
        negative log-likelihood given the support set.
        """
        z_support, _ = self.encoder(x_support, weights, sample, generator)
        z_query, kl_query = self.encoder(x_query, weights, sample, generator)  # kl_query [tasks, n_query]
        if self.is_maml:
            steps = self.inner_steps if steps is None else steps
            fast = self.learner.adapt(z_support, y_support, steps)
            losses, out = self.learner.task_losses(fast, z_query, y_query)
        else:
            losses = self.learner.nll(z_support, y_support, z_query, y_query)
            out = self.learner.predict(z_support, y_support, z_query)
        return losses, kl_query.mean(1), out

    def loss(self, tasks, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """The paper's objective on a meta-batch (eq. 5 or 7) and its parts, for one meta-update.

        ``mean_i [ L_i + beta * KL_i(z*) ] + beta * KL(theta) + weight_decay * |theta|^2 / 2``,
        with one draw of the Gaussian weights for the whole meta-batch.
        """
        weights = self.encoder.draw_weights(generator)
        losses, kl_z, out = self.task_losses(tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query,
                                             weights, sample=True, generator=generator)
        kl = kl_z.mean() + self.encoder.weight_kl()
        total = losses.mean() + self.beta * kl
        if self.weight_decay:
            total = total + self.weight_decay * self.encoder.l2()
        return total, {"loss": losses.mean().detach(), "kl": kl.detach(), "out": out}

    def predict(self, x_support, y_support, x_query, steps: int | None = None) -> torch.Tensor:
        """Query predictions (detached) with the encoder's means; MAML adapts ``steps`` (default: test) steps."""
        with torch.no_grad():
            z_support, _ = self.encoder(x_support)
            z_query, _ = self.encoder(x_query)
        if self.is_maml:
            return self.learner.predict(z_support, y_support, z_query,
                                        self.test_inner_steps if steps is None else steps)
        with torch.no_grad():
            return self.learner.predict(z_support, y_support, z_query)


def pac_bayes_beta(n_tasks: int, k_query: int, delta: float = 0.05) -> float:
    """The KL coefficient that a first-order expansion of theorem 1's bound gives MR-MAML (W).

    ``beta = (sqrt(1 / 2(K - 1)) + sqrt(1 / 2(n - 1))) / (2 sqrt(log(n (K + 1) / delta)))``,
    with n meta-training tasks and K validation points per task; it holds with probability 1 - delta.
    """
    if n_tasks < 2 or k_query < 2:
        raise ValueError(f"the bound needs n_tasks >= 2 and k_query >= 2, got {n_tasks} and {k_query}")
    if not 0 < delta <= 1:
        raise ValueError(f"delta must lie in (0, 1], got {delta!r}")
    slack = math.sqrt(1 / (2 * (k_query - 1))) + math.sqrt(1 / (2 * (n_tasks - 1)))
    return slack / (2 * math.sqrt(math.log(n_tasks * (k_query + 1) / delta)))
