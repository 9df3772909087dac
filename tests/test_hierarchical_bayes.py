"""Lecture 07 against independent references: MAML as hierarchical Bayes, K-FAC, LLAMA.

References: plain gradient-descent iterations against the closed-form MAP estimate under the
implicit prior Q (and the slides' formula for Q where it applies); least squares; the exact
evidence of a linear-Gaussian model and ``torch.distributions``; exact Gauss-Newton blocks
and exact Hessians from ``torch.func``; dense Kronecker products and ``slogdet``; a slow
per-task, per-example loop; finite differences of the LLAMA meta-objective.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal
from torch.func import functional_call, hessian, jacrev

from metaedu import evaluation
from metaedu.algorithms import hierarchical_bayes as hb
from metaedu.algorithms import llama
from metaedu.algorithms.maml import MAML
from metaedu.nn import kfac
from metaedu.nn.backbones import MLP, Conv4
from metaedu.nn.functional import batched_forward, per_task
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.tasks.regression import RegressionTasks, SinusoidTasks

D = torch.float64
TOL = dict(rtol=0.0, atol=1e-10)
# torch.func.hessian registers torch's own jvp decompositions through torch.jit.script, which warns (not our code)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


# ----------------------------------------------------------------------------- early stopping as a prior


def linear_problem(n=8, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=D)
    return X, torch.randn(n, generator=g, dtype=D), torch.randn(d, generator=g, dtype=D)


def step_for(X, largest):
    """A step size alpha with alpha * lambda_max(X^T X) = ``largest``."""
    return largest / float(torch.linalg.eigvalsh(X.T @ X).max())


def random_spd(d, seed, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    O, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D))
    return O @ torch.diag(torch.linspace(1.0, spread, d, dtype=D)) @ O.T


@pytest.mark.parametrize("steps, largest", [(1, 0.3), (1, 0.9), (2, 0.9), (5, 0.3), (5, 0.6), (20, 0.3)])
def test_gradient_descent_is_the_map_estimate_under_q(steps, largest):
    X, y, theta = linear_problem()
    alpha = step_for(X, largest)
    phi = hb.gradient_descent(X, y, theta, steps, inner_lr=alpha)
    Q = hb.implicit_prior_covariance(X, steps, inner_lr=alpha)
    torch.testing.assert_close(hb.map_estimate(X, y, theta, Q), phi, **TOL)
    torch.testing.assert_close(
        hb.map_estimate(X, y, theta, precision=hb.implicit_prior_precision(X, steps, alpha)), phi, **TOL
    )
    # the slides' formula, written out literally: Q = O Lambda^-1 ((I - alpha Lambda)^-k - I) O^T
    lam, O = torch.linalg.eigh(X.T @ X)
    slides = O @ torch.diag(((1 - alpha * lam) ** -steps - 1) / lam) @ O.T
    torch.testing.assert_close(Q, slides, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("steps", [20, 60])
def test_after_many_large_steps_the_precision_still_gives_the_map(steps):
    """(1 - 0.9)^-60 = 1e60: a dense Q cannot keep its small eigenvalues, its inverse can."""
    X, y, theta = linear_problem(seed=10)
    alpha = step_for(X, 0.9)
    precision = hb.implicit_prior_precision(X, steps, inner_lr=alpha)
    torch.testing.assert_close(
        hb.map_estimate(X, y, theta, precision=precision),
        hb.gradient_descent(X, y, theta, steps, inner_lr=alpha),
        **TOL,
    )
    torch.testing.assert_close(precision, precision.T, **TOL)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_a_preconditioner_that_does_not_commute_still_gives_the_map(steps):
    X, y, theta = linear_problem(seed=1)
    B = random_spd(4, seed=2)
    root = torch.linalg.cholesky(B)  # any square root: the spectrum of B^1/2 H B^1/2 is that of L^T H L
    B = B * 0.8 / float(torch.linalg.eigvalsh(root.T @ X.T @ X @ root).max())
    H = X.T @ X
    assert (B @ H - H @ B).abs().max() > 1e-3  # B and H do not share eigenvectors
    phi = hb.gradient_descent(X, y, theta, steps, preconditioner=B)
    Q = hb.implicit_prior_covariance(X, steps, preconditioner=B)
    if steps < 10:  # (1 - 0.8)^-10 ~ 1e7: beyond that the dense Q loses digits, its inverse does not
        torch.testing.assert_close(hb.map_estimate(X, y, theta, Q), phi, **TOL)
    precision = hb.implicit_prior_precision(X, steps, preconditioner=B)
    torch.testing.assert_close(hb.map_estimate(X, y, theta, precision=precision), phi, **TOL)
    assert float(torch.linalg.eigvalsh(Q).min()) > 0


def test_a_commuting_preconditioner_matches_the_slides_formula():
    X, y, theta = linear_problem(seed=3)
    lam, O = torch.linalg.eigh(X.T @ X)
    b = 0.8 / lam * torch.linspace(0.2, 1.0, 4, dtype=D)  # b_i lambda_i < 1, a different step per direction
    B = O @ torch.diag(b) @ O.T
    steps = 4
    slides = O @ torch.diag(((1 - b * lam) ** -steps - 1) / lam) @ O.T  # O Lambda^-1 ((I - B Lambda)^-k - I) O^T
    Q = hb.implicit_prior_covariance(X, steps, preconditioner=B)
    torch.testing.assert_close(Q, slides, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        hb.map_estimate(X, y, theta, Q), hb.gradient_descent(X, y, theta, steps, preconditioner=B), **TOL
    )


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_q_is_symmetric_positive_definite_when_steps_undershoot(steps):
    X, _, _ = linear_problem(seed=4)
    Q = hb.implicit_prior_covariance(X, steps, inner_lr=step_for(X, 0.95))
    torch.testing.assert_close(Q, Q.T, **TOL)
    assert float(torch.linalg.eigvalsh(Q).min()) > 0


def test_overshooting_odd_steps_give_no_gaussian_prior_yet_the_algebra_holds():
    """alpha lambda_max in (1, 2): gradient descent still converges, but Q has a negative eigenvalue for odd k."""
    X, y, theta = linear_problem(seed=5)
    alpha = step_for(X, 1.5)
    for steps, negative in ((1, True), (3, True), (2, False)):
        Q = hb.implicit_prior_covariance(X, steps, inner_lr=alpha)
        assert (float(torch.linalg.eigvalsh(Q).min()) < 0) == negative
        torch.testing.assert_close(
            hb.map_estimate(X, y, theta, Q), hb.gradient_descent(X, y, theta, steps, inner_lr=alpha), rtol=0, atol=1e-9
        )


def test_zero_steps_keep_theta_and_many_steps_reach_least_squares():
    X, y, theta = linear_problem(seed=6)
    alpha = step_for(X, 0.5)
    Q0 = hb.implicit_prior_covariance(X, 0, inner_lr=alpha)
    assert float(Q0.abs().max()) == 0.0
    torch.testing.assert_close(hb.map_estimate(X, y, theta, Q0), theta, rtol=0, atol=0)
    least_squares = torch.linalg.lstsq(X, y.unsqueeze(-1)).solution.squeeze(-1)
    errors = [
        float(
            (
                hb.map_estimate(X, y, theta, precision=hb.implicit_prior_precision(X, k, inner_lr=alpha))
                - least_squares
            ).norm()
        )
        for k in (1, 10, 100, 1000)
    ]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-10 and errors[0] > 1e-2


def test_fewer_points_than_parameters_and_a_batch_of_problems():
    """Rank-deficient X^T X: the unseen directions keep the finite prior variance k alpha."""
    g = torch.Generator().manual_seed(7)
    X = torch.randn(5, 2, 4, generator=g, dtype=D)  # 5 problems, N = 2 < D = 4
    y, theta = torch.randn(5, 2, generator=g, dtype=D), torch.randn(5, 4, generator=g, dtype=D)
    alpha, steps = 0.05, 6
    Q = hb.implicit_prior_covariance(X, steps, inner_lr=alpha)
    torch.testing.assert_close(
        hb.map_estimate(X, y, theta, Q), hb.gradient_descent(X, y, theta, steps, inner_lr=alpha), **TOL
    )
    null = torch.linalg.svd(X, full_matrices=True).Vh[:, 2:]  # [5, 2, 4], directions X cannot see
    variance = torch.einsum("bkd,bde,bke->bk", null, Q, null)
    torch.testing.assert_close(variance, torch.full_like(variance, steps * alpha), rtol=1e-10, atol=0)


def test_bad_linear_inputs_are_named():
    X, y, theta = linear_problem()
    with pytest.raises(ValueError, match="exactly one of inner_lr"):
        hb.implicit_prior_covariance(X, 1)
    with pytest.raises(ValueError, match="exactly one of inner_lr"):
        hb.gradient_descent(X, y, theta, 1, inner_lr=0.1, preconditioner=torch.eye(4, dtype=D))
    with pytest.raises(ValueError, match="positive definite"):
        hb.implicit_prior_covariance(X, 1, preconditioner=-torch.eye(4, dtype=D))
    with pytest.raises(ValueError, match="symmetric"):
        hb.implicit_prior_covariance(
            X, 1, preconditioner=torch.eye(4, dtype=D) + torch.triu(torch.ones(4, 4, dtype=D), 1)
        )
    with pytest.raises(ValueError, match="steps must be >= 0"):
        hb.implicit_prior_covariance(X, -1, inner_lr=0.1)
    with pytest.raises(ValueError, match="point mass"):
        hb.implicit_prior_precision(X, 0, inner_lr=0.1)
    with pytest.raises(ValueError, match="exactly one of Q"):
        hb.map_estimate(X, y, theta)
    with pytest.raises(ValueError, match="lands exactly on the minimum"):
        lam, O = torch.linalg.eigh(X.T @ X)
        hb.implicit_prior_covariance(X, 2, preconditioner=O @ torch.diag(1 / lam) @ O.T)
    with pytest.raises(ValueError, match="y must be"):
        hb.gradient_descent(X, y[:-1], theta, 1, inner_lr=0.1)


# ----------------------------------------------------------------------------- Laplace and the likelihood view


def test_laplace_is_exact_for_a_gaussian_integrand():
    X, y, theta = linear_problem(n=6, d=3, seed=8)
    Q = hb.implicit_prior_covariance(X, 3, inner_lr=step_for(X, 0.7))
    mode = hb.map_estimate(X, y, theta, Q)
    log_joint = Normal(X @ mode, 1.0).log_prob(y).sum() + MultivariateNormal(theta, Q).log_prob(mode)
    H = X.T @ X + torch.linalg.inv(Q)  # curvature of the negative log joint
    laplace = hb.laplace_log_evidence(log_joint, torch.logdet(H), dim=3)
    exact = MultivariateNormal(X @ theta, torch.eye(6, dtype=D) + X @ Q @ X.T).log_prob(y)
    torch.testing.assert_close(laplace, exact, **TOL)
    torch.testing.assert_close(hb.linear_log_marginal(X, y, theta, Q), exact, **TOL)
    with pytest.raises(ValueError, match="dim"):
        hb.laplace_log_evidence(log_joint, torch.logdet(H), dim=0)


def test_maml_loss_is_a_gaussian_negative_log_likelihood():
    g = torch.Generator().manual_seed(9)
    out, y = torch.randn(3, 7, 1, generator=g, dtype=D), torch.randn(3, 7, 1, generator=g, dtype=D)
    sigma = 0.4
    ours = hb.gaussian_nll(out, y, sigma)
    torch.testing.assert_close(ours, -Normal(out, sigma).log_prob(y).mean((1, 2)))
    mse = ((out - y) ** 2).mean((1, 2))
    torch.testing.assert_close(ours, mse / (2 * sigma**2) + 0.5 * math.log(2 * math.pi * sigma**2))
    learner = MAML(MLP((1, 5, 1), activation=nn.Tanh).double(), "mse", inner_lr=0.05)
    t = SinusoidTasks(4, 5, seed=0).sample(3)
    t = RegressionTasks(*(v.to(D) for v in (t.x_support, t.y_support, t.x_query, t.y_query)))
    mse_after, _ = learner.query_losses(t.x_support, t.y_support, t.x_query, t.y_query, 2)
    torch.testing.assert_close(
        hb.ml_point(learner, t.x_support, t.y_support, t.x_query, t.y_query, 2, sigma),
        mse_after / (2 * sigma**2) + 0.5 * math.log(2 * math.pi * sigma**2),
    )
    with pytest.raises(ValueError, match="loss must be one of"):
        hb.nll(out, y, "hinge")


# ----------------------------------------------------------------------------- K-FAC against exact curvature


def tanh_mlp(sizes=(2, 3, 2), seed=0):
    torch.manual_seed(seed)
    return MLP(sizes, activation=nn.Tanh).double()


def factors_of(model, x, loss, noise_std=1.0):
    """K-FAC factors of every layer for one task (x: [n, in])."""
    params = per_task({n: p.detach() for n, p in model.named_parameters()}, 1)
    params = {n: p.clone().requires_grad_() for n, p in params.items()}
    taps = []
    out = batched_forward(model, params, x.unsqueeze(0), taps=taps)
    return kfac.kronecker_factors(out, kfac.output_hessian_factor(out, loss, noise_std), taps)


def exact_ggn_block(model, x, layer, loss, noise_std=1.0):
    """Sum over examples of J^T H_out J for one layer's (weight, bias), reordered to vec([W | b]) column-major."""
    theta = {n: p.detach() for n, p in model.named_parameters()}
    W, b = theta[f"{layer}.weight"], theta[f"{layer}.bias"]
    out_dim, in_dim = W.shape
    total = torch.zeros(W.numel() + b.numel(), W.numel() + b.numel(), dtype=D)
    for xn in x:  # one example at a time

        def f(w, bias):
            return functional_call(model, {**theta, f"{layer}.weight": w, f"{layer}.bias": bias}, (xn,))

        jw, jb = jacrev(f, argnums=(0, 1))(W, b)  # [d, out, in], [d, out]
        J = torch.cat([jw.flatten(1), jb], 1)  # [d, P], parameters in (W row-major, b) order
        fx = f(W, b)
        if loss == "mse":
            H_out = torch.eye(fx.numel(), dtype=D) / noise_std**2
        else:
            p = torch.softmax(fx, -1)
            H_out = torch.diag(p) - torch.outer(p, p)
        total += J.T @ H_out @ J
    order = [o * in_dim + i if i < in_dim else out_dim * in_dim + o for i in range(in_dim + 1) for o in range(out_dim)]
    return total[order][:, order]


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_kfac_block_is_exact_for_one_example(loss):
    model = tanh_mlp()
    x = torch.randn(1, 2, dtype=D)
    for f in factors_of(model, x, loss, noise_std=0.5):
        torch.testing.assert_close(kfac.dense(f)[0], exact_ggn_block(model, x, f.layer, loss, 0.5))


