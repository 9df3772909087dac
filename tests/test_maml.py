"""MAML, first-order MAML, Meta-SGD and ANIL against independent references.

References: central finite differences of the meta-objective, the closed form of
the meta-gradient of a linear least-squares model, and a slow per-task loop
that shares no forward code with the batched learner.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metaedu.algorithms.maml import (
    MAML,
    GlyphSettings,
    SinusoidSettings,
    evaluate_regression,
    head_names,
    inner_step,
    meta_gradient_of,
    meta_train,
    mse_by_steps,
    parameter_change,
    per_task_meta_loss,
    pretrain,
    sinusoid_learner,
    task_mse_by_steps,
)
from metaedu.nn.backbones import MLP, Conv4
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.tasks.regression import RegressionTasks, SinusoidTasks

D = torch.float64


def sinusoids(tasks=4, k=5, q=6, seed=0) -> RegressionTasks:
    t = SinusoidTasks(k, q, seed=seed).sample(tasks)
    return RegressionTasks(t.x_support.to(D), t.y_support.to(D), t.x_query.to(D), t.y_query.to(D), t.params)


def smooth_learner(**kw) -> MAML:
    torch.manual_seed(0)
    return MAML(MLP((1, 6, 5, 1), activation=nn.Tanh).double(), "mse", inner_lr=0.05, **kw)


def meta_grad(learner, tasks, steps, loss_fn=None):
    learner.zero_grad(set_to_none=True)
    loss = (loss_fn or (lambda: learner.meta_loss(tasks, steps)[0]))()
    return torch.autograd.grad(loss, list(learner.parameters()))


def finite_differences(learner, tasks, steps, eps=1e-6):
    grads = []
    for p in learner.parameters():
        g = torch.zeros_like(p)
        for j in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[j] += eps
            up = learner.meta_loss(tasks, steps)[0].item()
            with torch.no_grad():
                p.view(-1)[j] -= 2 * eps
            down = learner.meta_loss(tasks, steps)[0].item()
            with torch.no_grad():
                p.view(-1)[j] += eps
            g.view(-1)[j] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_meta_gradient_equals_finite_differences(steps):
    learner = smooth_learner()
    tasks = sinusoids()
    for g, fd in zip(meta_grad(learner, tasks, steps), finite_differences(learner, tasks, steps)):
        torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-7)


def test_first_order_differs_from_finite_differences():
    """Dropping the Hessian term must change the gradient of a curved model (else the test above proves nothing)."""
    learner = smooth_learner(first_order=True)
    tasks = sinusoids()
    fo = torch.cat([g.flatten() for g in meta_grad(learner, tasks, 1)])
    fd = torch.cat([g.flatten() for g in finite_differences(learner, tasks, 1)])
    assert (fo - fd).norm() > 1e-3 * fd.norm()


def linear_tasks(tasks=3, k=4, q=5, dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tasks, k + q, dim, generator=g, dtype=D)
    y = torch.randn(tasks, k + q, 1, generator=g, dtype=D)
    return RegressionTasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:])


def closed_form_linear(theta, tasks, alpha):
    """Least squares f(x) = [x, 1] . theta, one inner step: the exact meta-gradient (I - alpha H) g_q and g_q."""
    second, first = [], []
    for i in range(tasks.tasks):
        xs = torch.cat([tasks.x_support[i], torch.ones(tasks.x_support.shape[1], 1, dtype=D)], 1)  # [K, dim + 1]
        xq = torch.cat([tasks.x_query[i], torch.ones(tasks.x_query.shape[1], 1, dtype=D)], 1)
        k, q = xs.shape[0], xq.shape[0]
        grad_s = 2 / k * xs.T @ (xs @ theta - tasks.y_support[i, :, 0])
        hessian = 2 / k * xs.T @ xs
        adapted = theta - alpha * grad_s
        grad_q = 2 / q * xq.T @ (xq @ adapted - tasks.y_query[i, :, 0])
        second.append((torch.eye(len(theta), dtype=D) - alpha * hessian) @ grad_q)
        first.append(grad_q)
    return torch.stack(second).mean(0), torch.stack(first).mean(0)


@pytest.mark.parametrize("first_order", [False, True])
def test_linear_model_meta_gradient_has_the_closed_form(first_order):
    torch.manual_seed(0)
    alpha = 0.1
    learner = MAML(MLP((3, 1)).double(), "mse", inner_lr=alpha, first_order=first_order)
    tasks = linear_tasks()
    w, b = meta_grad(learner, tasks, 1)
    ours = torch.cat([w.flatten(), b.flatten()])
    theta = torch.cat([learner.model.net[0].weight.detach().flatten(), learner.model.net[0].bias.detach()])
    second, first = closed_form_linear(theta, tasks, alpha)
    torch.testing.assert_close(ours, first if first_order else second)
    # first and second order differ by alpha * H * g_q, which is not small here
    assert (second - first).norm() > 0.01 * second.norm()


def test_first_and_second_order_agree_when_the_inner_hessian_vanishes():
    """Theory: d theta'/d theta = I - alpha H; with the inner loss linear in theta, H = 0 and both orders agree."""
    torch.manual_seed(0)
    learner = MAML(MLP((3, 1)).double(), "mse", inner_lr=0.1)
    fo_learner = MAML(learner.model, "mse", inner_lr=0.1, first_order=True)
    tasks = linear_tasks()
    # zero support inputs: f = b on the support set, so the weight part of H is zero and only the bias is curved
    tasks.x_support.zero_()
    so_w, so_b = meta_grad(learner, tasks, 1)
    fo_w, fo_b = meta_grad(fo_learner, tasks, 1)
    torch.testing.assert_close(so_w, fo_w)
    # the bias sees H = 2: the orders differ there by the factor (1 - 2 alpha)
    torch.testing.assert_close(so_b, (1 - 2 * 0.1) * fo_b)


