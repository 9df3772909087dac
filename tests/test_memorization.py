"""Meta-regularization: its KL terms, its limits (beta = 0, sigma -> 0) and the MAML/CNP paths it builds on."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call

from metaedu.algorithms import memorization as mr
from metaedu.algorithms import memorization_experiments as mx
from metaedu.nn.backbones import MLP
from metaedu.tasks.nonexclusive import OneHotSinusoidTasks

TINY = -60.0  # log sigma^2 of a Gaussian that is a point mass for every practical purpose (sigma ~ 1e-13)


def _settings(**changes):
    return mx.MemorizationSinusoidSettings(encoder_hidden=(16,), z_dim=8, head_hidden=(16,), r_dim=8, cnp_hidden=(16,),
                               meta_batch=4, **changes)


def _tasks(n=4, seed=0):
    return OneHotSinusoidTasks(k_shot=5, n_query=6, seed=seed).sample(n)


def test_weight_kl_equals_torch_distributions():
    torch.manual_seed(0)
    weights = mr.GaussianWeights(MLP((3, 5, 2)), init_log_var=-2.0, prior_log_var=0.5)
    with torch.no_grad():
        for p in weights.log_var.values():
            p.uniform_(-3, 1)
    ref = 0.0
    for name, mu in weights.net.named_parameters():
        q = Normal(mu, torch.exp(0.5 * weights.log_var[name.replace(".", "__")]))
        p = Normal(torch.zeros_like(mu), torch.full_like(mu, math.exp(0.25)))
        ref = ref + kl_divergence(q, p).sum()
    torch.testing.assert_close(weights.kl(), ref)


def test_bottleneck_kl_equals_torch_distributions():
    torch.manual_seed(1)
    bottleneck = mr.GaussianBottleneck(6, 3)
    h = torch.randn(10, 6)
    z, kl = bottleneck(h, sample=True, generator=torch.Generator().manual_seed(0))
    mu, log_var = bottleneck.stats(h).split(3, -1)
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * log_var)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl, ref)
    assert z.shape == (10, 3)
    z_mean, _ = bottleneck(h, sample=False)
    torch.testing.assert_close(z_mean, mu)


def test_gaussian_weights_are_sampled_by_reparameterisation():
    torch.manual_seed(2)
    weights = mr.GaussianWeights(MLP((3, 4, 1)), init_log_var=math.log(0.25))
    draw = weights.sample(torch.Generator().manual_seed(0))
    eps = torch.Generator().manual_seed(0)
    for name, mu in weights.means().items():
        expected = mu + 0.5 * torch.randn(mu.shape, generator=eps)
        torch.testing.assert_close(draw[name], expected)
    loss = sum(w.sum() for w in draw.values())
    loss.backward()
    assert all(p.grad is not None for p in weights.log_var.values()), "gradients reach sigma"


def _grads(model, tasks, seed=0):
    model.zero_grad()
    total, _ = model.loss(tasks, torch.Generator().manual_seed(seed))
    total.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["maml", "cnp"])
def test_weights_regularizer_with_beta_zero_and_sigma_to_zero_is_plain(method):
    tasks = _tasks()
    plain = mx.build(_settings(method=method), 21)
    weights = mx.build(_settings(method=method, regularizer="weights", init_log_var=TINY), 21)
    g_plain, g_w = _grads(plain, tasks), _grads(weights, tasks)
    shared = [n for n in g_plain]
    assert len(shared) > 4
    for name in shared:
        mapped = name.replace("encoder.body.", "encoder.body.net.")
        torch.testing.assert_close(g_w[mapped], g_plain[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["maml", "cnp"])
def test_activations_regularizer_with_beta_zero_and_sigma_to_zero_is_plain(method):
    tasks = _tasks()
    stochastic = mx.build(_settings(method=method, regularizer="activations"), 21)
    with torch.no_grad():  # sigma(x) -> 0 for every input: zero weights and a very negative bias on log sigma^2
        stochastic.encoder.bottleneck.stats.weight[8:] = 0
        stochastic.encoder.bottleneck.stats.bias[8:] = TINY
    plain = mx.build(_settings(method=method), 21)
    with torch.no_grad():  # the same network with the bottleneck's mean as an ordinary last layer
        mean_layer = torch.nn.Linear(8, 8)
        mean_layer.weight.copy_(stochastic.encoder.bottleneck.stats.weight[:8])
        mean_layer.bias.copy_(stochastic.encoder.bottleneck.stats.bias[:8])
        plain.encoder.body = torch.nn.Sequential(stochastic.encoder.body, mean_layer)
        plain.learner.load_state_dict(stochastic.learner.state_dict())
    g_s, g_p = _grads(stochastic, tasks), _grads(plain, tasks)
    for name, grad in g_p.items():
        if name.startswith("encoder.body.1."):
            part = name.split(".")[-1]
            torch.testing.assert_close(g_s[f"encoder.bottleneck.stats.{part}"][:8], grad, atol=1e-6, rtol=1e-5)
        else:
            torch.testing.assert_close(g_s[name.replace("encoder.body.0.", "encoder.body.")], grad,
                                       atol=1e-6, rtol=1e-5)


def test_maml_path_equals_a_slow_per_task_loop():
    """The encoder + MAML head against a hand-written inner loop, one task at a time."""
    torch.manual_seed(3)
    s = _settings(inner_steps=2)
    model = mx.build(s, 21).double()
    tasks = _tasks()
    tasks = type(tasks)(*(t.double() for t in (tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query)))
    total, _ = model.loss(tasks)
    params = dict(model.learner.model.named_parameters())
    ref = 0.0
    for i in range(tasks.tasks):
        z_s = model.encoder.body(tasks.x_support[i])
        z_q = model.encoder.body(tasks.x_query[i])
        fast = dict(params)
        for _ in range(2):
            loss = ((functional_call(model.learner.model, fast, (z_s,)) - tasks.y_support[i]) ** 2).mean()
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: p - s.inner_lr * g for (n, p), g in zip(fast.items(), grads)}
        ref = ref + ((functional_call(model.learner.model, fast, (z_q,)) - tasks.y_query[i]) ** 2).mean()
    ref = ref / tasks.tasks
    torch.testing.assert_close(total, ref)
    theta = list(model.parameters())
    for a, b in zip(torch.autograd.grad(total, theta), torch.autograd.grad(ref, theta)):
        torch.testing.assert_close(a, b)


def test_kl_terms_enter_the_loss_with_beta():
    tasks = _tasks()
    for regularizer in ("weights", "activations"):
        model = mx.build(_settings(regularizer=regularizer, beta=0.5), 21)
        g = torch.Generator().manual_seed(0)
        total, parts = model.loss(tasks, g)
        torch.testing.assert_close(total.detach(), parts["loss"] + 0.5 * parts["kl"])
        assert float(parts["kl"]) > 0
    decayed = mx.build(_settings(weight_decay=0.1), 21)
    total, parts = decayed.loss(tasks)
    l2 = 0.5 * sum((p ** 2).sum() for p in decayed.encoder.body.parameters())
    torch.testing.assert_close(total.detach(), parts["loss"] + 0.1 * l2.detach())


def test_pac_bayes_beta_by_hand():
    n, k, delta = 100, 15, 0.05
    by_hand = (math.sqrt(1 / 28) + math.sqrt(1 / 198)) / (2 * math.sqrt(math.log(100 * 16 / 0.05)))
    assert abs(mr.pac_bayes_beta(n, k, delta) - by_hand) < 1e-12
    assert mr.pac_bayes_beta(1000, 15) < mr.pac_bayes_beta(100, 15), "more tasks, a smaller coefficient"
    with pytest.raises(ValueError, match="n_tasks >= 2"):
        mr.pac_bayes_beta(1, 15)


def test_a_model_that_ignores_its_support_scores_the_same_without_it():
    model = mx.build(_settings(method="cnp"), 21)
    with torch.no_grad():
        last = model.learner.context_net.net[-1]
        last.weight.zero_()
        last.bias.zero_()  # r = 0 whatever the context
    errors = mx.support_ablation(model, _tasks(8))
    torch.testing.assert_close(errors["true"], errors["shuffled"])
    torch.testing.assert_close(errors["true"], errors["none"])
    maml = mx.build(_settings(), 21)
    errors = mx.support_ablation(maml, _tasks(8))
    assert not torch.allclose(errors["true"], errors["shuffled"]), "MAML's adapted head does read the support set"


def test_settings_and_models_reject_impossible_values():
    with pytest.raises(ValueError, match="regularizer"):
        _settings(regularizer="dropout")
    with pytest.raises(ValueError, match="beta > 0"):
        _settings(beta=0.1)
    with pytest.raises(ValueError, match="method"):
        _settings(method="protonet")
    with pytest.raises(ValueError, match="MAML variants"):
        mx.MemorizationClassificationSettings(method="cnp")
    with pytest.raises(ValueError, match="inner_lr must be positive"):
        _settings(inner_lr=0.0)
    with pytest.raises(ValueError, match="test_inner_steps must be zero or positive"):
        _settings(test_inner_steps=-1)
    with pytest.raises(ValueError, match="regularizer"):
        mr.Encoder(MLP((2, 3)), 3, regularizer="bottleneck")
    with pytest.raises(ValueError, match="support"):
        mx.task_errors(mx.build(_settings(), 21), _tasks(), support="random")


def test_method_names_follow_the_paper():
    names = [_settings(**c).name() for c in (
        {}, {"regularizer": "weights"}, {"regularizer": "activations", "method": "cnp"}, {"inner_steps": 0},
        {"inner_steps": 0, "weight_decay": 1e-3}, {"method": "cnp", "weight_decay": 1e-3})]
    assert names == ["MAML", "MR-MAML (W)", "MR-CNP (A)", "FT", "FT + weight decay", "CNP + weight decay"]


def test_the_memorization_test_reads_the_interval_of_the_increase():
    g = torch.Generator().manual_seed(0)
    own = torch.rand(200, generator=g)
    assert mx.ignores_support(own, own + 0.01 * torch.randn(200, generator=g), margin=0.1)
    assert not mx.ignores_support(own, own + 1.0, margin=0.1)
    assert not mx.ignores_support(own, own + 0.09 + 0.3 * torch.randn(200, generator=g), margin=0.1), \
        "a mean increase just under the margin with a wide interval is not proof"
    with pytest.raises(ValueError, match="same tasks"):
        mx.ignores_support(own, own[:10], 0.1)


def test_fine_tuning_is_tuned_on_the_given_tasks():
    model = mx.build(_settings(inner_steps=0), 21)
    tasks = _tasks(16)
    errors = {}
    for lr in (1e-4, 1e-2):
        model.learner.inner_lr = lr
        for n in (0, 3):
            pred = model.predict(tasks.x_support, tasks.y_support, tasks.x_query, n)
            errors[(lr, n)] = float(((pred - tasks.y_query) ** 2).mean())
    lr, steps, mse = mx.tune_adaptation(model, tasks, lrs=(1e-4, 1e-2), steps=(0, 3))
    assert mse == pytest.approx(min(errors.values())) and errors[(lr, steps)] == pytest.approx(mse)
    assert model.learner.inner_lr == lr and model.test_inner_steps == steps
