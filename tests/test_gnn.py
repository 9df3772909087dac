"""The few-shot GNN against independent references.

* Its two special cases reproduce lecture 03's package code on the same embeddings: one propagation
  with the Siamese adjacency is the nearest-neighbour rule (and, with Koch's learned similarity, the
  Siamese network's own one-shot prediction); two layers with the prototype adjacency give a
  Prototypical Network's probabilities.
* Permuting the support nodes changes no query's prediction (equivariance of the graph layers).
* The learned adjacency and the graph convolution equal a slow loop over node pairs.
* Hidden labels, the dropped-node baseline and the active-learning choice do what they say.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from metaedu.algorithms import gnn, protonet, siamese
from metaedu.data.embedded import embed_set
from metaedu.nn.distances import nearest_neighbour
from metaedu.runtime import preset, seeded
from metaedu.tasks.episodes import EpisodeSampler
from tiny_data import tiny_images


def small(cls=gnn.GNNSettings, **changes):
    return replace(preset(cls, "quick"), hidden=4, gc_width=5, edge_hidden=(6,), **changes)


def random_episode(tasks=3, n_way=4, k_shot=2, n_query=3, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    z_support = torch.randn(tasks, n_way * k_shot, dim, generator=g)
    y_support = torch.arange(n_way).repeat_interleave(k_shot).expand(tasks, -1)
    z_query = torch.randn(tasks, n_way * n_query, dim, generator=g)
    return z_support, y_support, z_query


# ----------------------------------------------------------------------------- special cases (lecture 03 as reference)


def test_siamese_adjacency_reads_off_the_nearest_neighbour():
    z_support, y_support, z_query = random_episode(k_shot=1)
    scores = gnn.siamese_as_gnn(z_support, y_support, z_query, 4)  # [tasks, Q, K]
    torch.testing.assert_close(scores.sum(-1), torch.ones(scores.shape[:2]))
    assert torch.equal(scores.argmax(-1), nearest_neighbour(z_support, y_support, z_query))


def test_siamese_adjacency_with_several_shots_tends_to_the_nearest_neighbour():
    z_support, y_support, z_query = random_episode(k_shot=3, seed=1)
    sharp = gnn.siamese_as_gnn(50 * z_support, y_support, 50 * z_query, 4)  # a sharper softmax
    assert torch.equal(sharp.argmax(-1), nearest_neighbour(z_support, y_support, z_query))


def test_siamese_network_one_shot_prediction_is_a_gnn_with_its_learned_similarity():
    settings = replace(preset(siamese.SiameseSettings, "quick"), hidden=4)
    with seeded(0):
        net = siamese.SiameseNet(settings, image_size=16)
    torch.nn.init.normal_(net.weighting.weight)  # a learned-looking alpha with both signs
    eps = EpisodeSampler(tiny_images(), 5, 1, 2, seed=2).sample(3)
    with torch.no_grad():
        z_s, z_q = net.embed(eps.x_support), net.embed(eps.x_query)
        reference = net.logits(z_s, eps.y_support, z_q, 5).argmax(-1)  # lecture 03's Siamese classifier
        scores = gnn.siamese_as_gnn(z_s, eps.y_support, z_q, 5, similarity=net.pair_logits)
    assert torch.equal(scores.argmax(-1), reference)


@pytest.mark.parametrize("k_shot", [1, 3])
def test_prototype_adjacency_gives_a_prototypical_networks_probabilities(k_shot):
    z_support, y_support, z_query = random_episode(k_shot=k_shot, seed=3)
    scores = gnn.prototypical_as_gnn(z_support, y_support, z_query, 4)
    logits = protonet.prototype_logits(z_query, protonet.prototypes(z_support, y_support, 4))  # lecture 03
    torch.testing.assert_close(scores, torch.softmax(logits, -1))


def test_prototype_adjacency_averages_each_class():
    y = torch.tensor([[0, 0, 1, 2, 2, 2]])
    a = gnn.prototype_adjacency(y, 3)[0]
    torch.testing.assert_close(a.sum(-1), torch.ones(6))
    assert a[0, 1] == 0.5 and a[2, 2] == 1.0 and a[3, 5] == pytest.approx(1 / 3) and a[0, 2] == 0


# ----------------------------------------------------------------------------- the layer, against a slow loop


def test_learned_adjacency_and_graph_convolution_equal_a_loop_over_pairs():
    with seeded(0):
        edge, conv = gnn.EdgeFunction(7, (5,)), gnn.GraphConv(7, 4)
    x = torch.randn(2, 6, 7, generator=torch.Generator().manual_seed(4))
    senders = 4
    a = edge(x, senders)  # [2, 6, 4]
    out = conv(x, a)
    for t in range(2):
        for i in range(6):
            js = [j for j in range(senders) if j != i]
            raw = torch.stack([edge.mlp((x[t, i] - x[t, j]).abs())[0] for j in js])
            weights = torch.softmax(raw, 0)
            torch.testing.assert_close(a[t, i, js], weights)
            if i < senders:
                assert a[t, i, i] == 0  # no edge to itself
            message = sum(w * x[t, j] for w, j in zip(weights, js))
            theta_i, theta_a = conv.theta.weight[:, :7], conv.theta.weight[:, 7:]
            want = torch.nn.functional.leaky_relu(theta_i @ x[t, i] + theta_a @ message + conv.theta.bias, 0.2)
            torch.testing.assert_close(out[t, i], want)


def test_a_node_without_senders_gets_no_message_not_nan():
    edge = gnn.EdgeFunction(3, (4,))
    a = edge(torch.randn(1, 3, 3), 1)  # node 0 is the only sender: it hears nobody
    assert torch.isfinite(a).all() and a[0, 0].sum() == 0 and torch.allclose(a[0, 1:].sum(-1), torch.ones(2))


def test_label_vectors_are_one_hot_or_uniform():
    h = gnn.label_vectors(torch.tensor([[2, -1, 0]]), 4)
    torch.testing.assert_close(h[0], torch.tensor([[0, 0, 1, 0], [0.25] * 4, [1, 0, 0, 0.0]]))
    with pytest.raises(ValueError, match="labels must lie"):
        gnn.label_vectors(torch.tensor([[4]]), 4)


# ----------------------------------------------------------------------------- equivariance


@pytest.mark.parametrize("settings", [small(n_way=4), small(gnn.SemiSupervisedGNNSettings, n_way=4, k_shot=3)],
                         ids=["few-shot", "semi-supervised"])
def test_permuting_support_nodes_changes_no_query_prediction(settings):
    with seeded(1):
        model = gnn.GNN(settings, feature_dim=6)
    k = settings.k_shot
    z_support, y_support, z_query = random_episode(n_way=4, k_shot=k, seed=5)
    y_shown = torch.where(torch.arange(4 * k) % k < settings.shown(), y_support, -1)
    perm = torch.randperm(4 * k, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = model.logits(z_support, y_shown, z_query, 4)
        permuted = model.logits(z_support[:, perm], y_shown[:, perm], z_query, 4)
        query_perm = torch.randperm(z_query.shape[1], generator=torch.Generator().manual_seed(7))
        queries_permuted = model.logits(z_support, y_shown, z_query[:, query_perm], 4)
    torch.testing.assert_close(permuted, out)
    torch.testing.assert_close(queries_permuted, out[:, query_perm])
    # queries do not send: one query's scores do not depend on the other queries
    with torch.no_grad():
        alone = model.logits(z_support, y_shown, z_query[:, :1], 4)
    torch.testing.assert_close(alone, out[:, :1])


# ----------------------------------------------------------------------------- hidden labels and active learning


def test_prepare_hides_or_drops_the_unlabelled_shots():
    eps = EpisodeSampler(tiny_images(), 3, 4, 1, seed=0).sample(2)
    x, y, oracle = gnn.prepare(eps, small(gnn.SemiSupervisedGNNSettings, n_way=3, k_shot=4, labelled_shots=1))
    assert x.shape == eps.x_support.shape and torch.equal(oracle, eps.y_support)
    assert (y == -1).sum() == 2 * 3 * 3 and torch.equal(y[:, ::4], eps.y_support[:, ::4])
    s = small(gnn.SemiSupervisedGNNSettings, n_way=3, k_shot=4, labelled_shots=2, unlabelled="drop")
    x, y, oracle = gnn.prepare(eps, s)
    assert x.shape[1] == 6 and (y >= 0).all() and torch.equal(y, oracle)
    assert torch.equal(x[:, :2], eps.x_support[:, :2]) and torch.equal(x[:, 2:4], eps.x_support[:, 4:6])
    with pytest.raises(ValueError, match="labelled_shots"):
        gnn.prepare(eps, s, labelled_shots=5)


def _active_model(choice="attention"):
    s = small(gnn.SemiSupervisedGNNSettings, n_way=3, k_shot=3, active=True, choice=choice)
    with seeded(2):
        return gnn.GNN(s, feature_dim=6)


def test_active_learning_reveals_the_attention_argmax_at_test_time():
    model = _active_model().eval()
    z_support, y_support, _ = random_episode(tasks=4, n_way=3, k_shot=3, seed=8)
    y_shown = torch.where(torch.arange(9) % 3 == 0, y_support, -1)
    x0 = gnn.node_features(z_support, y_shown, 3)
    x1 = torch.cat([x0, model.convs[0](x0, model.edges[0](x0, 9))], -1)
    weights = model.choice_weights(x1, y_shown)
    assert (weights[y_shown >= 0] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))
    revealed = model.reveal_one(x1, y_shown, y_support, None)
    pick = weights.argmax(-1)
    for t in range(4):
        changed = (revealed[t] != x1[t]).any(-1).nonzero().flatten().tolist()
        assert changed == [int(pick[t])]
        slot = revealed[t, pick[t], model.label_slot]
        torch.testing.assert_close(slot, torch.nn.functional.one_hot(y_support[t, pick[t]], 3).float())


def test_active_learning_samples_by_the_attention_in_training_and_trains_it():
    model = _active_model().train()
    z_support, y_support, z_query = random_episode(tasks=1, n_way=3, k_shot=3, seed=9)
    y_shown = torch.where(torch.arange(9) % 3 == 0, y_support, -1)
    x0 = gnn.node_features(z_support, y_shown, 3)
    x1 = torch.cat([x0, model.convs[0](x0, model.edges[0](x0, 9))], -1).expand(4000, -1, -1)
    weights = model.choice_weights(x1[:1], y_shown)[0].detach()
    g = torch.Generator().manual_seed(10)
    revealed = model.reveal_one(x1, y_shown.expand(4000, -1), y_support.expand(4000, -1), g)
    picked = (revealed != x1).any(-1).float().mean(0)  # how often each node was chosen
    assert (picked - weights).abs().max() < 0.03
    loss = model.logits(z_support, y_shown, z_query, 3, oracle=y_support, generator=g).logsumexp(-1).sum()
    loss.backward()
    assert model.attention[0].weight.grad.abs().sum() > 0  # the choice is trained through w / sg(w)


def test_random_choice_is_uniform_over_the_unlabelled_nodes():
    model = _active_model("random")
    y_shown = torch.tensor([[0, -1, -1, 1, -1, -1]])
    weights = model.choice_weights(torch.zeros(1, 6, model.attention[0].in_features), y_shown)
    torch.testing.assert_close(weights, torch.tensor([[0, 0.25, 0.25, 0, 0.25, 0.25]]))


def test_active_learning_without_an_oracle_or_unlabelled_nodes_is_refused():
    model = _active_model().eval()
    z_support, y_support, z_query = random_episode(tasks=1, n_way=3, k_shot=3)
    with pytest.raises(ValueError, match="oracle"):
        model.logits(z_support, y_support, z_query, 3)
    with pytest.raises(ValueError, match="unlabelled"):
        model.logits(z_support, y_support, z_query, 3, oracle=y_support)
    with pytest.raises(ValueError, match="active"):
        small(gnn.GNNSettings, active=True)  # 1-shot: nothing to ask about


# ----------------------------------------------------------------------------- training


def test_training_learns_tiny_episodes_and_features_alone():
    data = tiny_images()
    s = small(n_way=5, tasks=4, steps=40, train_query=2, lr=1e-2, eval_episodes=40)
    model, history = gnn.train_gnn(s, data, seed=0, progress=False)
    acc = gnn.episode_accuracies(model, data, seed=3)
    assert acc.mean() > 60, f"accuracy {acc.mean():.1f}% on tiny 5-way episodes (chance 20%)"
    assert history["loss"][-1] < history["loss"][0]
    # graph layers alone on features embedded once by the trained encoder
    embedded = embed_set(model.encoder, data)
    on_features, _ = gnn.train_gnn(replace(s, steps=20), embedded, seed=1, progress=False)
    assert on_features.feature_dim == embedded.image_shape[0]
    assert gnn.episode_accuracies(on_features, embedded, seed=3).mean() > 60
    # the trained model scored on the embedded set equals it scored on the images
    torch.testing.assert_close(gnn.episode_accuracies(model, embedded, seed=3), acc)


def test_settings_refuse_impossible_label_counts():
    with pytest.raises(ValueError, match="labelled_shots"):
        small(gnn.SemiSupervisedGNNSettings, labelled_shots=6)
    with pytest.raises(ValueError, match="unlabelled"):
        small(unlabelled="ignore")
    model = gnn.GNN(small(n_way=5), feature_dim=4)
    with pytest.raises(ValueError, match="5-way"):
        model.logits(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 2, 4), 3)


def test_adjacencies_are_the_ones_the_forward_pass_uses():
    with seeded(3):
        model = gnn.GNN(small(n_way=4), feature_dim=6)
    z_support, y_support, z_query = random_episode(n_way=4, k_shot=2, seed=11)
    found = model.adjacencies(z_support, y_support, z_query)
    assert len(found) == model.settings.layers + 1
    x = gnn.node_features(torch.cat([z_support, z_query], 1),
                          torch.cat([y_support, torch.full(z_query.shape[:2], -1)], 1), 4)
    for a, conv in zip(found, model.convs):
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:2]))
        x = torch.cat([x, conv(x, a)], -1)
    with torch.no_grad():
        want = model.logits(z_support, y_support, z_query, 4)
        torch.testing.assert_close(model.last_conv(x, found[-1])[:, 8:], want)
