"""Prototypical Networks: prototypes, distances, the episode loss, the linear-layer view, training, zero-shot."""

from __future__ import annotations

import pytest
import torch

from metaedu.algorithms import protonet
from metaedu.data.embedded import embed_set
from metaedu.tasks.episodes import EpisodeSampler


def tiny(**overrides) -> protonet.ProtoNetSettings:
    base = dict(hidden=16, train_way=10, train_shot=1, train_query=3, steps=30, lr=3e-3, lr_halve_every=1000,
                rotations=(0,), eval_episodes=60, eval_query=3)
    base.update(overrides)
    return protonet.ProtoNetSettings(**base)


def test_prototypes_are_class_means_in_any_order():
    g = torch.Generator().manual_seed(0)
    tasks, n_way, shots, dim = 3, 4, 5, 6
    y = torch.stack([torch.randperm(n_way * shots, generator=g) % n_way for _ in range(tasks)])  # shuffled labels
    z = torch.randn(tasks, n_way * shots, dim, generator=g)
    c = protonet.prototypes(z, y, n_way)
    assert c.shape == (tasks, n_way, dim)
    for t in range(tasks):  # slow reference: one class at a time
        for k in range(n_way):
            torch.testing.assert_close(c[t, k], z[t][y[t] == k].mean(0))


def test_prototypes_need_every_class():
    z = torch.randn(1, 4, 3)
    with pytest.raises(ValueError, match="support example"):
        protonet.prototypes(z, torch.tensor([[0, 0, 1, 1]]), n_way=3)
    with pytest.raises(ValueError, match="labels must lie"):
        protonet.prototypes(z, torch.tensor([[0, 1, 2, 5]]), n_way=3)


