"""PLATIPUS against independent references.

References: ``torch.distributions`` for the KL term and the Gaussians, sample moments with
tolerances from the sample size, the batched MAML core (PLATIPUS with no variance and no
gradient steps in its distributions is MAML), and a slow per-task loop through
``functional_call`` that shares no forward code with the batched learner.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from metaedu.algorithms import platipus as P
from metaedu.algorithms.maml_core import MAML, _key, task_loss
from metaedu.nn.backbones import MLP, Conv4
from metaedu.nn.functional import per_task, single_forward
from metaedu.runtime import seeded
from metaedu.tasks.regression import LinesOrSinesTasks, RegressionTasks

D = torch.float64


def lines_or_sines(tasks=3, k=5, q=6, seed=0) -> RegressionTasks:
    t = LinesOrSinesTasks(k, q, noise_std=0.1, seed=seed, support_range=(-1.0, 1.0)).sample(tasks)
    return RegressionTasks(t.x_support.to(D), t.y_support.to(D), t.x_query.to(D), t.y_query.to(D), t.params)


def learner(init_log_var=math.log(0.05), **kw) -> P.PLATIPUS:
    with seeded(0):
        model = MLP((1, 6, 5, 1), activation=nn.Tanh).double()
    out = P.PLATIPUS(model, "mse", inner_lr=0.05, init_log_var=init_log_var, **kw).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # distinct values per entry, so that a mixed-up name or shape shows
        for table in (out.log_sigma2, out.log_v_q, out.gamma_p, out.gamma_q):
            for p in table.values():
                p.add_(0.1 * torch.randn(p.shape, dtype=D, generator=g))
    return out


def test_kl_term_equals_torch_distributions():
    lrn, tasks = learner(), lines_or_sines()
    mean_q, log_v_q = lrn.posterior(tasks.x_query, tasks.y_query)
    mean_p, log_s2 = lrn.prior(tasks.x_support, tasks.y_support)
    ours = lrn.meta_loss(tasks, 1, kl_weight=1.0, generator=torch.Generator().manual_seed(0))[1]["kl"]
    reference = 0.0
    for n in lrn.names:
        q = Independent(Normal(mean_q[n], torch.exp(0.5 * log_v_q[n]).expand_as(mean_q[n])), log_v_q[n].dim())
        p = Independent(Normal(mean_p[n], torch.exp(0.5 * log_s2[n]).expand_as(mean_p[n])), log_s2[n].dim())
        reference = reference + kl_divergence(q, p)  # [tasks]
    torch.testing.assert_close(ours, reference.mean().detach())


def test_reparameterised_draws_have_the_requested_moments():
    n = 40000
    mean = {"w": torch.tensor([[0.5, -2.0, 3.0]], dtype=D)}  # [1 task, 3]
    log_var = {"w": torch.log(torch.tensor([0.25, 1.0, 4.0], dtype=D))}
    draws = P.PLATIPUS.draw(mean, log_var, n, torch.Generator().manual_seed(0))["w"]  # [n, 3]
    var = torch.exp(log_var["w"])
    # 5 standard errors: the mean's is sqrt(var / n), the variance's sqrt(2 var^2 / n) for a Gaussian
    assert ((draws.mean(0) - mean["w"][0]).abs() < 5 * torch.sqrt(var / n)).all()
    assert ((draws.var(0) - var).abs() < 5 * torch.sqrt(2 * var**2 / n)).all()
    # and they are differentiable in the mean and the variance (the reparameterisation)
    m = mean["w"].clone().requires_grad_()
    lv = log_var["w"].clone().requires_grad_()
    P.PLATIPUS.draw({"w": m}, {"w": lv}, 3, torch.Generator().manual_seed(1))["w"].sum().backward()
    assert m.grad is not None and lv.grad is not None and lv.grad.abs().sum() > 0


def test_draws_are_sample_major():
    mean = {"w": torch.tensor([[0.0], [100.0]], dtype=D)}  # task 0 near 0, task 1 near 100
    draws = P.PLATIPUS.draw(mean, {"w": torch.zeros(1, dtype=D)}, 4, torch.Generator().manual_seed(0))["w"]
    assert draws.shape == (8, 1)
    assert (draws[0::2].abs() < 10).all() and (draws[1::2] > 90).all()  # row s * tasks + t is task t


def test_without_variance_or_gradient_steps_the_meta_gradient_is_mamls():
    """sigma2, v_q -> 0 and gamma_p = gamma_q = 0: q = p = a point mass at mu, KL = 0, the loss is MAML's."""
    lrn, tasks = learner(init_log_var=-60.0, gamma_init=0.0), lines_or_sines()
    with torch.no_grad():
        for table in (lrn.log_sigma2, lrn.log_v_q):
            for p in table.values():
                p.fill_(-60.0)
        for table in (lrn.gamma_p, lrn.gamma_q):
            for p in table.values():
                p.zero_()
    loss, parts = lrn.meta_loss(tasks, 2, kl_weight=1.0, generator=torch.Generator().manual_seed(0))
    assert float(parts["kl"]) == pytest.approx(0.0, abs=1e-12)
    mu = list(lrn.maml.model.parameters())
    ours = torch.autograd.grad(loss, mu)
    maml = MAML(lrn.maml.model, "mse", inner_lr=0.05)  # the batched MAML core on the same weights
    reference = torch.autograd.grad(maml.meta_loss(tasks, 2)[0], mu)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def slow_meta_loss(lrn: P.PLATIPUS, tasks, steps: int, kl_weight: float, generator: torch.Generator):
    """Algorithm 1 one task at a time with functional_call (the reference). The noise is drawn in the
    package's order: one ``[1, tasks, *shape]`` block per parameter, in the model's order."""
    model, alpha = lrn.maml.model, lrn.maml.inner_lr
    mu = dict(model.named_parameters())
    T = tasks.x_support.shape[0]
    eps = {n: torch.randn((1, T, *p.shape), generator=generator, dtype=p.dtype)[0] for n, p in mu.items()}

    def loss_at(w, x, y):
        return task_loss(single_forward(model, w, x)[None], y[None], "mse")[0]

    total_test, total_kl = 0.0, 0.0
    for i in range(T):
        xs, ys, xq, yq = tasks.x_support[i], tasks.y_support[i], tasks.x_query[i], tasks.y_query[i]
        g_test = torch.autograd.grad(loss_at(mu, xq, yq), list(mu.values()), create_graph=True)
        g_train = torch.autograd.grad(loss_at(mu, xs, ys), list(mu.values()), create_graph=True)
        theta = {}
        kl = 0.0
        for (n, m), gt, gr in zip(mu.items(), g_test, g_train):
            mean_q = m - lrn.gamma_q[_key(n)] * gt
            mean_p = m - lrn.gamma_p[_key(n)] * gr
            std_q = torch.exp(0.5 * lrn.log_v_q[_key(n)])
            theta[n] = mean_q + std_q * eps[n][i]
            q = Normal(mean_q, std_q)
            p = Normal(mean_p, torch.exp(0.5 * lrn.log_sigma2[_key(n)]))
            kl = kl + kl_divergence(q, p).sum()
        for _ in range(steps):
            grads = torch.autograd.grad(loss_at(theta, xs, ys), list(theta.values()), create_graph=True)
            theta = {n: w - alpha * g for (n, w), g in zip(theta.items(), grads)}
        total_test = total_test + loss_at(theta, xq, yq)
        total_kl = total_kl + kl
    return total_test / T + kl_weight * total_kl / T


