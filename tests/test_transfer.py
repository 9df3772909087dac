"""Transfer baselines (pixel and pretrained-feature nearest neighbour), against brute force and known values."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from metaedu.algorithms import transfer
from metaedu.runtime import preset
from metaedu.tasks.episodes import EpisodeSampler
from tiny_data import tiny_images


def brute_force_labels(z_support, y_support, z_query, cosine: bool):
    """One query at a time: the support item at the smallest distance (or largest cosine)."""
    out = torch.empty(z_query.shape[:2], dtype=torch.long)
    for t in range(z_query.shape[0]):
        for q in range(z_query.shape[1]):
            if cosine:
                score = torch.stack([F.cosine_similarity(z_query[t, q], s, dim=0) for s in z_support[t]])
                best = int(score.argmax())
            else:
                best = int(torch.stack([((z_query[t, q] - s) ** 2).sum() for s in z_support[t]]).argmin())
            out[t, q] = y_support[t, best]
    return out


def test_pixel_nearest_neighbour_is_brute_force_on_pixels():
    eps = EpisodeSampler(tiny_images(), 5, 2, 3, seed=1).sample(4)
    expected = brute_force_labels(eps.x_support.flatten(2), eps.y_support, eps.x_query.flatten(2), cosine=False)
    assert torch.equal(transfer.pixel_nearest_neighbour(eps), expected)
    assert (expected == eps.y_query).float().mean() > 0.9  # noisy copies of distinct prototypes: nearly all right


def test_pretrained_classifier_learns_its_classes_and_its_features_feed_cosine_nn():
    data = tiny_images(n_classes=8, per_class=8)
    s = replace(preset(transfer.TransferSettings, "quick"), hidden=8, epochs=20, batch_size=16, lr=3e-3)
    model, history = transfer.pretrain_classifier(data, s, seed=0, progress=False)
    assert len(history.steps) == s.epochs * (len(data.targets) // s.batch_size)
    assert not model.training  # returned ready to embed
    with torch.no_grad():
        train_acc = (model(data.float_images()).argmax(1) == data.targets).float().mean()
    assert train_acc == 1.0  # eight separable classes, learnt completely
    eps = EpisodeSampler(data, 4, 1, 2, seed=2).sample(3)
    model.train()  # embed() must use evaluation mode regardless, and give the mode back
    feats_s, feats_q = transfer.embed(model, eps.x_support), transfer.embed(model, eps.x_query)
    assert model.training
    model.eval()
    with torch.no_grad():  # an independent route to the features: the layers before the head, by hand
        by_hand = model.features(eps.x_support.flatten(0, 1)).flatten(1).view(3, 4, -1)
    torch.testing.assert_close(feats_s, by_hand)
    expected = brute_force_labels(feats_s, eps.y_support, feats_q, cosine=True)
    assert torch.equal(transfer.feature_nearest_neighbour(model)(eps), expected)