@pytest.mark.parametrize(
    "options", [{}, {"first_order": True}, {"meta_sgd": True}, {"anil": True}, {"meta_sgd": True, "anil": True}]
)
def test_batched_equals_per_task_loop_on_sinusoids(options):
    learner = smooth_learner(**options)
    tasks = sinusoids(tasks=5)
    for steps in (1, 3):
        batched = meta_grad(learner, tasks, steps)
        looped = meta_grad(learner, tasks, steps, lambda: per_task_meta_loss(learner, tasks, steps))
        for a, b in zip(batched, looped):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("options", [{}, {"first_order": True}, {"meta_sgd": True}, {"anil": True}])
def test_batched_equals_per_task_loop_on_glyph_episodes(glyphs, options):
    torch.manual_seed(0)
    model = Conv4(1, hidden=4, n_classes=3, track_running_stats=False).double()
    learner = MAML(model, "cross_entropy", inner_lr=0.4, **options)
    eps = EpisodeSampler(glyphs.split("background"), 3, 1, 2, seed=0).sample(3)
    eps.x_support, eps.x_query = eps.x_support.to(D), eps.x_query.to(D)
    batched_loss, out = learner.meta_loss(eps, 2)
    assert out.shape == (3, 6, 3)
    batched = torch.autograd.grad(batched_loss, list(learner.parameters()))
    looped = torch.autograd.grad(per_task_meta_loss(learner, eps, 2), list(learner.parameters()))
    scale = max(float(b.abs().max()) for b in looped)
    for a, b in zip(batched, looped):
        # conv biases before batch norm have a true gradient of zero; compare on the overall scale
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9 * scale)


