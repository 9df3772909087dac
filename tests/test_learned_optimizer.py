"""Learned optimizer (Andrychowicz et al. 2016) and the shared gradient preprocessing.

References: exact values of the preprocessing at its threshold; a per-coordinate loop for the
coordinatewise LSTM; central finite differences for the meta-gradient (with and without the
optimizee's second derivatives); the closed-form gradient step; a per-function loop for the
batched baselines; an nn.Linear network for the flat-parameter MLP.
"""

from __future__ import annotations

import math

import pytest
import torch

from metaedu.algorithms import learned_optimizer as lo
from metaedu.tasks import optimizees
from metaedu.nn.preprocess import preprocess
from metaedu.tasks.regression import Quadratics


# ---------------------------------------------------------------- preprocessing


def test_preprocess_at_and_around_threshold():
    p = 10.0
    e = math.exp(-p)
    x = torch.tensor([e, -e, e * (1 - 1e-9), -e * (1 - 1e-9), e * (1 + 1e-9), 0.0, 1.0, -math.exp(-5), math.exp(3)],
                     dtype=torch.float64)
    out = preprocess(x, p)
    expect = torch.tensor([
        [-1.0, 1.0],  # exactly at the threshold: log branch, log(e^-p)/p = -1
        [-1.0, -1.0],
        [-1.0, 1.0 - 1e-9],  # just below: (-1, e^p x)
        [-1.0, -(1.0 - 1e-9)],
        [-1.0 + math.log1p(1e-9) / p, 1.0],  # just above: log branch
        [-1.0, 0.0],  # zero stays finite
        [0.0, 1.0],
        [-0.5, -1.0],
        [0.3, 1.0],
    ], dtype=torch.float64)
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-12)
    # the map is continuous across the threshold on both sides (both parts tend to (-1, +-1))
    assert out.shape == (9, 2)


