"""The batched functional forward passes against one-task-at-a-time ``functional_call``."""

from __future__ import annotations

import pytest
import torch

from metaedu.nn.backbones import MLP, Conv4
from metaedu.nn.functional import (
    batched_forward,
    check_batch_norm,
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