def test_kfac_log_det_is_exact_for_a_linear_model():
    """One linear layer with one output: the NLL's Hessian is [x, 1][x, 1]^T / sigma^2 summed, exactly N A kron G."""
    torch.manual_seed(1)
    model = MLP((3, 1)).double()
    x, y, sigma, tau = torch.randn(9, 3, dtype=D), torch.randn(9, 1, dtype=D), 0.7, 0.3
    theta = {n: p.detach() for n, p in model.named_parameters()}

    def nll(flat):
        w, b = flat[:3].view(1, 3), flat[3:]
        return -Normal(functional_call(model, {"net.0.weight": w, "net.0.bias": b}, (x,)), sigma).log_prob(y).sum()

    flat = torch.cat([theta["net.0.weight"].flatten(), theta["net.0.bias"]])
    exact = torch.logdet(hessian(nll)(flat) + tau * torch.eye(4, dtype=D))
    ours = kfac.log_det(factors_of(model, x, "mse", sigma), tau)
    torch.testing.assert_close(ours[0], exact, **TOL)


def test_kfac_log_det_against_the_exact_hessian_of_a_tiny_network():
    """A tanh network fit to its data: the exact Hessian of the NLL (torch.func.hessian), its Gauss-Newton part,
    the layer-block-diagonal Gauss-Newton matrix, K-FAC and the diagonal, all with + tau I.

    At a fit the Hessian is its Gauss-Newton part; dropping the blocks between layers can only raise
    the log-determinant (Fischer's inequality); K-FAC lands far closer to the exact value than the
    diagonal approximation does (on this network it overestimates log det by about 80%).
    """
    torch.manual_seed(2)
    model = MLP((1, 6, 1), activation=nn.Tanh).double()
    x = torch.linspace(-2, 2, 12, dtype=D).unsqueeze(-1)
    y = torch.sin(1.3 * x)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    sigma, tau = 0.1, 1.0
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for _, p in model.named_parameters()])

    def f(v):
        return functional_call(model, {n: c.view(s) for n, c, s in zip(names, torch.split(v, sizes), shapes)}, (x,))

    H = hessian(lambda v: -Normal(f(v), sigma).log_prob(y).sum())(flat)
    J = jacrev(f)(flat).reshape(len(x), -1)
    ggn = J.T @ J / sigma**2
    eye = torch.eye(len(flat), dtype=D)
    exact = float(torch.logdet(H + tau * eye))
    assert abs(float(torch.logdet(ggn + tau * eye)) - exact) < 0.01 * abs(exact)
    first = sizes[0] + sizes[1]  # the first layer's weight and bias
    block = float(
        torch.logdet(ggn[:first, :first] + tau * eye[:first, :first])
        + torch.logdet(ggn[first:, first:] + tau * eye[first:, first:])
    )
    assert block >= exact
    ours = float(kfac.log_det(factors_of(model, x, "mse", sigma), tau)[0])
    diagonal = float(torch.log(torch.diagonal(ggn) + tau).sum())
    assert abs(ours - exact) < 0.5 * abs(diagonal - exact), (ours, exact, diagonal)


