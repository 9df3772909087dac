"""Matching Networks: cosine attention, full context embeddings against step-by-step references, training."""

from __future__ import annotations

import pytest
import torch

from metaedu.algorithms import matching
from metaedu.tasks.episodes import EpisodeSampler


def tiny(**overrides) -> matching.MatchingSettings:
    base = dict(hidden=16, read_steps=2, cosine_scale=10.0, train_way=10, train_shot=1, train_query=3, tasks=1,
                steps=30, lr=3e-3, rotations=(0,), eval_episodes=60, eval_query=3)
    base.update(overrides)
    return matching.MatchingSettings(**base)


def test_attention_is_a_softmax_of_cosines():
    g = torch.Generator().manual_seed(0)
    zq, zs = torch.randn(2, 6, 5, generator=g), torch.randn(2, 4, 5, generator=g)
    a = matching.attention(zq, zs, cosine_scale=3.0)
    assert a.shape == (2, 6, 4)
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 6))
    for t in range(2):
        for i in range(6):
            cos = torch.nn.functional.cosine_similarity(zq[t, i][None], zs[t], dim=1)  # [4]
            torch.testing.assert_close(a[t, i], torch.exp(3 * cos) / torch.exp(3 * cos).sum())


def test_attend_sums_attention_times_labels():
    g = torch.Generator().manual_seed(1)
    a = torch.softmax(torch.randn(1, 3, 6, generator=g), -1)
    y = torch.tensor([[2, 0, 1, 1, 0, 2]])
    probs = matching.attend(a, y, n_way=3)
    for i in range(3):
        expected = torch.zeros(3)
        for j in range(6):
            expected[y[0, j]] += a[0, i, j]
        torch.testing.assert_close(probs[0, i], expected)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 3))


def test_support_context_against_two_lstm_cells():
    torch.manual_seed(2)
    dim, n = 4, 5
    ctx = matching.SupportContext(dim)
    g_prime = torch.randn(1, n, dim)
    out = ctx(g_prime)
    lstm = ctx.lstm

    def run(suffix, order):
        cell = torch.nn.LSTMCell(dim, dim)
        cell.weight_ih.data = getattr(lstm, "weight_ih_l0" + suffix).data
        cell.weight_hh.data = getattr(lstm, "weight_hh_l0" + suffix).data
        cell.bias_ih.data = getattr(lstm, "bias_ih_l0" + suffix).data
        cell.bias_hh.data = getattr(lstm, "bias_hh_l0" + suffix).data
        h, c, states = torch.zeros(1, dim), torch.zeros(1, dim), {}
        for i in order:
            h, c = cell(g_prime[:, i], (h, c))
            states[i] = h
        return states

    fwd, bwd = run("", range(n)), run("_reverse", reversed(range(n)))
    for i in range(n):  # g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)
        torch.testing.assert_close(out[0, i], (fwd[i] + bwd[i] + g_prime[:, i])[0], rtol=1e-5, atol=1e-6)


def test_query_context_against_the_slides_equations():
    torch.manual_seed(3)
    dim, steps = 3, 4
    ctx = matching.QueryContext(dim, steps)
    f_prime, g = torch.randn(1, 2, dim), torch.randn(1, 5, dim)
    out = ctx(f_prime, g)
    W_x, b_x = ctx.from_input.weight, ctx.from_input.bias  # [4D, D], [4D]
    W_s = ctx.from_state.weight  # [4D, 2D]
    for q in range(2):  # one query at a time, one equation per line
        fp = f_prime[0, q]
        h, c = fp.clone(), torch.zeros(dim)
        for _ in range(steps):
            a = torch.softmax(g[0] @ h, 0)  # a(h_{k-1}, g(x_i)) = softmax(h^T g(x_i))
            r = (a[:, None] * g[0]).sum(0)  # r_{k-1}
            z = W_x @ fp + b_x + W_s @ torch.cat([h, r])
            i_g, f_g, o_g, u = z[:dim], z[dim:2 * dim], z[2 * dim:3 * dim], z[3 * dim:]
            c = torch.sigmoid(f_g) * c + torch.sigmoid(i_g) * torch.tanh(u)
            h = torch.sigmoid(o_g) * torch.tanh(c) + fp  # h_k = h_hat_k + f'(x_hat)
        torch.testing.assert_close(out[0, q], h, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="read step"):
        matching.QueryContext(dim, 0)


def test_fce_changes_the_embeddings_and_depends_on_the_set():
    torch.manual_seed(4)
    model = matching.MatchingNet(tiny(fce=True))
    zs, zq = torch.randn(1, 5, model.encoder.out_dim), torch.randn(1, 3, model.encoder.out_dim)
    g, f = model.contextual(zs, zq)
    assert not torch.allclose(g, zs) and not torch.allclose(f, zq)
    # changing another support example changes g(x_0, S) and f(x_hat, S)
    zs2 = zs.clone()
    zs2[0, 4] += 1.0
    g2, f2 = model.contextual(zs2, zq)
    assert not torch.allclose(g2[0, 0], g[0, 0]) and not torch.allclose(f2, f)
    plain = matching.MatchingNet(tiny(fce=False))
    assert plain.contextual(zs, zq)[0] is zs
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in model.parameters())


def test_without_fce_the_support_order_does_not_matter():
    torch.manual_seed(5)
    model = matching.MatchingNet(tiny(fce=False))
    zs, zq = torch.randn(1, 6, model.encoder.out_dim), torch.randn(1, 4, model.encoder.out_dim)
    y = torch.tensor([[0, 0, 1, 1, 2, 2]])
    perm = torch.randperm(6)
    torch.testing.assert_close(model.logits(zs, y, zq, 3), model.logits(zs[:, perm], y[:, perm], zq, 3))


@pytest.mark.parametrize("fce", [False, True])
def test_training_lowers_the_loss_and_beats_chance(glyphs, fce):
    torch.manual_seed(0)
    model, history = matching.train_matching(tiny(fce=fce), glyphs.split("background"), progress=False)
    loss = history["loss"]
    assert sum(loss[-5:]) / 5 < 0.8 * sum(loss[:5]) / 5
    eps = EpisodeSampler(glyphs.split("evaluation"), 5, 1, 3, seed=1).sample(2)
    assert matching.predict(model, eps).shape == (2, 15, 5)
    score = matching.evaluate(model, glyphs.split("evaluation"), 5, 1, n_episodes=60)
    assert score.mean - score.ci95 > 35.0  # chance is 20%