@pytest.mark.parametrize("steps", [1, 2])
def test_meta_loss_and_gradient_equal_a_slow_per_task_loop(steps):
    lrn, tasks = learner(), lines_or_sines(tasks=4)
    ours, _ = lrn.meta_loss(tasks, steps, kl_weight=0.3, generator=torch.Generator().manual_seed(5))
    reference = slow_meta_loss(lrn, tasks, steps, 0.3, torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, reference)
    params = list(lrn.parameters())
    for a, b in zip(torch.autograd.grad(ours, params), torch.autograd.grad(reference, params)):
        torch.testing.assert_close(a, b)


def test_every_part_of_theta_gets_a_meta_gradient():
    lrn, tasks = learner(), lines_or_sines()
    loss, _ = lrn.meta_loss(tasks, 1, kl_weight=0.1, generator=torch.Generator().manual_seed(0))
    loss.backward()
    for name, p in lrn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_sampled_models_are_algorithm_2():
    """Algorithm 2 by hand: theta ~ p(theta | D_tr), then one gradient step on D_tr."""
    lrn, tasks = learner(), lines_or_sines(tasks=2)
    phi = lrn.sample_models(tasks.x_support, tasks.y_support, 1, 3, torch.Generator().manual_seed(2))
    mean, log_var = lrn.prior(tasks.x_support, tasks.y_support, create_graph=False)
    g = torch.Generator().manual_seed(2)
    theta = {
        n: (
            m.detach() + torch.exp(0.5 * log_var[n].detach()) * torch.randn((3, *m.shape), generator=g, dtype=D)
        ).flatten(0, 1)
        for n, m in mean.items()
    }
    xs, ys = tasks.x_support.repeat(3, 1, 1), tasks.y_support.repeat(3, 1, 1)  # row s * tasks + t
    theta = {n: w.requires_grad_() for n, w in theta.items()}
    loss = sum(
        task_loss(single_forward(lrn.maml.model, {n: w[r] for n, w in theta.items()}, xs[r])[None], ys[r][None], "mse")[
            0
        ]
        for r in range(6)
    )
    grads = torch.autograd.grad(loss, list(theta.values()))
    for (n, w), gr in zip(theta.items(), grads):
        torch.testing.assert_close(phi[n], (w - 0.05 * gr).detach())
    out = lrn.predict_samples(tasks.x_support, tasks.y_support, tasks.x_query, 1, 3, torch.Generator().manual_seed(2))
    assert out.shape == (3, 2, tasks.x_query.shape[1], 1)
    assert out.std(0).mean() > 0  # the samples differ