@pytest.mark.parametrize("n", [2, 30])
def test_log_det_and_samples_follow_the_dense_kronecker_matrix(n):
    """Eigenvalue route (with the small Gram matrices when n < width) against slogdet; samples' covariance."""
    model = tanh_mlp((3, 5, 2), seed=3)
    x = torch.randn(n, 3, dtype=D)
    tau = 0.5
    factors = factors_of(model, x, "cross_entropy")
    total = sum(torch.logdet(kfac.dense(f, tau)[0]) for f in factors)
    torch.testing.assert_close(kfac.log_det(factors, tau)[0], total, rtol=1e-10, atol=1e-10)
    f = factors[1]  # the output layer: [2, 6], 12 parameters
    draws = kfac.sample(f, tau, 100_000, torch.Generator().manual_seed(0))  # [S, 1, out, in + 1]
    vec = draws[:, 0].transpose(-2, -1).reshape(100_000, -1)  # column-major vec of [W | b]
    cov = vec.T @ vec / vec.shape[0]
    target = torch.linalg.inv(kfac.dense(f, tau)[0])
    assert float((cov - target).abs().max()) < 0.03 * float(target.detach().abs().max())


def test_output_hessian_factors():
    g = torch.Generator().manual_seed(4)
    out = torch.randn(2, 3, 4, generator=g, dtype=D)
    L = kfac.output_hessian_factor(out, "cross_entropy")
    ce = lambda logits, label: torch.nn.functional.cross_entropy(logits[None], label[None])  # noqa: E731
    exact = hessian(ce)(out[1, 2], torch.tensor(1))
    torch.testing.assert_close(L[1, 2] @ L[1, 2].T, exact)
    L = kfac.output_hessian_factor(out, "mse", noise_std=0.5)
    torch.testing.assert_close(L[0, 0] @ L[0, 0].T, torch.eye(4, dtype=D) * 4)
    with pytest.raises(ValueError, match="loss must be one of"):
        kfac.output_hessian_factor(out, "hinge")
    with pytest.raises(ValueError, match="tau must be positive"):
        kfac.log_det([], 0.0)


