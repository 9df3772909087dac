"""ARML for images and its heterogeneous episode families, against independent references.

* With the gate fixed to 1 and the reconstruction losses off, ARML's meta-gradient on theta_0 is MAML's
  (the batched core on the same Conv4) and that of the slow per-task loop of lecture 06.
* With everything on, the whole objective's gradient matches a central finite difference.
* Prototypes are class means computed in a loop, one episode at a time (so no episode's prototypes
  depend on the others of its batch), and the task representation ignores the support set's order.
* The family sampler: negative glyphs are the glyphs' inverses, the digit sides share no image, a seed
  gives the same episodes, bad input is named.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from metaedu.algorithms import arml_images as ai
from metaedu.algorithms.maml import MAML, per_task_meta_loss
from metaedu.runtime import preset
from metaedu.tasks.episodes import Episodes
from metaedu.tasks.image_families import FAMILIES, ImageFamilies, family_sets

D = torch.float64


def small(**changes) -> ai.ARMLImageSettings:
    base = dict(hidden=3, embed_hidden=2, embed_dim=5, code=4, vertices=3, n_way=3, inner_lr=0.1, inner_steps=2)
    return replace(preset(ai.ARMLImageSettings, "quick"), **{**base, **changes})


@pytest.fixture(scope="module")
def episodes() -> Episodes:
    eps = ImageFamilies("background", n_way=3, k_shot=2, n_query=2, seed=0).sample(4)
    return Episodes(eps.x_support.to(D), eps.y_support, eps.x_query.to(D), eps.y_query, eps.classes, 3, 2, 2)


def model(settings=None, seed=0) -> ai.ARMLClassifier:
    return ai.build(settings or small(), seed=seed).double()


def test_without_gate_and_auxiliary_losses_the_meta_gradient_is_mamls(episodes):
    net = model(small(modulate=False, aux_weight=0.0))
    loss, _, aux = net.meta_loss(episodes, steps=2)
    assert aux == 0
    ours = torch.autograd.grad(loss, list(net.learner.model.parameters()))
    maml = MAML(ai.maml_baseline(small()).model.double(), "cross_entropy", net.settings.inner_lr)
    maml.model.load_state_dict(net.learner.model.state_dict())
    batched = torch.autograd.grad(maml.meta_loss(episodes, 2)[0], list(maml.model.parameters()))
    slow = torch.autograd.grad(per_task_meta_loss(maml, episodes, 2), list(maml.model.parameters()))
    for a, b, c in zip(ours, batched, slow):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
    # and with the gate on, the objective differs (the test above could fail)
    gated = model(small(aux_weight=0.0))
    gated.load_state_dict(net.state_dict())
    assert not torch.isclose(gated.meta_loss(episodes, 2)[0], loss)


def test_the_whole_objective_has_the_finite_difference_gradient(episodes):
    net = model(small(aux_weight=0.5, inner_steps=1))
    params = list(net.parameters())
    loss = net.meta_loss(episodes, steps=1)[0]
    grads = torch.autograd.grad(loss, params)
    g = torch.Generator().manual_seed(2)
    direction = [torch.randn(p.shape, generator=g, dtype=D) for p in params]
    analytic = sum((gr * v).sum() for gr, v in zip(grads, direction))
    eps = 1e-6

    def shifted(sign):
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.add_(sign * eps * v)
        value = net.meta_loss(episodes, steps=1)[0].item()
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.sub_(sign * eps * v)
        return value

    numeric = (shifted(1) - shifted(-1)) / (2 * eps)
    assert analytic.item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    for name in ("gate", "vertices", "passing", "ag_t", "ag_q", "encoder", "project", "proto_relation"):
        used = [gr for (n, _), gr in zip(net.named_parameters(), grads) if n.startswith(name)]
        assert any(gr.abs().sum() > 0 for gr in used), f"{name} gets no gradient"


def test_prototypes_are_class_means_of_each_episode_alone(episodes):
    net = model()
    c, onehot = net.prototypes(episodes.x_support, episodes.y_support)
    assert c.shape == (4, 3, 5)
    for t in range(4):
        alone = net.embed(episodes.x_support[t : t + 1])[0]  # this episode without the others
        for k in range(3):
            torch.testing.assert_close(c[t, k], alone[episodes.y_support[t] == k].mean(0))
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(7))
    r, aux = net.task_representation(episodes.x_support, episodes.y_support)
    r2, aux2 = net.task_representation(episodes.x_support[:, perm], episodes.y_support[:, perm])
    torch.testing.assert_close(r, r2)
    torch.testing.assert_close(aux, aux2)
    with pytest.raises(ValueError, match="support image"):
        net.prototypes(episodes.x_support, torch.zeros_like(episodes.y_support))


def test_the_scaled_baseline_starts_where_an_untrained_gate_puts_theta(episodes):
    net = ai.build(replace(preset(ai.ARMLImageSettings, "quick"), n_way=3)).double()  # the quick widths
    with torch.no_grad():
        gates = torch.sigmoid(net.gate(net.task_representation(episodes.x_support, episodes.y_support)[0]))
    assert abs(float(gates.mean()) - 0.5) < 0.02 and float((gates - 0.5).abs().quantile(0.9)) < 0.15  # about 1/2
    half, plain = ai.maml_baseline(small(), scale=0.5), ai.maml_baseline(small())
    for a, b in zip(half.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, 0.5 * b)
    with pytest.raises(ValueError, match="scale"):
        ai.maml_baseline(small(), scale=0.0)


def test_settings_reject_impossible_values():
    with pytest.raises(ValueError, match="n_way"):
        ai.ARMLImageSettings(n_way=1)
    with pytest.raises(ValueError, match="vertices"):
        ai.ARMLImageSettings(vertices=0)


def test_families_are_what_the_docstring_says():
    sets = family_sets("evaluation")
    assert all(not g.startswith("Invented") for g in sets["font glyphs"].groups)
    assert all(g.startswith("Invented") for g in sets["invented glyphs"].groups)
    background, evaluation = family_sets("background")["digits"], sets["digits"]
    assert background.n_classes == evaluation.n_classes == 10
    flat = lambda s: {bytes(im.numpy().tobytes()) for im in s.images}  # noqa: E731
    assert not flat(background) & flat(evaluation)  # new drawings of the same ten digits
    # every negative-glyph image is the inverse of an image of the side's glyphs
    negative = ImageFamilies("evaluation", 5, 1, 2, families=("negative glyphs",), seed=3).sample(2)
    inverted = ((1 - negative.x_support.flatten(0, 1)) * 255).round().to(torch.uint8)
    assert {bytes(im.numpy().tobytes()) for im in inverted} <= flat(sets["negative glyphs"])
    assert (negative.family == 0).all()


def test_the_mixture_is_seeded_and_keeps_each_episode_with_its_family():
    a = ImageFamilies("background", 5, 1, 3, seed=11).sample(12)
    b = ImageFamilies("background", 5, 1, 3, seed=11).sample(12)
    torch.testing.assert_close(a.x_query, b.x_query)
    assert a.x_support.shape == (12, 5, 1, 28, 28) and a.family.shape == (12,)
    assert set(a.family.tolist()) <= set(range(len(FAMILIES))) and len(set(a.family.tolist())) > 1
    bright = a.x_support.mean((1, 2, 3, 4))  # negative glyphs are mostly ink-coloured paper: bright on average
    negative = a.family == FAMILIES.index("negative glyphs")
    assert negative.any() and (bright[negative] > 0.5).all() and (bright[~negative] < 0.5).all()
    with pytest.raises(ValueError, match="families"):
        ImageFamilies("background", families=("birds",))
    with pytest.raises(ValueError, match="side"):
        family_sets("test")
