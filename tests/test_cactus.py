"""CACTUs (lecture 11) against independent references.

* the partitions are scikit-learn's k-means of the (rescaled) embeddings, computed here directly;
* constructed episodes never mix clusters, never repeat an image, and are reproducible by seed;
* on planted, well-separated clusters the partitions recover the planted labels (adjusted Rand ~ 1);
* the contrastive loss equals a slow per-row loop; purity equals a count by hand;
* bad input (too many clusters, no partition able to fill an episode) is a clear error.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from metaedu.algorithms import cactus
from metaedu.nn.unsupervised import ConvAutoencoder, ContrastiveEncoder, augment, nt_xent
from metaedu.runtime import preset
from metaedu.tasks.partitions import PartitionTasks


def _blobs(n_clusters=6, per=30, dims=8, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dims, generator=g, dtype=torch.float64) * 3
    labels = torch.arange(n_clusters).repeat_interleave(per)
    return centres[labels] + spread * torch.randn(len(labels), dims, generator=g, dtype=torch.float64), labels


def test_partitions_are_scikit_learn_k_means_of_the_rescaled_embedding():
    z, _ = _blobs(dims=5, spread=1.0)
    ours = cactus.cluster_partitions(z, partitions=3, clusters=4, seed=7)
    weights = cactus.scalings(3, 5, seed=7)
    assert torch.equal(weights[0], torch.ones(5, dtype=torch.float64))
    assert bool(((weights[1:] >= 0) & (weights[1:] <= 1)).all()) and not torch.equal(weights[1], weights[2])
    for p in range(3):
        ref = KMeans(4, n_init=1, random_state=7 + p).fit(z.numpy() * weights[p].numpy()).labels_
        assert np.array_equal(ours[p].numpy(), ref), f"partition {p} differs from scikit-learn's k-means"


def test_planted_clusters_are_recovered():
    z, labels = _blobs()
    parts = cactus.cluster_partitions(z, partitions=4, clusters=6, seed=0)
    for p in range(4):
        assert adjusted_rand_score(labels.numpy(), parts[p].numpy()) > 0.99
        purity = cactus.cluster_purity(parts[p], labels)
        assert torch.allclose(purity, torch.ones(6))


def test_purity_counts_by_hand():
    assignment = torch.tensor([0, 0, 0, 1, 1, 3])
    labels = torch.tensor([5, 5, 2, 1, 2, 0])
    purity = cactus.cluster_purity(assignment, labels)
    assert purity[0] == pytest.approx(2 / 3) and purity[1] == pytest.approx(0.5) and purity[3] == 1.0
    assert math.isnan(float(purity[2]))  # an empty cluster has no purity


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8)


def test_constructed_episodes_never_mix_clusters_nor_repeat_an_image():
    n = 120
    g = torch.Generator().manual_seed(1)
    assignments = torch.stack([torch.randint(0, 9, (n,), generator=g) for _ in range(3)])
    tasks = PartitionTasks(_images(n), assignments, n_way=4, k_shot=2, n_query=3, seed=5)
    partition, clusters, idx = tasks.sample_indices(50)
    assert idx.shape == (50, 4, 5)
    for t in range(50):
        assigned = assignments[partition[t]][idx[t]]  # [n_way, k + q] cluster of every image drawn
        assert torch.equal(assigned, clusters[t][:, None].expand_as(assigned)), "an episode's class mixes clusters"
        assert len(set(idx[t].flatten().tolist())) == 20, "an image appears twice in one episode"
        assert len(set(clusters[t].tolist())) == 4, "a cluster is used for two classes"


def test_episodes_carry_the_drawn_images_in_the_usual_layout():
    n = 60
    images = _images(n)
    assignments = torch.arange(n)[None] % 5
    a = PartitionTasks(images, assignments, n_way=3, k_shot=1, n_query=2, seed=3)
    b = PartitionTasks(images, assignments, n_way=3, k_shot=1, n_query=2, seed=3)
    _, clusters, idx = a.sample_indices(4)
    eps = b.sample(4)
    assert eps.x_support.shape == (4, 3, 1, 28, 28) and eps.x_query.shape == (4, 6, 1, 28, 28)
    assert torch.equal(eps.y_support[0], torch.tensor([0, 1, 2]))
    assert torch.equal(eps.y_query[0], torch.tensor([0, 0, 1, 1, 2, 2]))
    expected = images[idx].float() / 255
    assert torch.equal(eps.x_support, expected[:, :, :1].flatten(1, 2))
    assert torch.equal(eps.x_query, expected[:, :, 1:].flatten(1, 2))
    assert torch.equal(eps.classes, clusters)  # partition 0: class ids are the cluster ids


def test_small_clusters_are_dropped_and_impossible_tasks_refused():
    assignments = torch.tensor([[0] * 6 + [1] * 6 + [2] * 2 + [3]])
    tasks = PartitionTasks(_images(15), assignments, n_way=2, k_shot=1, n_query=4)
    assert tasks.dropped == [(2, 3)]  # clusters 2 and 3, with 3 images between them
    _, clusters, _ = tasks.sample_indices(20)
    assert set(clusters.flatten().tolist()) == {0, 1}
    with pytest.raises(ValueError, match="no partition has 3 clusters"):
        PartitionTasks(_images(15), assignments, n_way=3, k_shot=1, n_query=4)
    with pytest.raises(ValueError, match="one per image"):
        PartitionTasks(_images(15), assignments[:, :10], n_way=2, k_shot=1)
    with pytest.raises(ValueError, match="cannot make 20 clusters of 15"):
        cactus.cluster_partitions(torch.randn(15, 3), partitions=1, clusters=20)


def test_contrastive_loss_equals_a_per_row_loop():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    tau = 0.3
    views = torch.cat([z1, z2])
    views = views / views.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(10):
        partner = (i + 5) % 10
        others = [j for j in range(10) if j != i]
        denominator = sum(math.exp(float(views[i] @ views[j]) / tau) for j in others)
        total += -math.log(math.exp(float(views[i] @ views[partner]) / tau) / denominator)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(total / 10, rel=1e-10)
    with pytest.raises(ValueError, match="two views"):
        nt_xent(z1, z2[:3])


def test_augment_without_change_is_the_identity_and_is_seeded():
    x = torch.rand(3, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(augment(x, g, shift=0.0, rotate=0.0, scale=0.0), x, atol=1e-5, rtol=0)
    a = augment(x, torch.Generator().manual_seed(4))
    b = augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, x)


@pytest.mark.parametrize("embedding", cactus.EMBEDDINGS)
def test_embedding_training_lowers_its_loss(embedding):
    settings = dataclasses.replace(preset(cactus.CactusSettings, "quick"), embedding=embedding, embed_steps=25,
                                   embed_batch=32, embed_hidden=8, embed_head=16)
    images = _images(64)
    encoder, history = cactus.train_embedding(settings, images, progress=False)
    losses = history["loss"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    z = cactus.embed(encoder, images)
    assert z.shape[0] == 64 and torch.isfinite(z).all()


def test_models_have_the_documented_shapes():
    x = torch.rand(4, 1, 28, 28)
    assert ContrastiveEncoder(8, 16)(x).shape == (4, 16)
    assert ConvAutoencoder(8, 16)(x).shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="28 x 28"):
        ConvAutoencoder(8, 16, image_size=32)


def test_linear_probe_and_nearest_neighbour_solve_separable_episodes():
    # an "encoder" that reads the class off the image: the first n_way pixels hold a one-hot code
    n_way, per = 3, 4
    x = torch.zeros(2, n_way * per, 1, 28, 28)
    labels = torch.arange(n_way).repeat_interleave(per)
    x[:, torch.arange(n_way * per), 0, 0, labels] = 1.0
    from metaedu.tasks.episodes import Episodes

    eps = Episodes(x[:, ::per], labels[::per].expand(2, -1), x, labels.expand(2, -1), torch.zeros(2, n_way), n_way, 1, per)
    encoder = torch.nn.Flatten()
    assert torch.equal(cactus.knn_predict(encoder, eps), eps.y_query)
    assert torch.equal(cactus.linear_probe_predict(encoder, eps).argmax(-1), eps.y_query)


def test_settings_reject_impossible_values():
    with pytest.raises(ValueError, match="embedding"):
        cactus.CactusSettings(embedding="pca")
    with pytest.raises(ValueError, match="partitions"):
        cactus.CactusSettings(partitions=0)
    quick = cactus.CactusSettings.quick()
    assert quick.partitions < cactus.CactusSettings.full().partitions