def test_taps_record_the_fully_connected_layers():
    model = tanh_mlp((2, 3, 2))
    params = per_task(dict(model.named_parameters()), 2)
    x = torch.randn(2, 4, 2, dtype=D)
    taps = []
    out = batched_forward(model, params, x, taps=taps)
    assert [t.layer for t in taps] == ["net.0", "net.2"]
    torch.testing.assert_close(taps[0].outputs, x @ model.net[0].weight.T + model.net[0].bias)
    assert taps[1].outputs is out
    conv = Conv4(1, 4, 3, track_running_stats=False).double()
    taps = []
    batched_forward(conv, per_task(dict(conv.named_parameters()), 1), torch.rand(1, 2, 1, 28, 28, dtype=D), taps=taps)
    assert [t.layer for t in taps] == ["head"]
    with pytest.raises(ValueError, match="taps are recorded"):
        batched_forward(model, params, x, route="vmap", taps=[])


# ----------------------------------------------------------------------------- LLAMA


def sinusoid_tasks(tasks=3, k=5, q=4, seed=0) -> RegressionTasks:
    t = SinusoidTasks(k, q, seed=seed).sample(tasks)
    return RegressionTasks(t.x_support.to(D), t.y_support.to(D), t.x_query.to(D), t.y_query.to(D), t.params)


