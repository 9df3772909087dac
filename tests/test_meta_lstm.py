"""Meta-learner LSTM (Ravi & Larochelle 2017) and its baselines, checked against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaedu.algorithms import baselines
from metaedu.algorithms import meta_lstm as ml
from metaedu.data.base import ClassImageSet
from metaedu.nn.preprocess import preprocess
from metaedu.tasks.episodes import EpisodeSampler

torch.set_num_threads(1)


def reference_net(learner: ml.ConvLearner) -> nn.Sequential:
    """The learner written with ordinary torch layers (batch norm always on batch statistics)."""
    layers: list[nn.Module] = []
    c_in = learner.in_channels
    for _ in range(learner.blocks):
        layers += [
            nn.Conv2d(c_in, learner.filters, 3, padding=1),
            nn.BatchNorm2d(learner.filters, track_running_stats=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        c_in = learner.filters
    layers += [nn.Flatten(), nn.Linear(learner.feature_dim, learner.n_way)]
    return nn.Sequential(*layers)


def tiny_settings(**kw) -> ml.MetaLSTMSettings:
    base = dict(n_way=3, k_shot=2, n_query=2, filters=3, blocks=2, lstm_hidden=5, updates=3, meta_batch=2)
    base.update(kw)
    return ml.MetaLSTMSettings(**base)


def random_episode(tasks=2, n_way=3, k_shot=2, n_query=2, size=12, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(tasks, n_way * k_shot, 1, size, size, generator=g, dtype=dtype)
    xq = torch.rand(tasks, n_way * n_query, 1, size, size, generator=g, dtype=dtype)
    ys = torch.arange(n_way).repeat_interleave(k_shot).expand(tasks, -1).contiguous()
    yq = torch.arange(n_way).repeat_interleave(n_query).expand(tasks, -1).contiguous()
    from metaedu.tasks.episodes import Episodes

    return Episodes(xs, ys, xq, yq, torch.zeros(tasks, n_way, dtype=torch.long), n_way, k_shot, n_query)


# --- the learner --------------------------------------------------------------------------


@pytest.mark.parametrize("n_way,filters,blocks,size", [(3, 3, 2, 12), (5, 4, 3, 16), (2, 2, 4, 28)])
def test_learner_matches_torch_layers_for_any_size(n_way, filters, blocks, size):
    learner = ml.ConvLearner(n_way, filters, blocks, image_size=size)
    net = reference_net(learner)
    assert learner.n_params == sum(p.numel() for p in net.parameters())
    eps = random_episode(tasks=2, n_way=n_way, size=size)
    thetas = torch.stack([learner.init(torch.Generator().manual_seed(s)) for s in (1, 2)])  # [2, P]
    thetas[:, learner.offsets["head.bias"]] += 0.3  # make every part of theta matter
    out = learner.logits(thetas, eps.x_support)
    assert out.shape == (2, n_way * eps.k_shot, n_way)
    for t in range(2):  # slow per-task loop with torch's own layers
        torch.nn.utils.vector_to_parameters(thetas[t], net.parameters())
        torch.testing.assert_close(out[t], net(eps.x_support[t]), rtol=1e-4, atol=1e-5)
    layers = learner.layers()
    assert len(layers) == blocks + 1
    covered = sorted((sl.start, sl.stop) for sl in layers.values())
    assert covered[0][0] == 0 and covered[-1][1] == learner.n_params
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))


def test_query_uses_support_statistics_and_is_not_transductive():
    learner = ml.ConvLearner(3, 3, 2, image_size=12)
    eps = random_episode()
    theta = learner.init(torch.Generator().manual_seed(0)).expand(2, -1)
    q = ml.query_logits(learner, theta, eps)
    # the support part alone equals ordinary batch norm on the support batch
    s = learner.logits(theta, eps.x_support)
    x = torch.cat([eps.x_support, eps.x_query], 1)
    torch.testing.assert_close(learner.logits(theta, x, n_stats=eps.x_support.shape[1])[:, :6], s, rtol=1e-4, atol=1e-5)
    # changing one query image changes its own scores only
    eps.x_query[:, 0] = 1.0 - eps.x_query[:, 0]
    q2 = ml.query_logits(learner, theta, eps)
    torch.testing.assert_close(q2[:, 1:], q[:, 1:])
    assert not torch.allclose(q2[:, 0], q[:, 0])


# --- the meta-learner ---------------------------------------------------------------------


def test_sgd_special_case_reproduces_torch_sgd():
    """f_t = 1 and i_t = alpha turn the LSTM cell update into plain SGD (checked against torch.optim.SGD)."""
    torch.manual_seed(0)
    s = tiny_settings()
    meta = ml.build(s, image_size=12).double()
    alpha = 0.05
    meta.set_sgd(alpha)
    eps = random_episode(dtype=torch.float64)
    theta_T, trace, _ = ml.train_learner(meta, eps.x_support, eps.y_support, updates=4, record=True)
    assert torch.all(trace.forget_gate == 1.0)
    torch.testing.assert_close(trace.input_gate, torch.full_like(trace.input_gate, alpha))
    net = reference_net(meta.learner).double()
    for t in range(eps.tasks):
        torch.nn.utils.vector_to_parameters(meta.c0.detach().clone(), net.parameters())
        opt = torch.optim.SGD(net.parameters(), lr=alpha)
        for _ in range(4):
            opt.zero_grad()
            F.cross_entropy(net(eps.x_support[t]), eps.y_support[t]).backward()
            opt.step()
        torch.testing.assert_close(theta_T[t].detach(), torch.nn.utils.parameters_to_vector(net.parameters()))
    # and the baseline's gradient descent is the same rule
    torch.testing.assert_close(
        baselines.sgd(meta.learner, meta.c0.detach(), eps.x_support, eps.y_support, alpha, 4), theta_T.detach()
    )


def test_gates_lie_strictly_between_zero_and_one_and_start_as_the_paper_says():
    s = tiny_settings()
    meta = ml.build(s, image_size=12, seed=3)
    eps = random_episode()
    eps.x_support = eps.x_support * 100.0  # large gradients and losses
    _, trace, thetas = ml.train_learner(meta, eps.x_support, eps.y_support, updates=5, record=True)
    for gate in (trace.input_gate, trace.forget_gate):
        assert gate.shape == (5, 2, meta.learner.n_params)
        assert torch.all(gate > 0) and torch.all(gate < 1)
    assert trace.forget_gate.mean() > 0.95  # forget bias large: keep theta
    assert trace.input_gate.mean() < 0.05  # input bias small: a small learning rate
    assert len(thetas) == 6 and all(t.shape == (2, meta.learner.n_params) for t in thetas)


def test_one_step_matches_the_lstm_equations_written_out():
    """Equations (2)-(4) for one coordinate, by hand, against the batched implementation."""
    s = tiny_settings(lstm_hidden=4)
    meta = ml.build(s, image_size=12, seed=1)
    P = meta.learner.n_params
    state = meta.start(2)
    grad = torch.randn(2, P) * 0.1
    loss = torch.tensor([1.1, 0.7])
    new = meta.step(state, grad, loss)
    t, k = 1, 17  # one task, one coordinate
    x = torch.cat([preprocess(grad[t, k]), preprocess(loss[t])])  # [4]
    W_ih, W_hh, b_ih, b_hh = meta.lstm.weight_ih, meta.lstm.weight_hh, meta.lstm.bias_ih, meta.lstm.bias_hh
    z = W_ih @ x + W_hh @ torch.zeros(4) + b_ih + b_hh
    ig, fg, gg, og = z.chunk(4)
    c = torch.sigmoid(ig) * torch.tanh(gg)  # previous cell is zero
    h = torch.sigmoid(og) * torch.tanh(c)
    theta_prev = meta.c0[k]
    i = torch.sigmoid(meta.W_I @ torch.cat([h, theta_prev[None], torch.zeros(1)]) + meta.b_I)
    f = torch.sigmoid(meta.W_F @ torch.cat([h, theta_prev[None], torch.zeros(1)]) + meta.b_F)
    torch.testing.assert_close(new.input_gate[t, k], i)
    torch.testing.assert_close(new.forget_gate[t, k], f)
    torch.testing.assert_close(new.theta[t, k], f * theta_prev - i * grad[t, k])


def test_meta_gradient_of_an_update_matches_finite_differences():
    s = tiny_settings(lstm_hidden=3, filters=2)
    meta = ml.build(s, image_size=12, seed=2).double()
    P = meta.learner.n_params
    grads = [torch.randn(2, P, dtype=torch.float64) * 0.1 for _ in range(2)]
    losses = [torch.tensor([1.2, 0.9], dtype=torch.float64), torch.tensor([0.8, 1.5], dtype=torch.float64)]
    weights = torch.randn(2, P, dtype=torch.float64)

    def objective(W_I, W_F, b_I, c0):
        zeros = torch.zeros(2, P, dtype=c0.dtype)
        state = ml.CellState(c0.expand(2, P), zeros, zeros, torch.zeros(2 * P, 3, dtype=c0.dtype), torch.zeros(2 * P, 3, dtype=c0.dtype))
        for g, l in zip(grads, losses):  # two updates: theta_2 depends on Theta through both
            state = torch.func.functional_call(meta, {"W_I": W_I, "W_F": W_F, "b_I": b_I}, (state, g, l))
        return (state.theta * weights).sum()

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in (meta.W_I, meta.W_F, meta.b_I, meta.c0))
    assert torch.autograd.gradcheck(objective, inputs, eps=1e-6, atol=1e-5)


def test_bad_inputs_are_named():
    learner = ml.ConvLearner(3, 3, 2, image_size=12)
    with pytest.raises(ValueError, match="theta must be"):
        learner.logits(torch.zeros(2, 5), torch.zeros(2, 4, 1, 12, 12))
    with pytest.raises(ValueError, match="expects 1x12x12"):
        learner.logits(torch.zeros(2, learner.n_params), torch.zeros(2, 4, 1, 28, 28))
    with pytest.raises(ValueError, match="halve"):
        ml.ConvLearner(3, 3, blocks=5, image_size=16)
    with pytest.raises(ValueError, match="n_way"):
        ml.ConvLearner(0)
    meta = ml.build(tiny_settings(), image_size=12)
    with pytest.raises(ValueError, match="learning rate"):
        meta.set_sgd(1.5)


# --- training ---------------------------------------------------------------------------


def tiny_class_set(n_classes=30, per_class=6, size=12, seed=0) -> ClassImageSet:
    """Classes = random 12 x 12 binary patterns, images = a pattern plus noise: a tiny, learnable family."""
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(n_classes, 1, 1, size, size, generator=g) > 0.5).float()
    images = (patterns + 0.3 * torch.randn(n_classes, per_class, 1, size, size, generator=g)).clamp(0, 1)
    targets = torch.arange(n_classes).repeat_interleave(per_class)
    return ClassImageSet(images.flatten(0, 1), targets, [f"c{i}" for i in range(n_classes)], name="tiny patterns")


def test_meta_training_lowers_the_meta_loss_on_a_tiny_problem():
    s = tiny_settings(filters=4, meta_steps=40, meta_lr=0.01, updates=3)
    meta = ml.build(s, image_size=12, seed=0)
    data = tiny_class_set()
    fixed = EpisodeSampler(data, s.n_way, s.k_shot, s.n_query, seed=123).sample(16)  # the same episodes before and after
    with torch.no_grad():
        before, _ = ml.meta_loss(meta, fixed, s.updates)
    history = ml.meta_train(meta, EpisodeSampler(data, s.n_way, s.k_shot, s.n_query, seed=0), s, progress=False)
    with torch.no_grad():
        after, _ = ml.meta_loss(meta, fixed, s.updates)
    assert len(history["loss"]) == s.meta_steps
    assert float(after) < 0.7 * float(before), (float(before), float(after))


def test_trace_episode_reports_accuracy_per_update():
    s = tiny_settings(filters=3, updates=2)
    meta = ml.build(s, image_size=12)
    eps = EpisodeSampler(tiny_class_set(), 3, 2, 2, seed=0).sample(2)
    tr = ml.trace_episode(meta, eps, s.updates)
    assert tr["query_acc"].shape == (3, 2) and tr["train_loss"].shape == (2, 2)
    assert torch.all((tr["query_acc"] >= 0) & (tr["query_acc"] <= 100))
    direct = (ml.predictor(meta, s.updates)(eps).argmax(-1) == eps.y_query).float().mean(1) * 100
    torch.testing.assert_close(tr["query_acc"][-1], direct)


def test_nearest_neighbour_labels_copies_of_the_support_correctly():
    learner = ml.ConvLearner(3, 3, 2, image_size=12)
    theta = learner.init(torch.Generator().manual_seed(0))
    eps = random_episode(k_shot=2, n_query=2)
    eps.x_query = eps.x_support.clone()  # every query is a support image
    eps.y_query = eps.y_support.clone()
    pred = baselines.nearest_neighbour_predictor(learner, theta)(eps)
    assert torch.equal(pred, eps.y_query)


# --- honest baseline tuning ---------------------------------------------------------------


def grouped_class_set() -> ClassImageSet:
    data = tiny_class_set(n_classes=40, per_class=6)
    data.groups = [f"alphabet {c % 8}" for c in range(40)]  # 8 alphabets of 5 classes
    return data


def test_validation_split_holds_out_whole_alphabets():
    data = grouped_class_set()
    train, val = baselines.validation_split(data, fraction=0.2, seed=1)
    assert set(train.groups).isdisjoint(val.groups)
    assert set(train.class_names).isdisjoint(val.class_names)
    assert train.n_classes + val.n_classes == data.n_classes
    assert 0.2 * 40 <= val.n_classes <= 1.5 * 0.2 * 40
    for part in (train, val):  # images stay with their classes
        for c, name in enumerate(part.class_names):
            original = data.class_names.index(name)
            assert torch.equal(part.images[part.targets == c], data.images[data.targets == original])
    with pytest.raises(ValueError, match="fraction"):
        baselines.validation_split(data, fraction=1.0)


def test_tune_finetune_picks_the_best_cell_of_independent_runs():
    data = grouped_class_set()
    learner = ml.ConvLearner(3, 3, 2, image_size=12)
    theta = learner.init(torch.Generator().manual_seed(0))
    s = baselines.BaselineSettings(finetune_lrs=(0.05, 0.5), finetune_step_grid=(3, 1), tune_episodes=6, tune_query=2)
    tuning = baselines.tune_finetune(learner, theta, data, s, k_shot=2, seed=5)
    assert set(tuning.accuracy) == {(0.05, 1), (0.05, 3), (0.5, 1), (0.5, 3)}
    eps = EpisodeSampler(data, 3, 2, 2, seed=5).sample(6)  # the same episodes, each cell run from scratch
    for (lr, steps), acc in tuning.accuracy.items():
        predict = baselines.finetune_predictor(learner, theta, lr, steps)
        direct = (predict(eps).argmax(-1) == eps.y_query).float().mean() * 100
        assert abs(float(direct) - acc) < 1e-4, (lr, steps, float(direct), acc)
    assert tuning.accuracy[tuning.lr, tuning.steps] >= max(tuning.accuracy.values()) - s.tune_tolerance
    cheaper = [c for c, a in tuning.accuracy.items() if c[1] < tuning.steps]
    assert all(tuning.accuracy[c] < max(tuning.accuracy.values()) - s.tune_tolerance for c in cheaper)


def test_validation_keeper_restores_the_best_scoring_weights():
    s = tiny_settings(filters=4, meta_steps=12, meta_lr=0.05, updates=2, val_every=3)
    meta = ml.build(s, image_size=12, seed=0)
    data = tiny_class_set()
    val = EpisodeSampler(data, s.n_way, s.k_shot, s.n_query, seed=9).sample(8)
    history = ml.meta_train(meta, EpisodeSampler(data, s.n_way, s.k_shot, s.n_query, seed=0), s, progress=False,
                            validation=val)
    assert history["val_step"] == [3, 6, 9, 12]
    direct = (ml.predictor(meta, s.updates)(val).argmax(-1) == val.y_query).float().mean() * 100
    assert abs(float(direct) - max(history["val_acc"])) < 1e-4  # the kept weights are the best scored ones


def test_build_starts_c0_from_a_given_network():
    s = tiny_settings()
    learner = ml.ConvLearner(s.n_way, s.filters, s.blocks, image_size=12)
    theta0 = learner.init(torch.Generator().manual_seed(4))
    meta = ml.build(s, image_size=12, theta0=theta0)
    torch.testing.assert_close(meta.c0.detach(), theta0)
    with pytest.raises(ValueError, match="theta0 must be"):
        ml.build(s, image_size=12, theta0=theta0[:-1])


# --- starting as the tuned fine-tune rule, paired evaluation ----------------------------------


def test_start_as_finetune_sets_the_step_size_and_count_only_when_asked():
    s = tiny_settings(finetune_start=True, forget_bias=(8.0, 8.0), weight_scale=0.0)
    started = ml.start_as_finetune(s, lr=0.1, steps=6)
    assert started.updates == 6 and s.updates == 3  # a copy; the original is untouched
    meta = ml.build(started, image_size=12, seed=0)
    assert abs(torch.sigmoid(meta.b_I).item() - 0.1) < 1e-6
    # with zero gate weights the meta-learner is fine-tuning at lr 0.1, up to the forget gate sigmoid(8)
    eps = random_episode()
    _, trace, _ = ml.train_learner(meta, eps.x_support, eps.y_support, updates=started.updates, record=True)
    torch.testing.assert_close(trace.input_gate, torch.full_like(trace.input_gate, 0.1))
    assert torch.all(trace.forget_gate < 1) and torch.all(trace.forget_gate > 0.999)
    paper = tiny_settings()  # finetune_start False: the paper's initialisation is kept
    assert ml.start_as_finetune(paper, lr=0.1, steps=6) is paper
    with pytest.raises(ValueError, match="step size"):
        ml.start_as_finetune(s, lr=1.5, steps=6)
    with pytest.raises(ValueError, match="step count"):
        ml.start_as_finetune(s, lr=0.1, steps=0)


def test_quick_settings_start_as_finetune_from_the_pretrained_network():
    q = ml.MetaLSTMSettings.quick()
    assert q.finetune_start and q.warm_start
    assert not ml.MetaLSTMSettings.full().finetune_start  # full mode keeps the paper's initialisation


def test_episode_accuracies_are_the_values_behind_episode_accuracy():
    from metaedu.evaluation import episode_accuracies, episode_accuracy, mean_ci

    data = tiny_class_set()
    learner = ml.ConvLearner(3, 3, 2, image_size=12)
    theta = learner.init(torch.Generator().manual_seed(0))
    predict = baselines.nearest_neighbour_predictor(learner, theta)
    accs = episode_accuracies(predict, EpisodeSampler(data, 3, 2, 2, seed=4), n_episodes=7, batch=3)
    assert accs.shape == (7,)
    score = episode_accuracy(predict, EpisodeSampler(data, 3, 2, 2, seed=4), n_episodes=7, batch=3)
    assert abs(mean_ci(accs).mean - score.mean) < 1e-6 and abs(mean_ci(accs).ci95 - score.ci95) < 1e-6
    # per episode: recomputed one batch at a time from the same sampler
    eps = EpisodeSampler(data, 3, 2, 2, seed=4).sample(3)
    direct = (predict(eps) == eps.y_query).float().mean(1) * 100
    torch.testing.assert_close(accs[:3], direct)
    # another method on the same episodes: the paired difference is the difference episode by episode
    finetune = baselines.finetune_predictor(learner, theta, lr=0.5, steps=2)
    other = episode_accuracies(finetune, EpisodeSampler(data, 3, 2, 2, seed=4), n_episodes=7, batch=3)
    direct_other = (finetune(eps).argmax(-1) == eps.y_query).float().mean(1) * 100
    torch.testing.assert_close(other[:3], direct_other)
    assert not torch.equal(accs, other)  # the two methods differ on some episode, so the check below has teeth
    torch.testing.assert_close(accs[:3] - other[:3], direct - direct_other)


def test_pretraining_learns_whole_set_classification_and_hands_over_a_zero_head():
    """Known answer: pre-training on separable classes gives features in which every image lies nearest
    its own class mean, computed here through an independent torch network with the same weights."""
    from tiny_data import tiny_images

    data = tiny_images(n_classes=6, per_class=8)
    learner = ml.ConvLearner(3, 4, 2, image_size=16)
    s = baselines.BaselineSettings(pretrain_steps=150, batch_size=16, pretrain_lr=1e-2)
    theta, history = baselines.pretrain(learner, data, s, seed=0, progress=False)
    assert theta.shape == (learner.n_params,) and not theta.requires_grad
    assert (theta[learner.offsets["head.weight"].start:] == 0).all()  # a fresh (zero) n_way head
    assert sum(history["loss"][-10:]) < 0.2 * sum(history["loss"][:10])
    net = reference_net(learner)  # the learner as torch layers, loaded with the pre-trained body
    with torch.no_grad():
        for i, (conv, bn) in enumerate(zip(net[0::4][:learner.blocks], net[1::4][:learner.blocks]), 1):
            conv.weight.copy_(theta[learner.offsets[f"conv{i}.weight"]].view_as(conv.weight))
            conv.bias.copy_(theta[learner.offsets[f"conv{i}.bias"]])
            bn.weight.copy_(theta[learner.offsets[f"bn{i}.weight"]])
            bn.bias.copy_(theta[learner.offsets[f"bn{i}.bias"]])
        z = net[:-1](data.float_images())  # [N, D] features (batch statistics of the whole set)
        torch.testing.assert_close(z, learner.features(theta[None], data.float_images()[None])[0])
        means = torch.stack([z[data.targets == c].mean(0) for c in range(6)])  # [6, D]
        nearest = torch.cdist(z, means).argmin(1)
    assert (nearest == data.targets).float().mean() == 1.0
    again, _ = baselines.pretrain(learner, data, s, seed=0, progress=False)
    assert torch.equal(theta, again)  # the seed decides everything


# --- the stored quick-mode fine-tune choice -------------------------------------------------


def load_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stored_fine_tune_choice_is_a_cell_of_the_quick_grid():
    base = baselines.BaselineSettings.quick()
    assert base.finetune_chosen == baselines.QUICK_FINETUNE
    assert sorted(k for k, _, _ in baselines.QUICK_FINETUNE) == [1, 5]  # the shots lecture 02 tests
    for _, lr, steps in baselines.QUICK_FINETUNE:
        assert lr in base.finetune_lrs and steps in base.finetune_step_grid


@pytest.mark.slow
def test_the_stored_fine_tune_choice_is_what_the_tuning_script_chooses():
    """scripts/choose_quick_finetune.py reruns the grid (about 50 s of CPU); the stored rows must match."""
    script = load_script("choose_quick_finetune")
    assert script.as_rows(script.choose()) == baselines.QUICK_FINETUNE


def test_sgd_with_a_fixed_forget_gate_is_the_cell_update_with_both_gates_fixed():
    """baselines.sgd(forget=f) = the meta-learner's update with f_t = f and i_t = lr, written out step by step."""
    torch.manual_seed(1)
    s = tiny_settings()
    meta = ml.build(s, image_size=12).double()
    eps = random_episode(dtype=torch.float64)
    theta = meta.c0.detach().expand(eps.tasks, -1)
    for _ in range(3):
        current = theta.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(meta.learner.task_losses(current, eps.x_support, eps.y_support).sum(), current)
        theta = ml.cell_update(theta, grad, 0.05, 0.9)  # f * theta - i * grad
    torch.testing.assert_close(baselines.sgd(meta.learner, meta.c0.detach(), eps.x_support, eps.y_support, 0.05, 3,
                                             forget=0.9), theta)
    with pytest.raises(ValueError, match="forget"):
        baselines.sgd(meta.learner, meta.c0.detach(), eps.x_support, eps.y_support, 0.05, 1, forget=1.5)
