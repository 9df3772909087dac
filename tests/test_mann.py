import math

import pytest
import torch
import torch.nn.functional as F

from metaedu.algorithms import mann
from metaedu.data.base import ClassImageSet
from metaedu.tasks.sequences import SequenceSampler


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- memory operations


@pytest.mark.parametrize("heads,slots,size", [(1, 3, 2), (2, 5, 4), (4, 16, 8)])
def test_read_weights_sum_to_one_and_match_a_loop(heads, slots, size):
    keys = torch.randn(3, heads, size, generator=gen(1))
    memory = torch.randn(3, slots, size, generator=gen(2))
    w = mann.read_weights(keys, memory)
    assert w.shape == (3, heads, slots)
    assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(3, heads))
    for b in range(3):
        for h in range(heads):
            sims = torch.stack([F.cosine_similarity(keys[b, h], memory[b, i], dim=0) for i in range(slots)])
            torch.testing.assert_close(w[b, h], torch.softmax(sims, 0))
    r = mann.read_memory(w, memory)
    torch.testing.assert_close(r[1, 0], sum(w[1, 0, i] * memory[1, i] for i in range(slots)))


def test_key_strength_sharpens_reads():
    keys, memory = torch.randn(2, 1, 4, generator=gen(3)), torch.randn(2, 6, 4, generator=gen(4))
    flat = mann.read_weights(keys, memory)
    sharp = mann.read_weights(keys, memory, strength=torch.full((2, 1), 20.0))
    assert (sharp.max(-1).values > flat.max(-1).values).all()
    assert torch.equal(sharp.argmax(-1), flat.argmax(-1))


def test_usage_decays_with_gamma():
    usage = torch.rand(2, 5, generator=gen(5))
    none = torch.zeros(2, 3, 5)
    after = usage
    for step in range(1, 4):
        after = mann.update_usage(after, none, none, gamma=0.9)
        torch.testing.assert_close(after, usage * 0.9**step)
    read_w, write_w = torch.rand(2, 3, 5, generator=gen(6)), torch.rand(2, 3, 5, generator=gen(7))
    torch.testing.assert_close(mann.update_usage(usage, read_w, write_w, 0.5),
                               0.5 * usage + read_w.sum(1) + write_w.sum(1))


@pytest.mark.parametrize("n", [1, 2, 4])
def test_least_used_weights_follow_the_nth_smallest_rule(n):
    usage = torch.rand(6, 9, generator=gen(n))  # distinct values almost surely
    w = mann.least_used_weights(usage, n)
    nth_smallest = usage.kthvalue(n, dim=-1, keepdim=True).values  # m(w^u, n)
    torch.testing.assert_close(w, (usage <= nth_smallest).float())
    assert torch.equal(w.sum(-1), torch.full((6,), float(n)))


