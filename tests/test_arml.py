"""ARML against independent references.

* With the gate fixed to 1 and the reconstruction losses off, ARML's meta-gradient on theta_0 is
  MAML's (the batched core) and that of the slow per-task loop of lecture 06.
* With everything on, the gradient of the whole objective (graphs, autoencoders, gate) matches a
  central finite difference along a random direction.
* A_S is the posterior over vertices of an isotropic Gaussian mixture (``torch.distributions``);
  A_R, A_G, message passing and the prototypes equal loops over their definitions.
* The task representation does not depend on the order of the support points.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.distributions import MultivariateNormal

from metaedu.algorithms import arml
from metaedu.algorithms.maml import MAML, per_task_meta_loss
from metaedu.nn.functional import parameter_dict, per_task
from metaedu.runtime import preset
from metaedu.tasks.regression import RegressionTasks
from metaedu.tasks.regression2d import FamilyTasks

D = torch.float64


def small(**changes) -> arml.ARMLSettings:
    base = dict(
        hidden=(6, 5),
        embed_dim=7,
        code=4,
        prototypes=3,
        vertices=4,
        inner_lr=0.02,
        inner_steps=2,
        meta_batch=5,
        steps=10,
    )
    return replace(preset(arml.ARMLSettings, "quick"), **{**base, **changes})


def family_tasks(tasks=5, seed=0, dtype=D) -> RegressionTasks:
    t = FamilyTasks(k_shot=6, n_query=5, seed=seed).sample(tasks)
    return RegressionTasks(
        t.x_support.to(dtype), t.y_support.to(dtype), t.x_query.to(dtype), t.y_query.to(dtype), t.params
    )


def model(settings=None, seed=0) -> arml.ARML:
    return arml.build(settings or small(), seed=seed).double()


# ----------------------------------------------------------------------------- reduction to MAML


def test_without_gate_and_auxiliary_losses_the_meta_gradient_is_mamls():
    net = model(small(modulate=False, aux_weight=0.0))
    tasks = family_tasks()
    loss, _, aux = net.meta_loss(tasks, steps=2)
    assert aux == 0
    theta = list(net.learner.model.parameters())
    ours = torch.autograd.grad(loss, theta)
    # the plain batched MAML core on a copy of theta_0
    maml = MAML(arml.build(small(), seed=0).learner.model.double(), "mse", net.settings.inner_lr)
    maml.model.load_state_dict(net.learner.model.state_dict())
    batched = torch.autograd.grad(maml.meta_loss(tasks, 2)[0], list(maml.model.parameters()))
    slow = torch.autograd.grad(per_task_meta_loss(maml, tasks, 2), list(maml.model.parameters()))
    for a, b, c in zip(ours, batched, slow):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
    torch.testing.assert_close(loss, maml.meta_loss(tasks, 2)[0])


def test_the_whole_objective_has_the_finite_difference_gradient():
    net = model(small(aux_weight=0.5, mp_layers=2))  # with one layer A_G cannot reach the prototypes (below)
    tasks = family_tasks(seed=1)
    params = list(net.parameters())
    loss = net.meta_loss(tasks, steps=2)[0]
    grads = torch.autograd.grad(loss, params)
    g = torch.Generator().manual_seed(2)
    direction = [torch.randn(p.shape, generator=g, dtype=D) for p in params]
    analytic = sum((gr * v).sum() for gr, v in zip(grads, direction))
    eps = 1e-6

    def shifted(sign):
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.add_(sign * eps * v)
        value = net.meta_loss(tasks, steps=2)[0].item()
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.sub_(sign * eps * v)
        return value

    numeric = (shifted(1) - shifted(-1)) / (2 * eps)
    assert analytic.item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    for name in ("gate", "vertices", "passing", "ag_t", "ag_q", "assign", "proto_relation", "vertex_relation"):
        used = [gr for (n, _), gr in zip(net.named_parameters(), grads) if n.startswith(name)]
        assert any(gr.abs().sum() > 0 for gr in used), f"{name} gets no gradient"


def test_with_one_message_passing_layer_the_knowledge_graphs_edges_do_not_matter():
    net = model(small(mp_layers=1))
    tasks = family_tasks(tasks=2, seed=12)
    r, _ = net.task_representation(tasks.x_support, tasks.y_support)
    with torch.no_grad():
        net.vertex_relation.weight.normal_()
        net.vertex_relation.bias.fill_(3.0)
    torch.testing.assert_close(net.task_representation(tasks.x_support, tasks.y_support)[0], r)


def test_start_at_theta_is_plain_maml_and_a_bad_start_is_named():
    net = model()
    tasks = family_tasks(tasks=3, seed=3)
    theta = per_task(parameter_dict(net.learner.model), 3)
    a = net.learner.adapt(tasks.x_support, tasks.y_support, 2, start=theta)
    b = net.learner.adapt(tasks.x_support, tasks.y_support, 2)
    for n in a:
        torch.testing.assert_close(a[n], b[n])
    with pytest.raises(ValueError, match="start"):
        net.learner.adapt(tasks.x_support, tasks.y_support, 1, start={k: v[:2] for k, v in theta.items()})


# ----------------------------------------------------------------------------- the pieces, by definition


def test_super_graph_similarity_is_a_gaussian_mixtures_posterior():
    g = torch.Generator().manual_seed(4)
    c, h, gamma = torch.randn(3, 2, 5, generator=g, dtype=D), torch.randn(4, 5, generator=g, dtype=D), 1.7
    a_s = arml.super_graph_similarity(c, h, gamma)
    log_p = torch.stack([MultivariateNormal(h[k], gamma**2 * torch.eye(5, dtype=D)).log_prob(c) for k in range(4)], -1)
    torch.testing.assert_close(a_s, torch.softmax(log_p, -1))


def test_relational_and_knowledge_graphs_and_message_passing_equal_loops():
    net = model()
    g = torch.Generator().manual_seed(5)
    c = torch.randn(2, 3, 7, generator=g, dtype=D)
    a_r = net.relational_graph(c)
    w, b = net.proto_relation.weight[0], net.proto_relation.bias[0]
    for t in range(2):
        for j in range(3):
            for m in range(3):
                want = 0.0 if j == m else torch.sigmoid(w @ (c[t, j] - c[t, m]).abs() / net.settings.gamma_r + b)
                torch.testing.assert_close(a_r[t, j, m], torch.as_tensor(want, dtype=D))
    a_g = net.knowledge_graph()
    torch.testing.assert_close(a_g, a_g.T)
    assert (a_g.diagonal() == 0).all() and a_g.shape == (4, 4)
    a, h, a_s = net.super_graph(c)
    assert a.shape == (2, 7, 7) and h.shape == (2, 7, 7)
    torch.testing.assert_close(a[:, :3, :3], a_r)
    torch.testing.assert_close(a[:, :3, 3:], a_s)
    torch.testing.assert_close(a[:, 3:, :3], a_s.transpose(1, 2))
    torch.testing.assert_close(a[0, 3:, 3:], a_g)
    out = arml.message_passing(a, h, net.passing[0])
    layer = net.passing[0]
    for t in range(2):
        for i in range(7):
            weights = a[t, i] + torch.eye(7, dtype=D)[i]
            mixed = sum(weights[j] * h[t, j] for j in range(7)) / weights.sum()
            torch.testing.assert_close(out[t, i], torch.tanh(layer.weight @ mixed + layer.bias))


def test_prototypes_are_assignment_weighted_means_and_order_free():
    net = model()
    tasks = family_tasks(tasks=2, seed=6)
    c, p = net.prototypes(tasks.x_support, tasks.y_support)
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:2], dtype=D))
    f = net.sample_embed(torch.cat([tasks.x_support, tasks.y_support], -1))
    for t in range(2):
        for k in range(net.settings.prototypes):
            weights = p[t, :, k] / p[t, :, k].sum()  # the weighted mean of the cluster's samples
            torch.testing.assert_close(c[t, k], sum(weights[j] * f[t, j] for j in range(6)))
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(7))
    r, aux = net.task_representation(tasks.x_support, tasks.y_support)
    r2, aux2 = net.task_representation(tasks.x_support[:, perm], tasks.y_support[:, perm])
    torch.testing.assert_close(r, r2)
    torch.testing.assert_close(aux, aux2)


def test_initialisation_is_the_gate_times_theta():
    net = model()
    rep = torch.randn(3, 2 * net.settings.code, generator=torch.Generator().manual_seed(8), dtype=D)
    start = net.initialisation(rep)
    gates = torch.sigmoid(net.gate(rep))  # [3, |theta|]
    flat = torch.cat([start[n].flatten(1) for n in net.shapes], 1)
    theta = torch.cat([p.flatten() for p in net.learner.model.parameters()])
    torch.testing.assert_close(flat, gates * theta)
    plain = model(small(modulate=False)).initialisation(rep)
    for n, p in net.learner.model.named_parameters():
        torch.testing.assert_close(plain[n], p.expand(3, *p.shape))


def test_reconstruction_loss_is_the_mean_squared_error_of_both_autoencoders():
    net = model(small(aux_weight=0.3))
    tasks = family_tasks(tasks=2, seed=9)
    _, aux = net.task_representation(tasks.x_support, tasks.y_support)
    c, _ = net.prototypes(tasks.x_support, tasks.y_support)
    c_hat = net.propagated(c)
    want = sum(((x - ag.decode(ag.encode(x))) ** 2).mean((1, 2)) for x, ag in ((c, net.ag_q), (c_hat, net.ag_t)))
    torch.testing.assert_close(aux, 0.3 * want)


# ----------------------------------------------------------------------------- training and scoring


def test_training_lowers_the_query_mse_and_scores_are_paired():
    s = small(steps=60, meta_batch=8, outer_lr=0.01, inner_lr=0.01)
    net = arml.build(s, seed=0)
    history = arml.train_arml(net, FamilyTasks(seed=0), s, progress=False)
    assert set(history.metrics) >= {"loss", "mse", "reconstruction"}
    first, last = sum(history["mse"][:10]) / 10, sum(history["mse"][-10:]) / 10
    assert last < 0.8 * first, f"query MSE {first:.2f} -> {last:.2f}"
    tasks = FamilyTasks(seed=11).sample(20)
    mse = arml.query_mse(net, tasks, 2)
    assert mse.shape == (20,) and torch.isfinite(mse).all()
    baseline = arml.maml_baseline(s, seed=0)
    assert arml.query_mse(baseline, tasks, 2).shape == (20,)
    usage = net.vertex_usage(tasks.x_support, tasks.y_support)
    torch.testing.assert_close(usage.sum(-1), torch.ones(20))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="vertices"):
        small(vertices=0)
    with pytest.raises(ValueError, match="aux_weight"):
        small(aux_weight=-1.0)