def test_meta_sgd_learning_rate_gradient_has_the_closed_form():
    """One step: theta' = theta - alpha * g_s, so dL_q/d alpha = -g_s * grad L_q(theta') (element-wise)."""
    learner = smooth_learner(meta_sgd=True)
    tasks = sinusoids(tasks=1)
    loss, _ = learner.meta_loss(tasks, 1)
    grads = dict(zip([n for n, _ in learner.named_parameters()], torch.autograd.grad(loss, list(learner.parameters()))))
    theta = dict(learner.model.named_parameters())
    support = ((learner.model(tasks.x_support[0]) - tasks.y_support[0]) ** 2).mean()
    g_s = dict(zip(theta, torch.autograd.grad(support, list(theta.values()))))
    adapted = {n: (theta[n] - 0.05 * g_s[n]).detach().requires_grad_() for n in theta}
    query = ((functional_call(learner.model, adapted, (tasks.x_query[0],)) - tasks.y_query[0]) ** 2).mean()
    g_q = dict(zip(adapted, torch.autograd.grad(query, list(adapted.values()))))
    for n in theta:
        torch.testing.assert_close(grads["inner_lrs." + n.replace(".", "__")], -g_s[n] * g_q[n])


def test_anil_moves_only_the_head():
    learner = smooth_learner(anil=True)
    assert learner.adapted == ["net.4.weight", "net.4.bias"] == head_names(learner.model)
    change = parameter_change(learner, sinusoids(), steps=3)
    assert change["net.4.weight"] > 0 and change["net.4.bias"] > 0
    assert all(change[n] == 0 for n in change if not n.startswith("net.4"))
    maml_change = parameter_change(smooth_learner(), sinusoids(), steps=3)
    assert maml_change["net.0.weight"] > 0


def test_zero_steps_is_the_plain_model_and_more_steps_lower_the_support_loss():
    learner = smooth_learner()
    tasks = sinusoids()
    out = learner.predict(tasks.x_support, tasks.y_support, tasks.x_query, steps=0)
    torch.testing.assert_close(out, learner.model(tasks.x_query))
    losses = mse_by_steps(learner, RegressionTasks(tasks.x_support, tasks.y_support, tasks.x_support,
                                                   tasks.y_support), 5)
    assert len(losses) == 6
    assert losses[5].mean < losses[0].mean  # gradient descent on the support set lowers its loss


@pytest.mark.slow
def test_meta_training_beats_the_pretrained_baseline_after_one_step():
    """A short run: MAML's MSE after one step is below the jointly trained network's, intervals apart."""
    torch.manual_seed(0)
    settings = SinusoidSettings.quick()
    settings.steps = settings.pretrain_steps = 400
    learner = sinusoid_learner(settings)
    meta_train(learner, SinusoidTasks(settings.k_shot, settings.n_query, seed=1), settings, progress=False)
    baseline = MAML(MLP((1, *settings.hidden, 1)), "mse", settings.inner_lr)
    pretrain(baseline.model, SinusoidTasks(settings.k_shot, settings.n_query, seed=1), settings, progress=False)
    maml = evaluate_regression(learner, SinusoidTasks(settings.k_shot, 20, seed=2), 1, 200)
    pre = evaluate_regression(baseline, SinusoidTasks(settings.k_shot, 20, seed=2), 1, 200)
    assert maml.mean + maml.ci95 < pre.mean - pre.ci95, (maml, pre)