def test_euclidean_and_cosine_logits_against_loops():
    g = torch.Generator().manual_seed(1)
    zq, c = torch.randn(2, 7, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    euc = protonet.prototype_logits(zq, c, "euclidean")
    cos = protonet.prototype_logits(zq, c, "cosine", cosine_scale=4.0)
    for t in range(2):
        for i in range(7):
            for k in range(3):
                d = float(((zq[t, i] - c[t, k]) ** 2).sum())
                assert euc[t, i, k].item() == pytest.approx(-d, rel=1e-5)
                cs = float(torch.nn.functional.cosine_similarity(zq[t, i], c[t, k], dim=0))
                assert cos[t, i, k].item() == pytest.approx(4.0 * cs, rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="distance"):
        protonet.prototype_logits(zq, c, "manhattan")
    with pytest.raises(ValueError, match="distance"):
        protonet.ProtoNetSettings(distance="manhattan")


def test_episode_loss_is_the_slides_formula():
    g = torch.Generator().manual_seed(2)
    n_way, n_query = 4, 3
    zq, c = torch.randn(1, n_way * n_query, 6, generator=g), torch.randn(1, n_way, 6, generator=g)
    y = torch.arange(n_way).repeat_interleave(n_query)[None]
    loss = protonet.episode_loss(protonet.prototype_logits(zq, c), y)
    total = 0.0
    for i in range(n_way * n_query):  # J += [d(f(x), c_y) + log sum_k exp(-d(f(x), c_k))] / (N_C N_Q)
        d = ((zq[0, i] - c[0]) ** 2).sum(-1)
        total += float(d[y[0, i]] + torch.logsumexp(-d, 0)) / (n_way * n_query)
    assert loss.item() == pytest.approx(total, rel=1e-5)


def test_euclidean_prototypes_are_a_linear_layer():
    g = torch.Generator().manual_seed(3)
    zq, c = torch.randn(2, 9, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    W, b = protonet.as_linear_layer(c)
    torch.testing.assert_close(W, 2 * c)
    linear = zq @ W.transpose(1, 2) + b[:, None, :]  # [tasks, n_query, n_way]
    distance = protonet.prototype_logits(zq, c, "euclidean")
    # they differ by ||z||^2 for each query, the same for every class ...
    torch.testing.assert_close(linear - distance, zq.pow(2).sum(-1, keepdim=True).expand_as(linear), rtol=1e-4, atol=1e-4)
    # ... so the class probabilities are the same
    torch.testing.assert_close(torch.softmax(linear, -1), torch.softmax(distance, -1), rtol=1e-5, atol=1e-6)


def test_forward_shapes(glyphs):
    data = glyphs.split("evaluation")
    model = protonet.ProtoNet(tiny())
    eps = EpisodeSampler(data, 5, 2, 3, seed=0).sample(4)
    logits = model(eps)
    assert logits.shape == (4, 15, 5)
    assert torch.isfinite(logits).all()


@pytest.fixture(scope="module")
def trained(glyphs):
    torch.manual_seed(0)
    return protonet.train_protonet(tiny(), glyphs.split("background"), progress=False, seed=0)


def test_training_lowers_the_loss_and_beats_chance(trained, glyphs):
    model, history = trained
    loss = history["loss"]
    assert sum(loss[-5:]) / 5 < 0.7 * sum(loss[:5]) / 5
    data = glyphs.split("evaluation")
    score = protonet.evaluate(model, data, 5, 1, n_episodes=60)
    torch.manual_seed(0)
    untrained = protonet.evaluate(protonet.ProtoNet(tiny()), data, 5, 1, n_episodes=60)
    assert score.mean - score.ci95 > 40.0  # chance is 20%
    assert score.mean > untrained.mean + 10.0  # and the training, not the random CNN, made the difference


def test_embedded_evaluation_equals_image_evaluation(trained, glyphs):
    model, _ = trained
    data = glyphs.split("evaluation")
    data = data.subset_classes(range(60))
    on_images = protonet.evaluate(model, data, 5, 1, n_query=2, n_episodes=20, seed=3)
    on_features = protonet.evaluate(model, embed_set(model.encoder, data), 5, 1, n_query=2, n_episodes=20, seed=3)
    assert on_images.mean == pytest.approx(on_features.mean)
    other = protonet.ProtoNet(tiny())
    with pytest.raises(ValueError, match="different encoder"):
        protonet.evaluate(other, embed_set(model.encoder, data), 5, 1, n_episodes=2)


def test_zero_shot_beats_chance(trained, glyphs):
    model, _ = trained
    settings = protonet.ZeroShotSettings(steps=60, tasks=2, train_way=20, eval_episodes=100)
    meta_bg, meta_ev = glyphs.descriptors("background"), glyphs.descriptors("evaluation")
    background = glyphs.split("background")
    background = background.subset_classes(range(0, background.n_classes, 2))  # every other class, to stay quick
    zs, history = protonet.train_zero_shot(settings, model.encoder, background, meta_bg[0::2], progress=False)
    assert sum(history["loss"][-5:]) < sum(history["loss"][:5])
    # the image encoder stayed fixed
    assert not any(p.requires_grad for p in zs.encoder.parameters())
    evaluation = glyphs.split("evaluation")
    evaluation = evaluation.subset_classes(range(0, evaluation.n_classes, 3))
    score = protonet.evaluate_zero_shot(zs, evaluation, meta_ev[0::3], n_way=5)
    assert score.mean - score.ci95 > 25.0  # chance is 20%, and no support image was used
    with pytest.raises(ValueError, match="one row per class"):
        protonet.evaluate_zero_shot(zs, evaluation, meta_ev, n_way=5)


# ----------------------------------------------------------------------------- zero-shot, on a known answer


def test_zero_shot_prototypes_follow_the_definition():
    from metaedu.runtime import seeded

    g = torch.Generator().manual_seed(4)
    meta = torch.randn(9, 4, generator=g)
    meta[:, 3] = 1.0  # an entry that never varies among the training classes carries nothing: scale 0
    with seeded(0):
        model = protonet.ZeroShotProtoNet(protonet.ZeroShotSettings(embed_dim=3, meta_hidden=5), torch.nn.Identity(),
                                          image_dim=6, meta_dim=4, meta_mean=meta.mean(0), meta_std=meta.std(0))
    v = torch.randn(2, 5, 4, generator=g)
    c = model.class_prototypes(v)
    torch.testing.assert_close(c.norm(dim=-1), torch.ones(2, 5))  # unit length
    shifted = v.clone()
    shifted[..., 3] += 7.0
    torch.testing.assert_close(model.class_prototypes(shifted), c)  # the constant entry is ignored
    feats = torch.randn(2, 3, 6, generator=g)
    logits = model.logits_from_features(feats, v)
    for t in range(2):
        for i in range(3):
            for k in range(5):
                d = ((model.image_map(feats[t, i]) - c[t, k]) ** 2).sum()
                assert logits[t, i, k].item() == pytest.approx(-d.item(), rel=1e-5, abs=1e-6)


def test_zero_shot_learns_a_linear_relation_between_metadata_and_images():
    """Known answer: when each class's image features are a fixed linear function of its metadata
    (plus noise), prototypes made from metadata alone classify new classes almost perfectly."""
    from metaedu.data.base import ClassImageSet

    g = torch.Generator().manual_seed(5)
    n_classes, per_class, v_dim, f_dim = 60, 6, 5, 8
    meta = torch.randn(n_classes, v_dim, generator=g)
    mixing = torch.randn(v_dim, f_dim, generator=g)
    feats = (meta @ mixing).repeat_interleave(per_class, 0) + 0.05 * torch.randn(n_classes * per_class, f_dim,
                                                                                    generator=g)
    images = feats[:, :, None, None]  # [N, f_dim, 1, 1]: "images" whose encoder is a flatten
    data = ClassImageSet(images, torch.arange(n_classes).repeat_interleave(per_class),
                         [str(c) for c in range(n_classes)])
    train, test = data.subset_classes(range(40)), data.subset_classes(range(40, 60))
    settings = protonet.ZeroShotSettings(embed_dim=8, meta_hidden=32, train_way=10, train_query=3, tasks=4,
                                         steps=300, lr=1e-2, weight_decay=0.0, eval_episodes=100, eval_query=3)
    model, _ = protonet.train_zero_shot(settings, torch.nn.Flatten(), train, meta[:40], progress=False)
    score = protonet.evaluate_zero_shot(model, test, meta[40:], n_way=5)
    assert score.mean > 90.0, score  # chance is 20%; no support image was used