def test_least_used_ties_go_to_the_lower_index_and_bad_n_is_named():
    w = mann.least_used_weights(torch.tensor([[0.5, 0.1, 0.1, 0.1]]), 2)
    assert torch.equal(w, torch.tensor([[0.0, 1.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="least-used"):
        mann.least_used_weights(torch.zeros(1, 3), 4)


def test_least_used_slot_is_cleared_and_then_written():
    memory = torch.randn(2, 4, 3, generator=gen(8))
    usage = torch.tensor([[0.9, 0.2, 0.5, 0.7], [0.1, 0.8, 0.9, 0.3]])
    cleared = mann.clear_least_used(memory, usage)
    assert (cleared[0, 1] == 0).all() and (cleared[1, 0] == 0).all()
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, 1] = keep[1, 0] = False
    assert torch.equal(cleared[keep], memory[keep])
    # in a full step the gate sends the write to the least-used slot, which then holds only the key
    state = mann.MemoryState(memory, usage, torch.zeros(2, 1, 4), mann.least_used_weights(usage, 1))
    keys = torch.randn(2, 1, 3, generator=gen(9))
    new, _, write_w = mann.lrua_step(state, keys, gate=torch.full((2, 1), -30.0), gamma=0.95)
    assert torch.allclose(write_w[0, 0], torch.tensor([0.0, 1.0, 0.0, 0.0]), atol=1e-6)
    torch.testing.assert_close(new.memory[0, 1], keys[0, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(new.memory[1, 0], keys[1, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(new.memory[0, 2], memory[0, 2])


def test_write_weights_mix_previous_read_and_least_used():
    prev_read = torch.softmax(torch.randn(2, 3, 5, generator=gen(10)), -1)
    least = mann.least_used_weights(torch.rand(2, 5, generator=gen(11)), 3)
    gate = torch.randn(2, 3, generator=gen(12))
    w = mann.write_weights(gate, prev_read, least)
    for b in range(2):
        for h in range(3):
            s = 1 / (1 + math.exp(-float(gate[b, h])))
            torch.testing.assert_close(w[b, h], s * prev_read[b, h] + (1 - s) * least[b])


def test_two_steps_by_hand():
    """N = 3 slots of size 2, one head, gamma = 0.5, gate alpha = 0 (sigma = 1/2), no sharpening."""
    e = math.exp
    state = mann.initial_state(1, 3, 2, 1)  # memory 1e-6 everywhere, usage 0, w^lu_0 = [1, 0, 0]
    # step 1, key [1, 0]: w^w = 1/2 [1, 0, 0]; slot 0 cleared then holds [1/2, 0]; rows 1, 2 stay [c, c]
    state, r1, w1 = mann.lrua_step(state, torch.tensor([[[1.0, 0.0]]]), torch.zeros(1, 1), gamma=0.5)
    # cosines: 1 with slot 0, 1/sqrt(2) with the constant rows
    c = 1 / math.sqrt(2)
    wr1 = [e(1) / (e(1) + 2 * e(c)), e(c) / (e(1) + 2 * e(c)), e(c) / (e(1) + 2 * e(c))]
    assert w1[0, 0].tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert state.read_w[0, 0].tolist() == pytest.approx(wr1, abs=1e-6)
    assert r1[0, 0].tolist() == pytest.approx([0.5 * wr1[0], 0.0], abs=1e-5)
    usage1 = [wr1[0] + 0.5, wr1[1], wr1[2]]
    assert state.usage[0].tolist() == pytest.approx(usage1, abs=1e-6)
    assert state.least_used[0].tolist() == [0.0, 1.0, 0.0]  # slots 1 and 2 tie: the lower index
    # step 2, key [0, 1]: w^w = 1/2 w^r_1 + 1/2 [0, 1, 0]; slot 1 (least used) cleared first
    state, r2, w2 = mann.lrua_step(state, torch.tensor([[[0.0, 1.0]]]), torch.zeros(1, 1), gamma=0.5)
    ww2 = [0.5 * wr1[0], 0.5 * wr1[1] + 0.5, 0.5 * wr1[2]]
    assert w2[0, 0].tolist() == pytest.approx(ww2, abs=1e-6)
    rows = [[0.5, ww2[0]], [0.0, ww2[1]], [1e-6, 1e-6 + ww2[2]]]
    assert state.memory[0].flatten().tolist() == pytest.approx(sum(rows, []), abs=1e-6)
    cos = [row[1] / math.hypot(*row) for row in rows]
    wr2 = [e(k) / sum(e(j) for j in cos) for k in cos]
    assert state.read_w[0, 0].tolist() == pytest.approx(wr2, abs=1e-6)
    read2 = [sum(wr2[i] * rows[i][d] for i in range(3)) for d in range(2)]
    assert r2[0, 0].tolist() == pytest.approx(read2, abs=1e-6)
    usage2 = [0.5 * usage1[i] + wr2[i] + ww2[i] for i in range(3)]
    assert state.usage[0].tolist() == pytest.approx(usage2, abs=1e-6)
    assert state.least_used[0].tolist() == [0.0, 0.0, 1.0]


def slow_lrua_step(memory, usage, read_w, least, keys, gate, gamma):
    """One episode, written slot by slot with Python loops from the paper's equations."""
    H, N, M = len(read_w), len(memory), len(memory[0])
    sig = [1 / (1 + math.exp(-g)) for g in gate]
    write_w = [[sig[h] * read_w[h][i] + (1 - sig[h]) * least[i] for i in range(N)] for h in range(H)]
    lowest = min(range(N), key=lambda i: (usage[i], i))
    mem = [[0.0] * M if i == lowest else list(memory[i]) for i in range(N)]
    mem = [[mem[i][d] + sum(write_w[h][i] * keys[h][d] for h in range(H)) for d in range(M)] for i in range(N)]
    new_read = []
    for h in range(H):
        sims = []
        for i in range(N):
            dot = sum(keys[h][d] * mem[i][d] for d in range(M))
            sims.append(dot / (math.sqrt(sum(v * v for v in keys[h])) * math.sqrt(sum(v * v for v in mem[i]))))
        z = sum(math.exp(s) for s in sims)
        new_read.append([math.exp(s) / z for s in sims])
    new_usage = [gamma * usage[i] + sum(new_read[h][i] + write_w[h][i] for h in range(H)) for i in range(N)]
    order = sorted(range(N), key=lambda i: (new_usage[i], i))[:H]
    new_least = [1.0 if i in order else 0.0 for i in range(N)]
    return mem, new_usage, new_read, new_least, write_w


def test_batched_steps_match_a_slow_loop_over_episodes():
    """Each step of the batched memory equals the slow loop started from the same state.

    (The slow loop starts from the batched state at every step: near-ties of usage may break
    differently in float32 and float64, which would otherwise send the two down different paths.)
    """
    B, H, N, M = 3, 2, 5, 3
    state = mann.initial_state(B, N, M, H)
    g = gen(13)
    for _ in range(6):
        before = [(state.memory[b].tolist(), state.usage[b].tolist(), state.read_w[b].tolist(),
                   state.least_used[b].tolist()) for b in range(B)]
        keys, gate = torch.randn(B, H, M, generator=g), torch.randn(B, H, generator=g)
        state, _, write_w = mann.lrua_step(state, keys, gate, gamma=0.9)
        for b in range(B):
            mem, usage, read_w, least, ww = slow_lrua_step(*before[b], keys[b].tolist(), gate[b].tolist(), 0.9)
            torch.testing.assert_close(state.memory[b], torch.tensor(mem), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(state.usage[b], torch.tensor(usage), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(state.read_w[b], torch.tensor(read_w), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(write_w[b], torch.tensor(ww), atol=1e-5, rtol=1e-5)
            gaps = sorted(usage)
            if all(b2 - a > 1e-4 for a, b2 in zip(gaps, gaps[1:])):  # no near-tie: the same slots are marked
                assert state.least_used[b].tolist() == least


def test_lrua_step_gradients_match_finite_differences():
    g = gen(14)
    memory = torch.randn(2, 4, 3, generator=g, dtype=torch.double)
    state = mann.MemoryState(memory, torch.rand(2, 4, generator=g, dtype=torch.double),
                             torch.softmax(torch.randn(2, 2, 4, generator=g, dtype=torch.double), -1),
                             mann.least_used_weights(torch.rand(2, 4, generator=g, dtype=torch.double), 2))
    keys = torch.randn(2, 2, 3, generator=g, dtype=torch.double, requires_grad=True)
    gate = torch.randn(2, 2, generator=g, dtype=torch.double, requires_grad=True)
    strength = (1 + torch.rand(2, 2, generator=g, dtype=torch.double)).requires_grad_()

    def f(keys, gate, strength):
        new, reads, _ = mann.lrua_step(state, keys, gate, 0.95, strength)
        return reads, new.usage

    assert torch.autograd.gradcheck(f, (keys, gate, strength))


# ----------------------------------------------------------------------------- networks


def toy_sampler(n_classes=3, per_class=4, label_length=1, seed=0):
    g = gen(15)
    protos = torch.rand(10, 1, 5, 5, generator=g)
    images = (protos.repeat_interleave(6, 0) + 0.1 * torch.rand(60, 1, 5, 5, generator=g)).clamp(0, 1)
    data = ClassImageSet(images, torch.arange(10).repeat_interleave(6), [str(c) for c in range(10)])
    return SequenceSampler(data, n_classes, per_class, image_size=5, label_length=label_length, seed=seed)


@pytest.mark.parametrize("heads,slots,controller", [(1, 4, "lstm"), (2, 7, "feedforward"), (3, 3, "lstm")])
def test_mann_shapes_and_recorded_trace(heads, slots, controller):
    sampler = toy_sampler()
    model = mann.MANN(sampler.input_size, 3, hidden=8, memory_slots=slots, memory_size=6, read_heads=heads,
                      controller=controller)
    seq = sampler.sample(2)
    logits, trace = model(seq.inputs, record=True)
    assert logits.shape == (2, 12, 3)
    assert trace["read_w"].shape == trace["write_w"].shape == (2, 12, heads, slots)
    assert trace["usage"].shape == (2, 12, slots) and trace["memory"].shape == (2, 12, slots, 6)
    assert trace["gate"].shape == (2, 12, heads)
    torch.testing.assert_close(trace["read_w"].sum(-1), torch.ones(2, 12, heads))
    torch.testing.assert_close(model(seq.inputs), logits)
    mann.sequence_loss(logits, seq).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_episodes_in_a_batch_do_not_interact():
    sampler = toy_sampler()
    torch.manual_seed(0)
    model = mann.MANN(sampler.input_size, 3, hidden=8, memory_slots=5, memory_size=4, read_heads=2,
                      key_strength=True)
    seq = sampler.sample(4)
    together = model(seq.inputs)
    for b in range(4):
        torch.testing.assert_close(model(seq.episode(b).inputs)[0], together[b], atol=1e-6, rtol=1e-5)


def test_bad_model_arguments_are_named():
    with pytest.raises(ValueError, match="controller"):
        mann.MANN(10, 3, controller="gru")
    with pytest.raises(ValueError, match="memory slots"):
        mann.MANN(10, 3, memory_slots=2, read_heads=3)
    with pytest.raises(ValueError, match="unknown model"):
        mann.build_model("transformer", mann.MANNSettings.quick(), toy_sampler())


def test_string_label_loss_and_correctness_need_every_character():
    sampler = toy_sampler(label_length=5)
    seq = sampler.sample(2)
    logits = torch.randn(2, 12, 25, generator=gen(16))
    per_char = logits.view(2, 12, 5, 5)
    expected = sum(F.cross_entropy(per_char[:, :, c].reshape(-1, 5), seq.targets[:, :, c].reshape(-1))
                   for c in range(5))
    torch.testing.assert_close(mann.sequence_loss(logits, seq), expected)
    predicted = seq.targets.clone()
    predicted[0, 3, 4] = (predicted[0, 3, 4] + 1) % 5  # one wrong character
    correct = mann.correct_steps(predicted, seq)
    assert not correct[0, 3] and correct.sum() == 23


def test_nearest_neighbour_matches_a_loop():
    seq = toy_sampler(per_class=5).sample(3)
    pred = mann.nearest_neighbour_predict(seq, gen(17))
    for b in range(3):
        for t in range(1, 15):
            d = [float(((seq.x[b, t] - seq.x[b, s]) ** 2).sum()) for s in range(t)]
            assert pred[b, t, 0] == seq.targets[b, d.index(min(d)), 0]
    # these classes are easy for pixels: every later instance is right, no first instance (after t=1) is
    correct = mann.correct_steps(pred, seq)
    assert correct[seq.instance > 1].all()
    assert not correct[:, 1:][seq.instance[:, 1:] == 1].any()


def test_instance_accuracy_by_hand():
    correct = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    instance = torch.tensor([[1, 1, 2, 2, 3, 3], [1, 2, 1, 2, 3, 3]])
    acc = mann.instance_accuracy(correct, instance, instances=(1, 2, 3))
    assert acc[1].tolist() == [50.0, 50.0] and acc[2].tolist() == [100.0, 50.0] and acc[3].tolist() == [50.0, 100.0]
    with pytest.raises(ValueError, match="instance 4"):
        mann.instance_accuracy(correct, instance, instances=(4,))


def test_evaluate_gives_an_interval_per_instance_and_a_perfect_oracle_scores_100():
    sampler = toy_sampler(per_class=5)
    scores = mann.evaluate(lambda seq: seq.targets, sampler, n_episodes=7, batch=3, instances=(1, 2, 5))
    assert set(scores) == {1, 2, 5} and all(s.mean == 100 and s.n == 7 for s in scores.values())
    with pytest.raises(ValueError, match="per_class"):
        mann.evaluate(lambda seq: seq.targets, sampler, 2, instances=(10,))


def test_instance_accuracies_on_stored_batches_equal_drawn_ones_and_pair_methods():
    drawn = mann.instance_accuracies(lambda seq: mann.nearest_neighbour_predict(seq, gen(1)),
                                     toy_sampler(per_class=5, seed=4), n_episodes=7, batch=3, instances=(1, 2, 5))
    same = toy_sampler(per_class=5, seed=4)
    stored = [same.sample(n) for n in (3, 3, 1)]  # the same seed and batch sizes: the same episodes
    again = mann.instance_accuracies(lambda seq: mann.nearest_neighbour_predict(seq, gen(1)), stored,
                                     instances=(1, 2, 5))
    for k in (1, 2, 5):
        assert drawn[k].shape == (7,)
        torch.testing.assert_close(drawn[k], again[k])
    scores = mann.evaluate(lambda seq: mann.nearest_neighbour_predict(seq, gen(1)), toy_sampler(per_class=5, seed=4),
                           7, batch=3, instances=(1, 2, 5))
    assert all(abs(scores[k].mean - float(drawn[k].double().mean())) < 1e-9 for k in (1, 2, 5))
    with pytest.raises(ValueError, match="n_episodes"):
        mann.instance_accuracies(lambda seq: seq.targets, toy_sampler(per_class=5))
    with pytest.raises(ValueError, match="no test episodes"):
        mann.instance_accuracies(lambda seq: seq.targets, [])


def test_nearest_earlier_labels_by_hand():
    x = torch.tensor([[[0.0], [10.0], [0.4], [9.0], [0.1]]])
    targets = torch.tensor([[[1, 5], [2, 6], [3, 7], [4, 8], [0, 0]]])
    out = mann.nearest_earlier_labels(x, targets)
    assert out.tolist() == [[[0, 0], [1, 5], [1, 5], [2, 6], [1, 5]]]


def test_training_lowers_the_loss_and_resumes_from_a_checkpoint(tmp_path):
    sampler = toy_sampler(n_classes=3, per_class=4)
    settings = mann.MANNSettings.quick()
    settings.hidden, settings.memory_slots, settings.memory_size, settings.batch = 16, 8, 8, 8
    model = mann.build_model("mann", settings, sampler)
    history = mann.train_model(model, sampler, settings, 30, checkpoint=tmp_path / "m.pt", progress=False)
    assert len(history.steps) == 30 and history.steps[-1] == 29
    first, last = sum(history["loss"][:5]) / 5, sum(history["loss"][-5:]) / 5
    assert last < first
    resumed = mann.train_model(model, sampler, settings, 32, checkpoint=tmp_path / "m.pt", progress=False)
    assert resumed.steps[:30] == history.steps and resumed.steps[-1] == 31


def test_memory_plots_draw_a_recorded_episode():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metaedu.evaluation import Score
    from metaedu.viz.memory import plot_instance_accuracy, plot_memory_step, plot_memory_trace

    sampler = toy_sampler()
    model = mann.MANN(sampler.input_size, 3, hidden=8, memory_slots=6, memory_size=4, read_heads=2)
    seq = sampler.sample(1)
    logits, trace = model(seq.inputs, record=True)
    figs = [plot_memory_trace(trace, seq),
            plot_memory_step(trace, seq, 3, predicted=mann.predict_characters(logits, seq)),
            plot_instance_accuracy({"MANN": {1: Score(30.0, 2.0, 10), 2: Score(50.0, 3.0, 10)}},
                                   paper={"MANN": {1: 36.4, 2: 82.8}}, chance=20.0)]
    assert len(figs[0].axes) == 6  # three heatmaps and their colour bars
    assert len(figs[1].axes) == 5  # image, memory, three bar charts
    assert len(figs[2].axes[0].lines) >= 3
    for f in figs:
        plt.close(f)


def test_encoder_setting_is_checked_against_the_encoder_given():
    from dataclasses import replace

    g = gen(17)
    images = torch.rand(60, 1, 5, 5, generator=g)
    data = ClassImageSet(images, torch.arange(10).repeat_interleave(6), [str(c) for c in range(10)])
    pixels = replace(mann.MANNSettings.quick(), n_classes=3, per_class=4, image_size=5, encoder="pixels")
    conv = replace(pixels, encoder="conv4")
    enc = lambda x: x.flatten(1)[:, :7]  # noqa: E731
    assert mann.make_sampler(conv, data, encoder=enc).input_size == 7 + 3
    assert mann.make_sampler(pixels, data).input_size == 25 + 3
    with pytest.raises(ValueError, match="needs encoder"):
        mann.make_sampler(conv, data)
    with pytest.raises(ValueError, match="encoder was given"):
        mann.make_sampler(pixels, data, encoder=enc)
    with pytest.raises(ValueError, match="'pixels' or 'conv4'"):
        mann.make_sampler(replace(pixels, encoder="resnet"), data)


@pytest.mark.parametrize("controller,key_strength,write_vector,heads",
                         [("lstm", True, True, 1), ("lstm", False, False, 2), ("feedforward", True, False, 1)])
def test_forward_matches_a_plain_step_by_step_loop(controller, key_strength, write_vector, heads):
    """The forward pass precomputes the input share of the controller and fuses the heads' layers;
    it must equal T calls of the readable ``MANN.step``, and ``step`` the obvious loop written here
    from the layers: controller on [x_t, y_{t-1}, r_{t-1}], then each head's layer, then the memory."""
    torch.manual_seed(1)
    model = mann.MANN(11, 3, hidden=9, memory_slots=7, memory_size=5, read_heads=heads, controller=controller,
                      key_strength=key_strength, write_vector=write_vector).double()
    inputs = torch.rand(3, 8, 11, generator=gen(18), dtype=torch.double)
    B, T, _ = inputs.shape
    state = mann.initial_state(B, 7, 5, heads, dtype=torch.double)
    reads, hc, expected, expected_w = torch.zeros(B, heads * 5, dtype=torch.double), None, [], []
    for t in range(T):
        z = torch.cat([inputs[:, t], reads], -1)
        if controller == "lstm":
            hc = model.controller(z, hc)
            h = hc[0]
        else:
            h = model.controller(z)
        keys = torch.tanh(model.key(h)).view(B, heads, 5)
        strength = 1 + F.softplus(model.strength(h)) if key_strength else None
        values = torch.tanh(model.add(h)).view(B, heads, 5) if write_vector else None
        state, r, write_w = mann.lrua_step(state, keys, model.gate(h), model.gamma, strength, values)
        reads = r.flatten(1)
        expected.append(model.out(torch.cat([h, reads], -1)))
        expected_w.append(write_w)
    stepped, stepped_w, s = [], [], model.initial(B, dtype=torch.double)
    for t in range(T):
        logits, s, write_w = model.step(inputs[:, t], s)
        stepped.append(logits)
        stepped_w.append(write_w)
    torch.testing.assert_close(torch.stack(stepped, 1), torch.stack(expected, 1))  # step = the paper's step
    torch.testing.assert_close(torch.stack(stepped_w, 1), torch.stack(expected_w, 1))
    fast, trace = model(inputs, record=True)
    torch.testing.assert_close(fast, torch.stack(stepped, 1))  # the fast path = T steps
    torch.testing.assert_close(trace["write_w"], torch.stack(stepped_w, 1))
    torch.testing.assert_close(trace["memory"][:, -1], s.memory.memory)


def test_key_strength_starts_sharp_and_training_episodes_can_be_shorter():
    model = mann.MANN(10, 3, hidden=8, memory_slots=4, memory_size=3, read_heads=1, key_strength=True)
    beta = 1 + F.softplus(model.strength(torch.zeros(1, 8)))
    assert float(beta.detach()) == pytest.approx(1 + math.log1p(math.exp(4.0)), rel=1e-5)
    from dataclasses import replace

    settings = replace(mann.MANNSettings.quick(), n_classes=3, per_class=5, train_per_class=2, image_size=5,
                       encoder="pixels")
    data = toy_sampler().episodes.data
    assert mann.make_sampler(settings, data, training=True).length == 6
    assert mann.make_sampler(settings, data).length == 15