def tiny_llama(eta=0.05, **kw):
    torch.manual_seed(0)
    return llama.LLAMA(
        MLP((1, 4, 3, 1), activation=nn.Tanh).double(),
        "mse",
        inner_lr=0.05,
        eta=eta,
        prior_precision=2.0,
        noise_std=0.5,
        **kw,
    )


def slow_llama_loss(learner, tasks, steps):
    """(5) task by task, example by example: per-example Jacobians, dense Kronecker blocks, logdet."""
    theta = dict(learner.model.named_parameters())
    total = 0.0
    for j in range(tasks.x_support.shape[0]):
        fast = {n: p.clone() for n, p in theta.items()}
        for _ in range(steps):
            loss = ((functional_call(learner.model, fast, (tasks.x_support[j],)) - tasks.y_support[j]) ** 2).mean()
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: p - learner.inner_lr * g for (n, p), g in zip(fast.items(), grads)}
        out = functional_call(learner.model, fast, (tasks.x_query[j],))
        query = -Normal(out, learner.noise_std).log_prob(tasks.y_query[j]).mean()
        log_det = 0.0
        index = [i for i, m in enumerate(learner.model.net) if isinstance(m, nn.Linear)]
        n = tasks.x_support.shape[1]
        for i in index:
            A, G = 0.0, 0.0
            for x in tasks.x_support[j]:
                h = x
                for k, m in enumerate(learner.model.net[:i]):  # the layer's input
                    h = (
                        functional_call(m, {"weight": fast[f"net.{k}.weight"], "bias": fast[f"net.{k}.bias"]}, (h,))
                        if isinstance(m, nn.Linear)
                        else m(h)
                    )
                a = torch.cat([h, torch.ones(1, dtype=D)])
                s = fast[f"net.{i}.bias"] + fast[f"net.{i}.weight"] @ h

                def rest(s_, i=i):
                    z = s_
                    for k in range(i + 1, len(learner.model.net)):
                        m = learner.model.net[k]
                        z = fast[f"net.{k}.bias"] + fast[f"net.{k}.weight"] @ z if isinstance(m, nn.Linear) else m(z)
                    return z

                J = torch.autograd.functional.jacobian(rest, s, create_graph=True)  # [1, out_i]
                g = J[0] / learner.noise_std
                A = A + torch.outer(a, a) / n
                G = G + torch.outer(g, g) / n
            H = n * torch.kron(A, G) + learner.prior_precision * torch.eye(A.shape[0] * G.shape[0], dtype=D)
            log_det = log_det + torch.logdet(H)
        total = total + query + learner.eta * log_det
    return total / tasks.x_support.shape[0]


