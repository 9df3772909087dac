"""PLATIPUS itself: the settings of its regression experiment, the learner (algorithms 1 and 2), its
baselines on the MAML core (MAML + noise), and meta-training. The paper's overview and the symbols are
in :mod:`metaedu.algorithms.platipus`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from metaedu.algorithms.maml_core import MAML, _key
from metaedu.checkpoints import resolve
from metaedu.nn import gaussian
from metaedu.nn.backbones import MLP
from metaedu.nn.functional import Params, batched_forward, parameter_dict, per_task
from metaedu.runtime import check_settings, seeded
from metaedu.training import History, train

# ----------------------------------------------------------------------------- settings


def _check_common(s) -> None:
    """The rules both PLATIPUS settings classes share (``runtime.check_settings`` names the field)."""
    check_settings(
        s,
        positive=(
            "inner_lr",
            "outer_lr",
            "inner_steps",
            "test_inner_steps",
            "meta_batch",
            "steps",
            "n_samples",
            "eval_tasks",
        ),
        non_negative=("kl_weight",),
    )


@dataclass
class LinesOrSinesSettings:
    """PLATIPUS on ambiguous 5-shot regression: lines or sinusoids, support points from a narrow x range.

    ``kl_weight`` and ``init_log_var`` were compared on meta-validation tasks (task seed 777, which the
    lecture never tests on; ``scripts/choose_platipus_settings.py regression`` reruns the comparison):
    after 5,000 meta-updates a KL weight of 0.01 gave samples of both shapes on more tasks than 0.03,
    and a weight of 0.1 with an initial variance of 0.1 on far fewer. With ``support_range`` (-1, 1)
    about 40% of the tasks are ambiguous. ``full()`` is a larger network trained longer, for a GPU;
    the paper gives no table for this experiment, only a figure.
    """

    k_shot: int = 5  # support points per task
    n_query: int = 10  # query points per task (over the whole x range)
    support_range: tuple[float, float] = (-1.0, 1.0)  # x range of the support points: narrow, so tasks are ambiguous
    noise_std: float = 0.3  # observation noise on y
    hidden: tuple[int, ...] = (100, 100)  # hidden layers of the MLP
    inner_lr: float = 0.01  # alpha
    outer_lr: float = 0.001  # Adam's step size on Theta
    inner_steps: int = 1  # gradient steps on D_tr while meta-training
    test_inner_steps: int = 1  # gradient steps on D_tr at meta-test time
    kl_weight: float = 0.01  # weight of KL(q || p) in the loss (the loss is a mean squared error per point)
    init_log_var: float = math.log(1e-2)  # initial log sigma2_theta and log v_q
    meta_batch: int = 10  # tasks per meta-update
    steps: int = 50000  # meta-updates
    n_samples: int = 10  # models drawn per task at meta-test time
    eval_tasks: int = 600  # test tasks behind each reported number
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    def __post_init__(self) -> None:
        _check_common(self)
        check_settings(self, positive=("k_shot", "n_query", "hidden"), non_negative=("noise_std",))
        low, high = self.support_range
        if not low < high:
            raise ValueError(
                f"LinesOrSinesSettings.support_range must be (low, high) with low < high, got {self.support_range}"
            )

    @classmethod
    def quick(cls) -> "LinesOrSinesSettings":
        return cls(hidden=(40, 40), steps=600, outer_lr=0.003, eval_tasks=200)

    @classmethod
    def full(cls) -> "LinesOrSinesSettings":
        return cls(checkpoint=True)


# ----------------------------------------------------------------------------- the learner


class PLATIPUS(nn.Module):
    """A network (its weights are mu_theta) with PLATIPUS's distributions over theta around it.

    Args:
        model: the network; its parameters are mu_theta.
        loss: ``"mse"`` or ``"cross_entropy"`` (MAML's task losses).
        inner_lr: alpha, MAML's inner step size.
        init_log_var: initial log sigma2_theta and log v_q (small: training starts close to MAML).
        gamma_init: initial gamma_p and gamma_q (defaults to alpha).

    Example::

        learner = PLATIPUS(MLP((1, 40, 40, 1)), "mse", inner_lr=0.01)
        loss, parts = learner.meta_loss(tasks, steps=1, kl_weight=1.0, generator=g)
        loss.backward()
        models = learner.sample_models(x_support, y_support, steps=1, n_samples=10, generator=g)
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str = "mse",
        inner_lr: float = 0.01,
        init_log_var: float = math.log(1e-4),
        gamma_init: float | None = None,
    ) -> None:
        super().__init__()
        self.maml = MAML(model, loss, inner_lr)
        gamma_init = inner_lr if gamma_init is None else gamma_init
        named = list(model.named_parameters())
        self.names = [n for n, _ in named]

        def table(value: float) -> nn.ParameterDict:
            return nn.ParameterDict({_key(n): nn.Parameter(torch.full_like(p, value)) for n, p in named})

        self.log_sigma2 = table(init_log_var)  # prior variance sigma2_theta
        self.log_v_q = table(init_log_var)  # variance of q
        self.gamma_p = table(gamma_init)  # step size of the prior's gradient step on D_tr
        self.gamma_q = table(gamma_init)  # step size of q's gradient step on D_test

    # --- 1. gradients at mu_theta, one per task -------------------------------------------

    def mu(self) -> Params:
        """mu_theta: the network's parameters by name (shared by all tasks)."""
        return parameter_dict(self.maml.model)

    def task_gradients(self, x: torch.Tensor, y: torch.Tensor, create_graph: bool) -> Params:
        """grad_mu L(mu_theta, D_i) for every task i: ``{name: [tasks, *shape]}``."""
        fast = per_task(self.mu(), x.shape[0])
        if not all(p.requires_grad for p in fast.values()):
            fast = {n: p.detach().requires_grad_() for n, p in fast.items()}
        loss, _ = self.maml.task_losses(fast, x, y)  # [tasks]
        grads = torch.autograd.grad(loss.sum(), list(fast.values()), create_graph=create_graph)
        return dict(zip(fast, grads))

    def _step_from_mu(self, gamma: nn.ParameterDict, grads: Params) -> Params:
        mu = self.mu()
        return {n: mu[n] - gamma[_key(n)] * g for n, g in grads.items()}  # [tasks, *shape]

    # --- 2. the prior p(theta | D_tr) and the posterior q(theta | D_test) ---------------------

    def prior(self, x_support: torch.Tensor, y_support: torch.Tensor, create_graph: bool = True):
        """Means ``{name: [tasks, *shape]}`` and log variances ``{name: [*shape]}`` of p(theta | D_tr)."""
        mean = self._step_from_mu(self.gamma_p, self.task_gradients(x_support, y_support, create_graph))
        return mean, {n: self.log_sigma2[_key(n)] for n in self.names}

    def posterior(self, x_query: torch.Tensor, y_query: torch.Tensor, create_graph: bool = True):
        """Means and log variances of q(theta | D_test) (meta-training only: it sees the answers)."""
        mean = self._step_from_mu(self.gamma_q, self.task_gradients(x_query, y_query, create_graph))
        return mean, {n: self.log_v_q[_key(n)] for n in self.names}

    # --- 3. sampling and adapting ------------------------------------------------------------

    @staticmethod
    def draw(mean: Params, log_var: Params, n_samples: int, generator: torch.Generator | None = None) -> Params:
        """Reparameterised draws: ``{name: [n_samples * tasks, *shape]}`` (sample-major)."""
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        out = {}
        for n, m in mean.items():
            theta = gaussian.sample(m, log_var[n], n_samples, generator)  # [S, tasks, *shape]
            out[n] = theta.flatten(0, 1)  # [S * tasks, *shape]
        return out

    def adapt_samples(
        self, theta: Params, x_support: torch.Tensor, y_support: torch.Tensor, steps: int, create_graph: bool
    ) -> Params:
        """phi = theta - alpha * grad L(theta, D_tr), ``steps`` times, for every sample of every task at once."""
        n_samples = next(iter(theta.values())).shape[0] // x_support.shape[0]
        xs = x_support.repeat(n_samples, *[1] * (x_support.dim() - 1))  # [S * tasks, k, ...]
        ys = y_support.repeat(n_samples, *[1] * (y_support.dim() - 1))
        return self.maml.adapt(xs, ys, steps, create_graph=create_graph, start=theta)

    def meta_loss(
        self, tasks, steps: int, kl_weight: float, generator: torch.Generator | None = None, n_samples: int = 1
    ) -> tuple[torch.Tensor, dict]:
        """Algorithm 1, lines 6-11, for a meta-batch: the scalar loss and its parts (detached, per-task means).

        ``tasks`` holds ``x_support``/``y_support`` (D_tr) and ``x_query``/``y_query`` (D_test).
        """
        xs, ys, xq, yq = tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query
        mean_q, log_v_q = self.posterior(xq, yq)  # lines 6-7
        theta = self.draw(mean_q, log_v_q, n_samples, generator)  # line 7: theta ~ q
        phi = self.adapt_samples(theta, xs, ys, steps, create_graph=True)  # lines 8-9
        mean_p, log_sigma2 = self.prior(xs, ys)  # line 10
        xq_rep = xq.repeat(n_samples, *[1] * (xq.dim() - 1))
        yq_rep = yq.repeat(n_samples, *[1] * (yq.dim() - 1))
        test_loss, _ = self.maml.task_losses(phi, xq_rep, yq_rep)  # [S * tasks]
        kl = sum(
            gaussian.kl(mean_q[n], log_v_q[n], mean_p[n], log_sigma2[n], event_dims=log_v_q[n].dim())
            for n in self.names
        )  # [tasks]
        loss = test_loss.mean() + kl_weight * kl.mean()  # line 11
        return loss, {"test_loss": test_loss.detach().mean(), "kl": kl.detach().mean()}

    def sample_models(
        self,
        x_support: torch.Tensor,
        y_support: torch.Tensor,
        steps: int,
        n_samples: int,
        generator: torch.Generator | None = None,
    ) -> Params:
        """Algorithm 2: ``n_samples`` adapted models per task, ``{name: [n_samples * tasks, *shape]}``, detached."""
        with torch.enable_grad():
            mean, log_var = self.prior(x_support, y_support, create_graph=False)
            theta = self.draw(
                {n: m.detach() for n, m in mean.items()},
                {n: v.detach() for n, v in log_var.items()},
                n_samples,
                generator,
            )
            phi = self.adapt_samples(theta, x_support, y_support, steps, create_graph=False)
        return {n: p.detach() for n, p in phi.items()}

    def predict_samples(
        self, x_support, y_support, x_query, steps: int, n_samples: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Outputs of the sampled models on the query inputs: ``[n_samples, tasks, n_query, out]``."""
        phi = self.sample_models(x_support, y_support, steps, n_samples, generator)
        return forward_samples(self.maml, phi, x_query)


def sample_with_kl(
    mu_q: torch.Tensor,
    log_var_q: torch.Tensor,
    mu_p: torch.Tensor,
    log_var_p: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One reparameterised draw theta ~ q = N(mu_q, exp(log_var_q)) and KL(q || p) summed over the last dimension."""
    return gaussian.sample(mu_q, log_var_q, generator=generator), gaussian.kl(mu_q, log_var_q, mu_p, log_var_p)


def forward_samples(maml: MAML, phi: Params, x: torch.Tensor) -> torch.Tensor:
    """Apply sample-major weights ``{name: [S * tasks, ...]}`` to ``x`` ``[tasks, n, ...]`` -> ``[S, tasks, n, out]``."""
    tasks = x.shape[0]
    n_samples = next(iter(phi.values())).shape[0] // tasks
    with torch.no_grad():
        out = batched_forward(maml.model, phi, x.repeat(n_samples, *[1] * (x.dim() - 1)))
    return out.view(n_samples, tasks, *out.shape[1:])


def noisy_maml_models(
    maml: MAML,
    x_support: torch.Tensor,
    y_support: torch.Tensor,
    steps: int,
    n_samples: int,
    noise_std: float,
    generator: torch.Generator | None = None,
) -> Params:
    """MAML + noise: theta_MAML + noise_std * eps, then MAML's adaptation; ``{name: [S * tasks, ...]}``, detached."""
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    tasks = x_support.shape[0]
    mean = per_task({n: p.detach() for n, p in parameter_dict(maml.model).items()}, tasks)
    log_var = {
        n: torch.full((), 2 * math.log(noise_std) if noise_std > 0 else 0.0, device=m.device) for n, m in mean.items()
    }
    with torch.enable_grad():
        theta = (
            PLATIPUS.draw(mean, log_var, n_samples, generator)
            if noise_std > 0
            else {n: m.repeat(n_samples, *[1] * (m.dim() - 1)) for n, m in mean.items()}
        )
        xs = x_support.repeat(n_samples, *[1] * (x_support.dim() - 1))
        ys = y_support.repeat(n_samples, *[1] * (y_support.dim() - 1))
        phi = maml.adapt(xs, ys, steps, create_graph=False, start=theta)
    return {n: p.detach() for n, p in phi.items()}


# ----------------------------------------------------------------------------- building and training


def regression_network(settings: LinesOrSinesSettings, seed: int = 0) -> nn.Module:
    """An MLP 1-hidden-1 with ReLUs (the same network for PLATIPUS and MAML), its weights drawn from ``seed``."""
    with seeded(seed):
        return MLP((1, *settings.hidden, 1))


def regression_learner(settings: LinesOrSinesSettings, device="cpu", seed: int = 0) -> PLATIPUS:
    """The MLP as mu_theta, with PLATIPUS's variances and step sizes."""
    return PLATIPUS(regression_network(settings, seed), "mse", settings.inner_lr, settings.init_log_var).to(device)


def meta_train(
    learner: PLATIPUS,
    sampler,
    settings,
    generator: torch.Generator,
    checkpoint=None,
    progress: bool = True,
    desc: str = "PLATIPUS",
    max_seconds: float | None = None,
) -> History:
    """Algorithm 1: Adam on Theta over meta-batches from ``sampler``; logs the loss, its test part and the KL.

    ``generator`` draws PLATIPUS's noise (the samples of theta); the sampler's own generator draws the tasks.
    ``checkpoint``: see :func:`metaedu.checkpoints.resolve` (``None``: as ``settings.checkpoint`` says).
    """
    data = getattr(sampler, "data", None)
    checkpoint = resolve(
        checkpoint,
        "platipus",
        settings,
        learner,
        data if data is not None else getattr(sampler, "inputs", None),
        sampler.generator,
        generator,
    )
    opt = torch.optim.Adam(learner.parameters(), lr=settings.outer_lr)

    def step(i: int) -> dict:
        tasks = sampler.sample(settings.meta_batch)
        loss, parts = learner.meta_loss(tasks, settings.inner_steps, settings.kl_weight, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), **parts}

    state = {"learner": learner, "opt": opt, "sampler": sampler.generator, "noise": generator}
    return train(
        step, settings.steps, state=state, checkpoint=checkpoint, progress=progress, desc=desc, max_seconds=max_seconds
    )