def test_maml_plus_noise_without_noise_is_maml():
    with seeded(0):
        maml = MAML(MLP((1, 8, 1)).double(), "mse", inner_lr=0.05)
    tasks = lines_or_sines()
    phi = P.noisy_maml_models(maml, tasks.x_support, tasks.y_support, 2, 3, 0.0)
    out = P.forward_samples(maml, phi, tasks.x_query)  # [3, tasks, q, 1]
    reference = maml.predict(tasks.x_support, tasks.y_support, tasks.x_query, 2)
    for s in range(3):
        torch.testing.assert_close(out[s], reference)
    noisy = P.forward_samples(
        maml,
        P.noisy_maml_models(maml, tasks.x_support, tasks.y_support, 2, 3, 0.1, torch.Generator().manual_seed(0)),
        tasks.x_query,
    )
    assert (noisy[0] - noisy[1]).abs().max() > 1e-3


def test_adapt_from_a_given_start_equals_adapting_theta():
    with seeded(0):
        maml = MAML(MLP((1, 8, 1)).double(), "mse", inner_lr=0.05)
    tasks = lines_or_sines()
    start = per_task(dict(maml.model.named_parameters()), tasks.x_support.shape[0])
    a = maml.adapt(tasks.x_support, tasks.y_support, 2, create_graph=False)
    b = maml.adapt(tasks.x_support, tasks.y_support, 2, create_graph=False, start=start)
    for n in a:
        torch.testing.assert_close(a[n], b[n])
    with pytest.raises(ValueError, match="start must hold every parameter"):
        maml.adapt(tasks.x_support, tasks.y_support, 1, start={"net.0.weight": start["net.0.weight"]})


def test_conv4_classifier_samples_for_every_task_and_sample_at_once():
    with seeded(0):
        lrn = P.PLATIPUS(Conv4(1, 4, 2, track_running_stats=False, image_size=16), "cross_entropy", inner_lr=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, 1, 16, 16, generator=g)
    y = torch.tensor([0, 0, 1, 1]).expand(3, -1)
    logits = lrn.predict_samples(x, y, torch.rand(3, 5, 1, 16, 16, generator=g), 1, 2, g)
    assert logits.shape == (2, 3, 5, 2)