def test_llama_objective_equals_a_slow_per_task_per_example_loop():
    learner = tiny_llama()
    tasks = sinusoid_tasks()
    for steps in (1, 2):
        batched, _ = learner.meta_loss(tasks, steps)
        slow = slow_llama_loss(learner, tasks, steps)
        torch.testing.assert_close(batched, slow)
        gb = torch.autograd.grad(batched, list(learner.parameters()))
        gs = torch.autograd.grad(slow, list(learner.parameters()))
        for a, b in zip(gb, gs):
            torch.testing.assert_close(a, b)


def test_llama_meta_gradient_equals_finite_differences():
    learner = tiny_llama(eta=0.2)
    tasks = sinusoid_tasks(tasks=2)
    loss, _ = learner.meta_loss(tasks, 1)
    grads = torch.autograd.grad(loss, list(learner.parameters()))
    for p, g in zip(learner.parameters(), grads):
        fd = torch.zeros_like(p)
        for j in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[j] += 1e-6
            up = float(learner.meta_loss(tasks, 1)[0].detach())
            with torch.no_grad():
                p.view(-1)[j] -= 2e-6
            down = float(learner.meta_loss(tasks, 1)[0].detach())
            with torch.no_grad():
                p.view(-1)[j] += 1e-6
            fd.view(-1)[j] = (up - down) / 2e-6
        torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-7)