@pytest.mark.parametrize("chunk", [None, 1, 2, 5])
def test_meta_gradient_in_chunks_equals_the_per_task_loop(glyphs, chunk):
    """Chunked backpropagation (None: the plan measured on this machine; 2 leaves a remainder) gives the same
    gradient. Every plan is checked in tests/test_maml_plan.py."""
    torch.manual_seed(0)
    model = Conv4(1, hidden=4, n_classes=3, track_running_stats=False).double()
    learner = MAML(model, "cross_entropy", inner_lr=0.4, task_chunk=chunk)
    eps = EpisodeSampler(glyphs.split("background"), 3, 1, 2, seed=1).sample(5)
    eps.x_support, eps.x_query = eps.x_support.to(D), eps.x_query.to(D)
    looped = torch.autograd.grad(per_task_meta_loss(learner, eps, 1), list(learner.parameters()))
    learner.zero_grad(set_to_none=True)
    loss, out = learner.meta_gradient(eps, 1)
    assert out.shape == (5, 6, 3) and not out.requires_grad and not loss.requires_grad
    torch.testing.assert_close(loss, per_task_meta_loss(learner, eps, 1).detach())
    scale = max(float(b.abs().max()) for b in looped)
    for p, b in zip(learner.parameters(), looped):
        torch.testing.assert_close(p.grad, b, rtol=1e-6, atol=1e-9 * scale)
    assert learner.plan_for(eps, 1).size(5) == min(chunk, 5) if chunk else learner.plan == "auto"


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="loss must be one of"):
        MAML(MLP(), "hinge")
    with pytest.raises(ValueError, match="inner_lr"):
        MAML(MLP(), "mse", inner_lr=0.0)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        MAML(Conv4(1, 4, 5), "cross_entropy")
    with pytest.raises(ValueError, match="task_chunk"):
        MAML(MLP(), "mse", task_chunk=0)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        smooth_learner().adapt(torch.zeros(1, 2, 1, dtype=D), torch.zeros(1, 2, 1, dtype=D), -1)
    with pytest.raises(ValueError, match="labels"):
        learner = MAML(Conv4(1, 4, 5, track_running_stats=False), "cross_entropy", 0.4)
        learner.adapt(torch.zeros(1, 5, 1, 28, 28), torch.zeros(1, 4, dtype=torch.long), 1)


def test_presets_differ_and_keep_the_paper_setting_in_full_mode():
    assert SinusoidSettings.full().inner_lr == 0.01 and SinusoidSettings.full().meta_batch == 25
    assert GlyphSettings.full().inner_lr == 0.4 and GlyphSettings.full().test_inner_steps == 3
    twenty = GlyphSettings.twenty_way("full")
    assert (twenty.n_way, twenty.inner_lr, twenty.inner_steps, twenty.meta_batch) == (20, 0.1, 5, 16)
    assert SinusoidSettings.quick().steps < SinusoidSettings.full().steps


def test_inner_step_and_meta_gradient_of_follow_the_closed_form():
    """The one-task helpers, from weights given as a dict, against least squares done by hand."""
    tasks = linear_tasks()
    model = MLP((3, 1)).double()
    theta = {"net.0.weight": torch.randn(1, 3, dtype=D), "net.0.bias": torch.randn(1, dtype=D)}
    theta = {k: v.requires_grad_() for k, v in theta.items()}
    flat = torch.cat([theta["net.0.weight"][0], theta["net.0.bias"]]).detach()
    alpha = 0.05
    xs = torch.cat([tasks.x_support[0], torch.ones(tasks.x_support.shape[1], 1, dtype=D)], 1)
    step = 2 / xs.shape[0] * xs.T @ (xs @ flat - tasks.y_support[0, :, 0])
    fast = inner_step(model, theta, tasks.x_support[0], tasks.y_support[0], alpha)
    torch.testing.assert_close(torch.cat([fast["net.0.weight"][0], fast["net.0.bias"]]), flat - alpha * step)
    assert fast["net.0.weight"].grad_fn is not None
    second, first = closed_form_linear(flat, tasks, alpha)
    for exact, first_order in ((second, False), (first, True)):
        g = meta_gradient_of(model, theta, tasks, alpha, first_order=first_order)
        torch.testing.assert_close(torch.cat([g["net.0.weight"][0], g["net.0.bias"]]), exact)
    with pytest.raises(ValueError, match="params must hold"):
        inner_step(model, {"w": theta["net.0.weight"]}, tasks.x_support[0], tasks.y_support[0], alpha)


def test_task_mse_by_steps_is_per_task_and_agrees_with_the_scores():
    learner = sinusoid_learner(SinusoidSettings.quick()).double()
    tasks = sinusoids()
    per_task = task_mse_by_steps(learner, tasks, 3)
    assert per_task.shape == (4, tasks.tasks)
    for row, score in zip(per_task, mse_by_steps(learner, tasks, 3)):
        assert abs(float(row.mean()) - score.mean) < 1e-9
    manual = ((learner.predict(tasks.x_support, tasks.y_support, tasks.x_query, 2) - tasks.y_query) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(per_task[2], manual.cpu(), rtol=1e-5, atol=1e-6)