def test_meta_training_lowers_the_loss():
    settings = P.LinesOrSinesSettings(hidden=(20, 20), steps=150, outer_lr=0.01, meta_batch=8, kl_weight=0.03)
    lrn = P.regression_learner(settings)
    sampler = LinesOrSinesTasks(
        settings.k_shot, settings.n_query, settings.noise_std, seed=0, support_range=settings.support_range
    )
    history = P.meta_train(lrn, sampler, settings, torch.Generator().manual_seed(0), progress=False)
    first, last = sum(history["test_loss"][:20]) / 20, sum(history["test_loss"][-20:]) / 20
    assert last < 0.8 * first


def test_meta_training_checkpoints_and_resumes(tmp_path):
    settings = P.LinesOrSinesSettings(hidden=(8, 8), steps=6, meta_batch=2)

    def run(steps):
        lrn = P.regression_learner(settings)
        sampler = LinesOrSinesTasks(5, 10, 0.3, seed=0, support_range=settings.support_range)
        P.meta_train(
            lrn,
            sampler,
            replace(settings, steps=steps),
            torch.Generator().manual_seed(0),
            checkpoint=tmp_path / "p.pt",
            progress=False,
        )
        return lrn

    run(3)
    resumed = run(6)
    (tmp_path / "p.pt").unlink()
    straight = run(6)
    for a, b in zip(resumed.parameters(), straight.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "field,value",
    [
        ("kl_weight", -0.1),
        ("inner_lr", 0.0),
        ("test_inner_steps", 0),
        ("n_samples", 0),
        ("support_range", (1.0, -1.0)),
        ("noise_std", -1.0),
    ],
)
def test_regression_settings_reject_impossible_values(field, value):
    with pytest.raises(ValueError, match=field):
        P.LinesOrSinesSettings(**{field: value})


@pytest.mark.parametrize(
    "field,value",
    [("encoder", "pixels"), ("image_size", 8), ("noise_stds", ()), ("kl_weight", -1.0), ("eval_query", 0)],
)
def test_glyph_settings_reject_impossible_values(field, value):
    with pytest.raises(ValueError, match=field):
        P.AmbiguousGlyphSettings(**{field: value})


def test_presets_are_valid():
    for cls in (P.LinesOrSinesSettings, P.AmbiguousGlyphSettings):
        cls.quick(), cls.full()
    assert P.AmbiguousGlyphSettings.full().encoder == "none"  # the paper: a Conv4 on the pixels


def test_reference_checkpoint_reproduces_its_recorded_score():
    """The shipped lines-or-sines checkpoint (lecture 08) reloads and scores what its record says."""
    from metaedu.algorithms.platipus import reference as ref

    platipus, maml, settings, record = ref.load()
    assert record["command"] == ref.COMMAND and record["steps"] == ref.REFERENCE_STEPS
    recorded = {k: tuple(v) if isinstance(v, list) else v for k, v in record["settings"].items()}
    assert recorded == ref.settings_record(ref.reference_settings()), "the checkpoint was built with other settings"
    again = ref.score(platipus, maml, settings, n_tasks=record["score"]["n_tasks"])
    for key in ("both_kinds", "both_kinds_any_fit", "platipus_mse", "maml_mse"):
        assert again[key]["mean"] == pytest.approx(record["score"][key]["mean"], rel=1e-4, abs=1e-4), key
    for kind, share in record["score"]["kind_shares"].items():
        assert again["kind_shares"][kind] == pytest.approx(share, abs=1e-6), kind


@pytest.mark.slow
def test_the_stored_glyph_choice_is_what_the_validation_script_chooses():
    """scripts/choose_platipus_settings.py glyphs, rerun: the quick preset holds its choice (about 2 min of CPU)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "choose_platipus_settings.py"
    spec = importlib.util.spec_from_file_location("choose_platipus_settings", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    inner_lr, kl_weight = script.choose_glyphs(verbose=False)
    quick = P.AmbiguousGlyphSettings.quick()
    assert (quick.inner_lr, quick.kl_weight) == (inner_lr, kl_weight)