def test_eta_zero_is_maml_on_the_likelihood_and_the_training_loop_runs():
    learner = tiny_llama(eta=0.0)
    tasks = sinusoid_tasks()
    loss, _ = learner.meta_loss(tasks, 1)
    plain = MAML(learner.model, "mse", inner_lr=0.05)
    mse, _ = plain.meta_loss(tasks, 1)
    torch.testing.assert_close(loss, mse / (2 * 0.25) + 0.5 * math.log(2 * math.pi * 0.25))
    settings = llama.LLAMASinusoidSettings(steps=3, meta_batch=2, hidden=(4,), eta=0.01)
    learner = llama.sinusoid_learner(settings)
    from metaedu.algorithms.maml import meta_train

    history = meta_train(learner, SinusoidTasks(5, 5, seed=0), settings, progress=False)
    assert history.steps_done == 3 and all(math.isfinite(v) for v in history["loss"])


def test_posterior_samples_centre_on_the_adapted_weights():
    learner = tiny_llama()
    tasks = sinusoid_tasks(tasks=2)
    post = learner.posterior(tasks.x_support, tasks.y_support, 1)
    fast = learner.adapt(tasks.x_support, tasks.y_support, 1, create_graph=False)
    for n in fast:
        torch.testing.assert_close(post.fast[n], fast[n].detach())
    draws = learner.sample_parameters(post, 4000, torch.Generator().manual_seed(1))
    w = draws["net.4.weight"].view(4000, 2, 1, 3)
    torch.testing.assert_close(w.mean(0), post.fast["net.4.weight"], rtol=0, atol=0.05)
    samples = learner.predictive_samples(
        tasks.x_support, tasks.y_support, tasks.x_query, 1, 7, torch.Generator().manual_seed(2)
    )
    assert samples.shape == (7, 2, 4, 1)


def test_a_rescaled_posterior_equals_one_computed_at_that_noise_level():
    learner = tiny_llama()
    tasks = sinusoid_tasks()
    direct = learner.posterior(tasks.x_support, tasks.y_support, 2, noise_std=0.2, prior_precision=7.0)
    rescaled = learner.posterior(tasks.x_support, tasks.y_support, 2).rescaled(0.2, 7.0)
    assert rescaled.prior_precision == 7.0 and rescaled.noise_std == 0.2
    for a, b in zip(direct.factors, rescaled.factors):
        torch.testing.assert_close(kfac.dense(a, 7.0), kfac.dense(b, 7.0))
    plain = MAML(learner.model, "mse", inner_lr=0.05)
    view = llama.from_maml(plain, prior_precision=7.0, noise_std=0.2)
    assert view.model is plain.model and view.eta == 0.0
    sigma, tau, scores = llama.choose_laplace(view, tasks, 1, [0.2, 5.0], [1.0, 7.0], n_samples=5)
    assert len(scores) == 4 and scores[(sigma, tau)] == max(scores.values())
    with pytest.raises(ValueError, match="Meta-SGD or ANIL"):
        llama.from_maml(MAML(MLP((1, 3, 1)), "mse", anil=True))


def test_conv4_llama_uses_the_head_curvature(glyphs):
    torch.manual_seed(0)
    learner = llama.LLAMA(
        Conv4(1, 4, 3, track_running_stats=False).double(), "cross_entropy", inner_lr=0.4, eta=0.1, prior_precision=1.0
    )
    eps = EpisodeSampler(glyphs.split("background"), 3, 1, 2, seed=0).sample(2)
    eps.x_support, eps.x_query = eps.x_support.to(D), eps.x_query.to(D)
    fast = learner.adapt(eps.x_support, eps.y_support, 1)
    factors = learner.curvature(fast, eps.x_support)
    assert [f.layer for f in factors] == ["head"]
    total = sum(torch.logdet(kfac.dense(f, 1.0)) for f in factors)
    torch.testing.assert_close(kfac.log_det(factors, 1.0), total, rtol=1e-10, atol=1e-10)
    loss, out = learner.meta_gradient(eps, 1)
    assert out.shape == (2, 6, 3) and all(p.grad is not None for p in learner.parameters())