def test_preprocess_other_p_and_shapes():
    x = torch.tensor([[math.exp(-3), 0.5 * math.exp(-3)], [-2.0, 1e-30]], dtype=torch.float64)
    out = preprocess(x, p=3.0)
    assert out.shape == (2, 2, 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([-1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out[0, 1], torch.tensor([-1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(out[1, 0], torch.tensor([math.log(2.0) / 3.0, -1.0], dtype=torch.float64))
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- the coordinatewise LSTM


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 1000)])
def test_optimizer_handles_any_parameter_count(shape):
    torch.manual_seed(0)
    opt = lo.CoordinatewiseLSTM(hidden=20, layers=2)
    grad = torch.randn(shape)
    update, state = opt(grad)
    assert update.shape == grad.shape and torch.isfinite(update).all()
    n = grad.numel()
    assert len(state) == 2 and all(h.shape == (n, 20) and c.shape == (n, 20) for h, c in state)
    update2, _ = opt(torch.randn(shape), state)
    assert update2.shape == grad.shape


def test_coordinatewise_equals_per_coordinate_loop():
    """Shared weights, separate states: the batched optimizer equals one LSTM run per coordinate."""
    torch.manual_seed(1)
    opt = lo.CoordinatewiseLSTM(hidden=6, layers=2)
    grads = torch.randn(4, 5) * torch.logspace(-6, 1, 5)  # [steps, coords], many magnitudes
    state, batched = None, []
    for g in grads:
        u, state = opt(g, state)
        batched.append(u)
    batched = torch.stack(batched)  # [steps, coords]
    for i in range(5):
        s_i, single = None, []
        for g in grads:
            u, s_i = opt(g[i: i + 1], s_i)
            single.append(u)
        torch.testing.assert_close(torch.stack(single)[:, 0], batched[:, i])


def test_optimizer_rejects_mismatched_state():
    opt = lo.CoordinatewiseLSTM(hidden=4)
    _, state = opt(torch.randn(3))
    with pytest.raises(ValueError, match="state is for 3 coordinates"):
        opt(torch.randn(4), state)
    with pytest.raises(ValueError, match="hidden >= 1"):
        lo.CoordinatewiseLSTM(hidden=0)


def test_update_response_shape():
    opt = lo.CoordinatewiseLSTM(hidden=4)
    r = lo.update_response(opt, torch.logspace(-4, 1, 9), steps=3)
    assert r.shape == (3, 9) and torch.isfinite(r).all()


# ---------------------------------------------------------------- meta-gradients


def _tiny(dtype=torch.float64, seed=0, use_preprocess=True):
    torch.manual_seed(seed)
    opt = lo.CoordinatewiseLSTM(hidden=3, layers=2, use_preprocess=use_preprocess, output_scale=0.5).to(dtype)
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(2, 3, 3, generator=g, dtype=dtype)
    y = torch.randn(2, 3, generator=g, dtype=dtype)
    run = optimizees.QuadraticRun(Quadratics(W, y), 0.1 * torch.randn(2, 3, generator=g, dtype=dtype))
    return opt, run


def _flat_params(opt):
    return torch.cat([p.detach().flatten() for p in opt.parameters()])


def _set_params(opt, flat):
    i = 0
    with torch.no_grad():
        for p in opt.parameters():
            p.copy_(flat[i: i + p.numel()].view_as(p))
            i += p.numel()


def _directional_fd(opt, objective, direction, eps=1e-6):
    base = _flat_params(opt)
    _set_params(opt, base + eps * direction)
    up = float(objective().detach())
    _set_params(opt, base - eps * direction)
    down = float(objective().detach())
    _set_params(opt, base)
    return (up - down) / (2 * eps)


def _autograd_directional(opt, meta_loss, direction):
    grads = torch.autograd.grad(meta_loss, list(opt.parameters()))
    return float(torch.cat([g.flatten() for g in grads]) @ direction)


def test_second_order_meta_gradient_matches_finite_differences():
    opt, run = _tiny()
    direction = torch.randn(_flat_params(opt).numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    meta_loss = lo.unroll(opt, run, run.theta0, None, 0, 4, second_order=True)[0]
    analytic = _autograd_directional(opt, meta_loss, direction)
    numeric = _directional_fd(opt, lambda: lo.unroll(opt, run, run.theta0, None, 0, 4, second_order=True)[0], direction)
    assert analytic == pytest.approx(numeric, rel=1e-5)


@pytest.mark.parametrize("use_preprocess", [True, False])
def test_first_order_meta_gradient_treats_optimizee_gradient_as_input(use_preprocess):
    """With second derivatives dropped, the meta-gradient is the derivative of a run in which the
    gradients grad_t are frozen inputs (recorded at the current phi); it differs from the full one."""
    opt, run = _tiny(use_preprocess=use_preprocess)
    steps = 4
    direction = torch.randn(_flat_params(opt).numel(), generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    # record grad_t along the trajectory at the current phi
    recorded, theta, state = [], run.theta0.clone(), None
    for t in range(steps):
        theta = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(run.loss(theta, t).sum(), theta)
        recorded.append(grad)
        with torch.no_grad():
            update, state = opt(grad, state)
        theta = theta + update

    def frozen_objective():
        theta, state, total = run.theta0.clone(), None, 0.0
        for t in range(steps):
            update, state = opt(recorded[t], state)
            theta = theta + update
            total = total + run.loss(theta, t + 1).mean()
        return total

    meta_first = lo.unroll(opt, run, run.theta0, None, 0, steps, second_order=False)[0]
    first = _autograd_directional(opt, meta_first, direction)
    with torch.no_grad():
        numeric = _directional_fd(opt, frozen_objective, direction)
    assert first == pytest.approx(numeric, rel=1e-5)

    meta_full = lo.unroll(opt, run, run.theta0, None, 0, steps, second_order=True)[0]
    full = _autograd_directional(opt, meta_full, direction)
    # the option really changes the gradient: by far more than the finite-difference tolerance above
    assert abs(full - first) > 1e-4 * abs(full), (full, first)


def test_gradient_flows_to_phi_but_not_through_optimizee_gradient():
    opt, run = _tiny(torch.float32)
    theta = run.theta0.float().requires_grad_(True)
    loss = run.loss(theta, 0)
    assert lo.optimizee_gradient(loss, theta, second_order=False).grad_fn is None
    assert lo.optimizee_gradient(loss, theta, second_order=True).grad_fn is not None
    meta_loss = lo.unroll(opt, run, run.theta0, None, 0, 3)[0]
    meta_loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in opt.parameters())


def test_unroll_checks_its_arguments():
    opt, run = _tiny()
    with pytest.raises(ValueError, match="at least one step"):
        lo.unroll(opt, run, run.theta0, None, 0, 0)
    with pytest.raises(ValueError, match="weights must have shape"):
        lo.unroll(opt, run, run.theta0, None, 0, 3, weights=torch.ones(2))


def test_unroll_and_test_run_follow_the_same_trajectory():
    opt, run = _tiny()
    losses_train = lo.unroll(opt, run, run.theta0, None, 0, 5)[3]
    losses_test = lo.optimize_learned(opt, run, 5)
    torch.testing.assert_close(losses_train, losses_test)
    weights = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    last_only = lo.unroll(opt, run, run.theta0, None, 0, 5, weights=weights)[0]
    torch.testing.assert_close(last_only, losses_test[-1].mean())


def test_meta_training_reduces_meta_loss_on_tiny_problem():
    torch.manual_seed(0)
    s = lo.LearnedOptimizerSettings(hidden=8, horizon=10, unroll=5, meta_lr=1e-2, quad_dim=3)
    opt = lo.CoordinatewiseLSTM.from_settings(s)
    held_out = optimizees.QuadraticProblem.from_settings(s, seed=99).sample(64)
    before = float(lo.optimize_learned(opt, held_out, s.horizon)[1:].mean())
    history = lo.meta_train(opt, optimizees.QuadraticProblem.from_settings(s, seed=0), s, episodes=25, meta_batch=32,
                            progress=False)
    after = float(lo.optimize_learned(opt, held_out, s.horizon)[1:].mean())
    assert len(history["loss"]) == 50 and len(history["final"]) == 25
    assert after < 0.7 * before, (before, after)


def test_meta_train_rejects_horizon_not_multiple_of_unroll():
    with pytest.raises(ValueError, match="multiple of the unroll"):
        lo.LearnedOptimizerSettings(horizon=10, unroll=3)
    s = lo.LearnedOptimizerSettings(horizon=10, unroll=5)
    s.unroll = 3  # changed after the checks ran
    with pytest.raises(ValueError, match="multiple of the unroll"):
        lo.meta_train(lo.CoordinatewiseLSTM(), optimizees.QuadraticProblem(), s, 1, 1, progress=False)


# ---------------------------------------------------------------- optimizees and baselines


def test_flat_mlp_matches_torch_layers():
    torch.manual_seed(0)
    sizes = (5, 4, 3, 2)
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    theta = torch.cat([torch.cat([l.weight.detach().T.flatten(), l.bias.detach()]) for l in layers])[None]
    x = torch.randn(1, 7, 5)
    expect = layers[2](torch.sigmoid(layers[1](torch.sigmoid(layers[0](x[0])))))
    torch.testing.assert_close(optimizees.mlp_logits(theta, x, sizes, "sigmoid")[0], expect)


def test_mlp_problem_shapes_and_errors():
    x, y = torch.rand(50, 64), torch.arange(50) % 10
    problem = optimizees.MLPProblem(x, y, hidden=(20,), batch=16, seed=0)
    assert problem.n_params == 64 * 20 + 20 + 20 * 10 + 10
    run = problem.sample(3, steps=4)
    assert run.theta0.shape == (3, problem.n_params) and run.batches.shape == (5, 3, 16)
    assert run.loss(run.theta0, 4).shape == (3,)
    with pytest.raises(IndexError, match="steps 0..4"):
        run.loss(run.theta0, 5)
    with pytest.raises(ValueError, match="unknown activation"):
        optimizees.MLPProblem(x, y, activation="swish")
    with pytest.raises(ValueError, match="need x"):
        optimizees.MLPProblem(x, y[:10])


def test_sgd_baseline_is_the_closed_form_gradient_step():
    q = optimizees.QuadraticProblem(dim=4, init_std=1.0, seed=0).sample(3)
    losses, thetas = lo.optimize_baseline("SGD", 0.01, q, 2, return_thetas=True)
    W, y, th = q.functions.W, q.functions.y, q.theta0
    step1 = th - 0.01 * 2 * torch.einsum("tji,tj->ti", W, torch.einsum("tij,tj->ti", W, th) - y)
    torch.testing.assert_close(thetas[1], step1)
    torch.testing.assert_close(losses[1], q.functions(step1))


@pytest.mark.parametrize("name", lo.BASELINES)
def test_batched_baselines_equal_one_function_at_a_time(name):
    q = optimizees.QuadraticProblem(dim=4, init_std=1.0, seed=1).sample(3)
    batched = lo.optimize_baseline(name, 0.05, q, 6)
    for i in range(3):
        one = optimizees.QuadraticRun(Quadratics(q.functions.W[i: i + 1], q.functions.y[i: i + 1]), q.theta0[i: i + 1])
        torch.testing.assert_close(lo.optimize_baseline(name, 0.05, one, 6)[:, 0], batched[:, i])
    with pytest.raises(ValueError, match="unknown baseline"):
        lo.make_baseline("Adagrad", [q.theta0.clone().requires_grad_(True)], 0.1)


def test_tuning_skips_diverging_rates():
    q = optimizees.QuadraticProblem(dim=10, seed=2).sample(16)
    best = lo.tune_baselines(q, 30, (1e-3, 1e-2, 100.0), names=("SGD",))
    assert best["SGD"] in (1e-3, 1e-2)  # lr 100 diverges on these quadratics
    assert not torch.isfinite(lo.optimize_baseline("SGD", 100.0, q, 30)[-1]).all()


class _DoubleQuadratics:
    """The paper's quadratics in float64, for finite differences (a problem as meta_train expects one)."""

    def __init__(self, dim=3, seed=0):
        self.inner = optimizees.QuadraticProblem(dim=dim, init_std=0.3, seed=seed)
        self.device = self.inner.device

    def sample(self, tasks, steps=None):
        run = self.inner.sample(tasks, steps)
        return optimizees.QuadraticRun(Quadratics(run.functions.W.double(), run.functions.y.double()),
                                       run.theta0.double())

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def checkpoint_inputs(self):
        return self.inner.checkpoint_inputs()


def test_truncated_bptt_takes_the_gradient_of_a_segment_with_its_start_held_fixed(monkeypatch):
    """meta_train's gradient for the second segment of a run is the derivative (finite differences) of
    that segment's losses with theta and the LSTM state at the segment's start held fixed: truncation,
    not the gradient of the whole run, which differs."""
    s = lo.LearnedOptimizerSettings(hidden=3, horizon=4, unroll=2, quad_dim=3, second_order=True, clip_grad=None)
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *args, **kwargs: None)  # phi stays where it is
    opt, _ = _tiny()
    history = lo.meta_train(opt, _DoubleQuadratics(seed=1), s, episodes=1, meta_batch=2, progress=False)
    trained = [p.grad.detach().clone() for p in opt.parameters()]  # left from the last step: segment 2

    run = _DoubleQuadratics(seed=1).sample(2, s.horizon)  # the same run, drawn again
    seg1, theta1, state1, _ = lo.unroll(opt, run, run.theta0, None, 0, 2, second_order=True)
    start = (theta1.detach(), lo.detach_state(state1))
    segment2 = lambda: lo.unroll(opt, run, start[0], start[1], 2, 2, second_order=True)[0]  # noqa: E731
    # the history keeps float32 values of each segment's mean loss per step
    assert history["loss"] == pytest.approx([float(seg1.detach()) / 2, float(segment2().detach()) / 2], rel=1e-6)
    direction = torch.randn(_flat_params(opt).numel(), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    numeric = _directional_fd(opt, lambda: segment2() / 2, direction)
    analytic = float(torch.cat([g.flatten() for g in trained]) @ direction)
    assert analytic == pytest.approx(numeric, rel=1e-5)
    whole = lo.unroll(opt, run, run.theta0, None, 0, 4, second_order=True,
                      weights=torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64))[0] / 2
    untruncated = _autograd_directional(opt, whole, direction)  # segment 2's losses, through segment 1 too
    assert abs(untruncated - analytic) > 1e-3 * abs(analytic)


@pytest.mark.parametrize("name", lo.BASELINES)
def test_rate_grid_runs_each_rate_as_if_alone(name):
    # reference: optimize_baseline at one rate at a time; a diverging rate (100) must not disturb the others
    q = lo.QuadraticProblem(dim=4, init_std=1.0, seed=3).sample(3)
    rates = (0.01, 0.1, 100.0)
    grid = lo.optimize_baseline_grid(name, rates, q, 8)
    assert grid.shape == (9, 3, 3)
    for r, lr in enumerate(rates):
        alone = lo.optimize_baseline(name, lr, q, 8)
        finite = torch.isfinite(alone)
        assert torch.equal(finite, torch.isfinite(grid[:, r]))
        torch.testing.assert_close(grid[:, r][finite], alone[finite])


def test_rate_grid_on_mini_batched_mlp_runs():
    x, y = torch.rand(40, 6), torch.arange(40) % 3
    run = lo.MLPProblem(x, y, hidden=(5,), batch=8, seed=0).sample(2, 5)
    grid = lo.optimize_baseline_grid("Adam", (0.01, 0.3), run, 5)
    for r, lr in enumerate((0.01, 0.3)):
        torch.testing.assert_close(grid[:, r], lo.optimize_baseline("Adam", lr, run, 5))
    with pytest.raises(ValueError, match="positive learning rate"):
        lo.optimize_baseline_grid("Adam", (), run, 5)
