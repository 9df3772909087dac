"""The batched functional forward passes against one-task-at-a-time ``functional_call``."""

from __future__ import annotations

import pytest
import torch

from metaedu.nn.backbones import MLP, Conv4
from metaedu.nn.functional import (
    batched_forward,
    check_batch_norm,
    mlp_mse_gradients,
    parameter_dict,
    per_task,
    single_forward,
)

TASKS = 3


def random_task_params(model, tasks=TASKS, seed=0):
    """Different weights for every task: theta plus task-specific noise, float64."""
    g = torch.Generator().manual_seed(seed)
    return {
        n: p.detach().unsqueeze(0) + 0.3 * torch.randn(tasks, *p.shape, generator=g, dtype=p.dtype)
        for n, p in model.named_parameters()
    }


def loop_forward(model, params, x):
    """Reference: each task through the plain module with its own weights."""
    return torch.stack([single_forward(model, {n: p[i] for n, p in params.items()}, x[i]) for i in range(x.shape[0])])


def tiny_conv4():
    torch.manual_seed(0)
    return Conv4(1, hidden=4, n_classes=5, track_running_stats=False).double()


@pytest.mark.parametrize("route", ["auto", "vmap"])
def test_mlp_matches_per_task_loop(route):
    torch.manual_seed(0)
    model = MLP((2, 7, 5, 3)).double()
    params = random_task_params(model)
    x = torch.randn(TASKS, 6, 2, dtype=torch.float64)
    out = batched_forward(model, params, x, route=route)
    assert out.shape == (TASKS, 6, 3)
    torch.testing.assert_close(out, loop_forward(model, params, x))


@pytest.mark.parametrize("route", ["auto", "vmap"])
def test_conv4_matches_per_task_loop(route):
    model = tiny_conv4()
    params = random_task_params(model)
    x = torch.rand(TASKS, 4, 1, 28, 28, dtype=torch.float64)
    out = batched_forward(model, params, x, route=route)
    assert out.shape == (TASKS, 4, 5)
    torch.testing.assert_close(out, loop_forward(model, params, x))


def test_conv4_embedding_without_head():
    torch.manual_seed(0)
    model = Conv4(1, hidden=4, n_classes=None, track_running_stats=False).double()
    params = random_task_params(model)
    x = torch.rand(TASKS, 2, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(batched_forward(model, params, x), loop_forward(model, params, x))


def test_batch_norm_statistics_stay_within_a_task():
    """Changing task 1's images must not change task 0's outputs (no shared statistics)."""
    model = tiny_conv4()
    params = per_task(parameter_dict(model), 2)
    x = torch.rand(2, 4, 1, 28, 28, dtype=torch.float64)
    before = batched_forward(model, params, x)
    x2 = x.clone()
    x2[1] = x2[1] * 5 + 1
    after = batched_forward(model, params, x2)
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1])


def test_batch_norm_uses_the_batch_passed():
    """Each example's output depends on the other examples of its own batch (batch statistics, no running ones)."""
    model = tiny_conv4()
    params = per_task(parameter_dict(model), 1)
    x = torch.rand(1, 4, 1, 28, 28, dtype=torch.float64)
    full = batched_forward(model, params, x)
    half = batched_forward(model, params, x[:, :2])
    assert not torch.allclose(full[:, :2], half)


def test_gradients_through_per_task_views_are_per_task():
    torch.manual_seed(0)
    model = MLP((1, 4, 1)).double()
    theta = parameter_dict(model)
    fast = per_task(theta, TASKS)
    x = torch.randn(TASKS, 5, 1, dtype=torch.float64)
    y = torch.randn(TASKS, 5, 1, dtype=torch.float64)
    losses = ((batched_forward(model, fast, x) - y) ** 2).mean((1, 2))  # [tasks]
    grads = torch.autograd.grad(losses.sum(), list(fast.values()))
    for i in range(TASKS):
        ref = torch.autograd.grad(((model(x[i]) - y[i]) ** 2).mean(), list(theta.values()))
        for g, r in zip(grads, ref):
            torch.testing.assert_close(g[i], r)


def test_running_statistics_are_refused():
    with pytest.raises(ValueError, match="track_running_stats=False"):
        check_batch_norm(Conv4(1, hidden=4, n_classes=5))
    check_batch_norm(Conv4(1, hidden=4, n_classes=5, track_running_stats=False))


def test_bad_shapes_are_named():
    model = MLP((1, 4, 1))
    params = per_task(parameter_dict(model), 2)
    with pytest.raises(ValueError, match="leading size 2 but x holds 3 tasks"):
        batched_forward(model, params, torch.zeros(3, 5, 1))
    with pytest.raises(ValueError, match="leading task dimension"):
        batched_forward(model, params, torch.zeros(5, 1))
    with pytest.raises(ValueError, match="route"):
        batched_forward(model, params, torch.zeros(2, 5, 1), route="fast")
    with pytest.raises(ValueError, match="tasks must be at least 1"):
        per_task(parameter_dict(model), 0)


@pytest.mark.parametrize("activation", [torch.nn.ReLU, torch.nn.Tanh, torch.nn.Sigmoid], ids=lambda a: a.__name__)
def test_written_out_mlp_gradients_equal_autograds_and_so_do_their_derivatives(activation):
    """Each task's MSE gradient from the backward recursion equals autograd's on the one-task-at-a-time
    module, and differentiating the gradients again (the second-order term MAML needs) gives autograd's
    Hessian-vector products."""
    torch.manual_seed(0)
    model = MLP((3, 7, 5, 2), activation=activation).double()
    params = {n: p.requires_grad_() for n, p in random_task_params(model).items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(TASKS, 6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(TASKS, 6, 2, generator=g, dtype=torch.float64)
    losses, out, grads = mlp_mse_gradients(model, params, x, y)
    assert list(grads) == list(params) and out.shape == y.shape
    for t in range(TASKS):
        one = {n: p[t] for n, p in params.items()}
        loss = ((single_forward(model, one, x[t]) - y[t]) ** 2).mean()
        torch.testing.assert_close(losses[t], loss)
        expected = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        for name, e in zip(params, expected):
            torch.testing.assert_close(grads[name][t], e[t], rtol=1e-12, atol=1e-14)
    v = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params.values()]
    by_autograd = torch.autograd.grad(losses.sum(), list(params.values()), create_graph=True)
    hvp = torch.autograd.grad(sum((a * b).sum() for a, b in zip(by_autograd, v)), list(params.values()),
                              retain_graph=True)
    written = torch.autograd.grad(sum((grads[n] * b).sum() for n, b in zip(params, v)), list(params.values()))
    for a, b in zip(written, hvp):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_written_out_gradients_name_what_they_cannot_take():
    with pytest.raises(ValueError, match="takes an MLP with activations"):
        mlp_mse_gradients(MLP((1, 4, 1), activation=torch.nn.GELU), {}, torch.zeros(1, 2, 1), torch.zeros(1, 2, 1))
    model = MLP((1, 4, 2)).double()
    params = per_task(parameter_dict(model), 2)
    with pytest.raises(ValueError, match="differ in shape"):
        mlp_mse_gradients(model, params, torch.zeros(2, 3, 1, dtype=torch.float64), torch.zeros(2, 3, 1, dtype=torch.float64))