# ----------------------------------------------------------------------------- scoring predictive distributions


def test_predictive_scores_against_torch_distributions():
    g = torch.Generator().manual_seed(5)
    samples = torch.randn(6, 3, 8, 1, generator=g, dtype=D)
    y = torch.randn(3, 8, 1, generator=g, dtype=D)
    sigma = 0.6
    density = Normal(samples, sigma).log_prob(y.unsqueeze(0)).exp().mean(0)  # the mixture, [3, 8, 1]
    torch.testing.assert_close(evaluation.predictive_log_likelihood(samples, y, sigma), density.log().mean((1, 2)))
    cdf = Normal(samples, sigma).cdf(y.unsqueeze(0)).mean(0).squeeze(-1)
    torch.testing.assert_close(evaluation.pit(samples, y, sigma), cdf)


def test_a_calibrated_predictive_covers_at_its_nominal_rate():
    g = torch.Generator().manual_seed(6)
    f = torch.randn(1, 400, 50, 1, generator=g, dtype=D)
    y = f[0] + 0.3 * torch.randn(400, 50, 1, generator=g, dtype=D)  # data drawn from the predictive itself
    u = evaluation.pit(f, y, 0.3)
    for level in (0.5, 0.9):
        assert abs(float(evaluation.coverage(u, level).mean()) - 100 * level) < 1.5
    wrong = evaluation.coverage(evaluation.pit(f, y, 0.1), 0.9).mean()  # too narrow a band undercovers
    assert float(wrong) < 50
    with pytest.raises(ValueError, match="level"):
        evaluation.coverage(u, 1.0)
    best, scores = evaluation.choose_noise_std(lambda s: evaluation.predictive_log_likelihood(f, y, s), [0.1, 0.3, 1.0])
    assert best == 0.3 and scores[1] == max(scores)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="LLAMASinusoidSettings.eta"):
        llama.LLAMASinusoidSettings(eta=-1.0)
    with pytest.raises(ValueError, match="LLAMAGlyphSettings.prior_precision"):
        llama.LLAMAGlyphSettings(prior_precision=0.0)
    with pytest.raises(ValueError, match="noise_std"):
        llama.LLAMASinusoidSettings(noise_std=0.0)
    with pytest.raises(ValueError, match="tau_grid"):
        llama.LLAMASinusoidSettings(tau_grid=())
    with pytest.raises(ValueError, match="inner_lr"):  # MAML's own checks still run
        llama.LLAMASinusoidSettings(inner_lr=0.0)
    with pytest.raises(ValueError, match="MLP or a Conv4 with a head"):
        llama.LLAMA(Conv4(1, 4, None, track_running_stats=False), "cross_entropy")
    assert llama.LLAMASinusoidSettings.quick().steps < llama.LLAMASinusoidSettings.full().steps
    assert llama.LLAMAGlyphSettings.full().inner_lr == 0.4  # MAML's paper setting underneath
    assert llama.LLAMAGlyphSettings.full().checkpoint and not llama.LLAMAGlyphSettings.quick().checkpoint


def test_builders_with_a_seed_leave_the_global_random_state_alone():
    settings = llama.LLAMASinusoidSettings.quick()
    before = torch.get_rng_state()
    a = llama.sinusoid_learner(settings, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    b = llama.sinusoid_learner(settings, seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def load_script(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_stored_eta_is_what_the_tuning_script_chooses():
    """scripts/choose_llama_eta.py reruns the meta-validation sweep (about 80 s of CPU); the stored choice must match."""
    script = load_script("choose_llama_eta")
    sweeps = script.choose()
    assert {family: sweep.chosen for family, sweep in sweeps.items()} == llama.QUICK_ETA
