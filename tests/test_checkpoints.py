"""Checkpoints: named by settings, data and seed; an interrupted run resumes to the uninterrupted result.

Every training function of the package is interrupted part-way (an exception out of a step,
the checkpoint written after every step), then called again from scratch with the same
arguments: the weights it ends with must equal, bit for bit, those of a run never interrupted.
That holds only if the checkpoint holds every piece of state, the random generators included.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
import torch

from metaedu import checkpoints, training
from metaedu.runtime import preset, seeded
from tiny_data import tiny_images


REAL_TRAIN = training.train


class Interrupted(Exception):
    pass


def interrupting(at_step: int):
    """A stand-in for ``training.train`` that saves after every step and stops before step ``at_step``."""
    real = REAL_TRAIN

    def train(step, n_steps, **kwargs):
        def failing(i):
            if i == at_step:
                raise Interrupted(f"interrupted before step {i}")
            return step(i)

        assert kwargs.get("checkpoint") is not None, "the training function passed no checkpoint file"
        kwargs["checkpoint_every"] = 1
        return real(failing, n_steps, **kwargs)

    return train


# ----------------------------------------------------------------------------- one case per training function


def run_protonet(checkpoint):
    from metaedu.algorithms import protonet

    s = replace(
        preset(protonet.ProtoNetSettings, "quick"), hidden=4, train_way=4, train_query=2, steps=6, lr_halve_every=2
    )
    return protonet.train_protonet(s, tiny_images(), seed=1, checkpoint=checkpoint, progress=False)[0]


def run_zero_shot(checkpoint):
    from metaedu.algorithms import protonet
    from metaedu.nn.backbones import Conv4

    s = replace(
        preset(protonet.ZeroShotSettings, "quick"),
        embed_dim=4,
        meta_hidden=5,
        train_way=4,
        train_query=2,
        tasks=1,
        steps=6,
    )
    with seeded(0):
        encoder = Conv4(hidden=4, image_size=16)
    data = tiny_images()
    return protonet.train_zero_shot(
        s, encoder, data, torch.eye(data.n_classes), seed=1, checkpoint=checkpoint, progress=False
    )[0]


def run_matching(checkpoint):
    from metaedu.algorithms import matching

    s = replace(preset(matching.MatchingSettings, "quick"), hidden=4, train_way=3, train_query=2, steps=6)
    return matching.train_matching(s, tiny_images(), seed=1, checkpoint=checkpoint, progress=False)[0]


def run_siamese(checkpoint):
    from metaedu.algorithms import siamese

    s = replace(preset(siamese.SiameseSettings, "quick"), hidden=4, pair_classes=4, steps=6)
    return siamese.train_siamese(s, tiny_images(), seed=1, checkpoint=checkpoint, progress=False)[0]


def run_transfer(checkpoint):
    from metaedu.algorithms import transfer

    s = replace(preset(transfer.TransferSettings, "quick"), hidden=4, epochs=2, batch_size=24)  # 3 steps an epoch
    return transfer.pretrain_classifier(tiny_images(), s, seed=1, checkpoint=checkpoint, progress=False)[0]


def run_mann(checkpoint):
    from metaedu.algorithms import mann

    s = replace(
        preset(mann.MANNSettings, "quick"),
        n_classes=3,
        per_class=4,
        train_per_class=4,
        image_size=4,
        hidden=6,
        memory_slots=4,
        memory_size=3,
        batch=2,
        encoder="pixels",
        seed=1,
    )
    sampler = mann.make_sampler(s, tiny_images(), training=True)
    model = mann.build_model("mann", s, sampler)
    mann.train_model(model, sampler, s, 6, checkpoint=checkpoint, progress=False)
    return model


def run_maml(checkpoint):
    from metaedu.algorithms import maml
    from metaedu.tasks.regression import SinusoidTasks

    s = replace(preset(maml.SinusoidSettings, "quick"), hidden=(8,), meta_batch=3, steps=6)
    with seeded(0):
        learner = maml.sinusoid_learner(s)
    maml.meta_train(learner, SinusoidTasks(s.k_shot, s.n_query, seed=1), s, checkpoint=checkpoint, progress=False)
    return learner


def run_maml_pretrain(checkpoint):
    from metaedu.algorithms import maml
    from metaedu.nn.backbones import MLP
    from metaedu.tasks.regression import SinusoidTasks

    s = replace(preset(maml.SinusoidSettings, "quick"), hidden=(8,), meta_batch=3, pretrain_steps=6)
    with seeded(0):
        model = MLP((1, 8, 1))
    maml.pretrain(model, SinusoidTasks(s.k_shot, s.n_query, seed=1), s, progress=False, checkpoint=checkpoint)
    return model


def run_meta_lstm(checkpoint):
    from metaedu.algorithms import meta_lstm
    from metaedu.tasks.episodes import EpisodeSampler

    s = meta_lstm.MetaLSTMSettings(
        n_way=3,
        k_shot=1,
        n_query=2,
        filters=3,
        blocks=2,
        lstm_hidden=4,
        updates=2,
        meta_batch=2,
        meta_steps=6,
        val_every=2,
        val_episodes=3,
    )
    data = tiny_images()
    meta = meta_lstm.build(s, seed=1, image_size=16)
    validation = EpisodeSampler(data, 3, 1, 2, seed=9).sample(3)
    meta_lstm.meta_train(
        meta, EpisodeSampler(data, 3, 1, 2, seed=1), s, checkpoint=checkpoint, progress=False, validation=validation
    )
    return meta


def run_baselines_pretrain(checkpoint):
    from metaedu.algorithms import baselines, meta_lstm

    s = replace(preset(baselines.BaselineSettings, "quick"), pretrain_steps=6, batch_size=8)
    learner = meta_lstm.ConvLearner(3, 3, 2, image_size=16)
    theta, _ = baselines.pretrain(learner, tiny_images(), s, seed=1, progress=False, checkpoint=checkpoint)
    return {"theta": theta}


def run_learned_optimizer(checkpoint):
    from metaedu.algorithms import learned_optimizer as lo
    from metaedu.tasks.optimizees import QuadraticProblem

    s = lo.LearnedOptimizerSettings(hidden=4, horizon=6, unroll=2, quad_dim=3)  # 3 segments a run
    with seeded(0):
        opt = lo.CoordinatewiseLSTM.from_settings(s)
    lo.meta_train(
        opt, QuadraticProblem(dim=3, seed=1), s, episodes=2, meta_batch=4, progress=False, checkpoint=checkpoint
    )
    return opt


def run_memorization(checkpoint):
    from metaedu.algorithms import memorization_experiments as mx
    from metaedu.tasks.nonexclusive import OneHotSinusoidTasks

    s = replace(
        preset(mx.MemorizationSinusoidSettings, "quick"),
        regularizer="weights",  # the reparameterisation noise has its own generator, which must resume too
        beta=1e-3,
        encoder_hidden=(8,),
        z_dim=4,
        head_hidden=(8,),
        meta_batch=3,
        steps=6,
    )
    model = mx.build(s, mx.input_dim("sinusoid", s))
    tasks = OneHotSinusoidTasks(s.k_shot, s.n_query, s.n_amplitudes, seed=1)
    mx.meta_train(model, tasks, s, checkpoint=checkpoint, progress=False)
    return model


#: (training function, the step before which it is interrupted)
def run_platipus(checkpoint):
    from metaedu.algorithms import platipus
    from metaedu.tasks.regression import LinesOrSinesTasks

    s = replace(preset(platipus.LinesOrSinesSettings, "quick"), hidden=(8,), meta_batch=3, steps=6)
    learner = platipus.regression_learner(s, seed=0)
    sampler = LinesOrSinesTasks(s.k_shot, s.n_query, s.noise_std, seed=1, support_range=s.support_range)
    platipus.meta_train(learner, sampler, s, torch.Generator().manual_seed(2), checkpoint=checkpoint, progress=False)
    return learner


def run_attribute_encoder(checkpoint):
    from metaedu.algorithms import platipus

    s = replace(preset(platipus.AmbiguousGlyphSettings, "quick"), hidden=4, encoder_epochs=3)
    data = tiny_images()
    values = torch.randint(-1, 2, (len(data.targets), 3), generator=torch.Generator().manual_seed(0))
    net, _ = platipus.attribute_encoder(data.images, values, s, seed=1, checkpoint=checkpoint, progress=False,
                                         batch_size=16)
    return net


def run_gnn(checkpoint):
    from metaedu.algorithms import gnn

    s = replace(preset(gnn.SemiSupervisedGNNSettings, "quick"), n_way=3, k_shot=2, hidden=4, gc_width=3,
                edge_hidden=(4,), tasks=2, steps=6, active=True)  # active: the sampler's generator picks nodes too
    return gnn.train_gnn(s, tiny_images(), seed=1, checkpoint=checkpoint, progress=False)[0]


def run_arml(checkpoint):
    from metaedu.algorithms import arml
    from metaedu.tasks.regression2d import FamilyTasks

    s = replace(preset(arml.ARMLSettings, "quick"), hidden=(6,), embed_dim=5, code=3, meta_batch=3, steps=6)
    net = arml.build(s, seed=0)
    arml.train_arml(net, FamilyTasks(s.k_shot, s.n_query, seed=1), s, checkpoint=checkpoint, progress=False)
    return net


CASES = {
    "protonet": (run_protonet, 3),
    "zero_shot": (run_zero_shot, 3),
    "matching": (run_matching, 3),
    "siamese": (run_siamese, 3),
    "transfer": (run_transfer, 4),  # in the middle of the second epoch
    "mann": (run_mann, 3),
    "maml": (run_maml, 3),
    "maml_pretrain": (run_maml_pretrain, 3),
    "meta_lstm": (run_meta_lstm, 3),  # between two validation scores
    "baselines_pretrain": (run_baselines_pretrain, 3),
    "learned_optimizer": (run_learned_optimizer, 4),  # mid-run
    "memorization": (run_memorization, 3),
    "platipus": (run_platipus, 3),
    "attribute_encoder": (run_attribute_encoder, 4),  # in the middle of an epoch after the first
    "gnn": (run_gnn, 3),
    "arml": (run_arml, 3),
}


def weights(result) -> dict[str, torch.Tensor]:
    state = result.state_dict() if hasattr(result, "state_dict") else result
    return {k: v.detach().clone() for k, v in state.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(name, tmp_path, monkeypatch):
    run, stop_at = CASES[name]
    monkeypatch.setenv("METAEDU_CACHE", str(tmp_path / "cache"))
    uninterrupted = weights(run(None))

    path = tmp_path / f"{name}.pt"
    with monkeypatch.context() as patch:
        stand_in = interrupting(stop_at)
        patch.setattr(training, "train", stand_in)
        for module in [m for n, m in sys.modules.items() if n.startswith("metaedu.")]:
            if getattr(module, "train", None) is REAL_TRAIN:  # imported by name
                patch.setattr(module, "train", stand_in)
        with pytest.raises(Interrupted):
            run(path)
    saved = torch.load(path, weights_only=False)
    assert saved["step"] == stop_at  # the file holds the steps done before the interruption
    resumed = weights(run(path))
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=0, atol=0, msg=key)


# ----------------------------------------------------------------------------- names


def test_names_follow_settings_data_and_seed_and_nothing_else(tmp_path, monkeypatch):
    from metaedu.algorithms.protonet import ProtoNetSettings

    monkeypatch.setenv("METAEDU_CACHE", str(tmp_path))
    s, data = ProtoNetSettings.quick(), tiny_images()
    path = checkpoints.checkpoint_path("protonet", s, data, 0)
    assert path.parent == tmp_path / "checkpoints" and path.name.startswith("protonet-")
    assert checkpoints.checkpoint_path("protonet", s, tiny_images(), 0) == path  # the same content, rebuilt
    assert checkpoints.checkpoint_path("protonet", replace(s, checkpoint=True), data, 0) == path  # not a setting
    others = [
        checkpoints.checkpoint_path("protonet", replace(s, lr=s.lr * 2), data, 0),
        checkpoints.checkpoint_path("protonet", s, tiny_images(seed=1), 0),
        checkpoints.checkpoint_path("protonet", s, data, 1),
        checkpoints.checkpoint_path("matching", s, data, 0),
    ]
    assert len({path, *others}) == 5


def test_resolve_follows_the_mode_unless_told(tmp_path, monkeypatch):
    from metaedu.algorithms.protonet import ProtoNetSettings

    monkeypatch.setenv("METAEDU_CACHE", str(tmp_path))
    quick, full, data = preset(ProtoNetSettings, "quick"), preset(ProtoNetSettings, "full"), tiny_images()
    assert checkpoints.resolve(None, "protonet", quick, data, 0) is None
    auto = checkpoints.resolve(None, "protonet", full, data, 0)
    assert auto == checkpoints.checkpoint_path("protonet", full, data, 0)
    assert auto.with_suffix(".json").exists()  # what was hashed, for people
    assert checkpoints.resolve(True, "protonet", quick, data, 0) == checkpoints.checkpoint_path(
        "protonet", quick, data, 0
    )
    assert checkpoints.resolve(False, "protonet", full, data, 0) is None
    assert checkpoints.resolve(tmp_path / "mine.pt", "protonet", quick, data, 0) == tmp_path / "mine.pt"


def test_fingerprints_see_weights_generators_and_refuse_the_unknown():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        b.load_state_dict(a.state_dict())
        assert checkpoints.fingerprint(a) == checkpoints.fingerprint(b)
        b.weight[0, 0] += 1
    assert checkpoints.fingerprint(a) != checkpoints.fingerprint(b)
    g = torch.Generator().manual_seed(0)
    before = checkpoints.fingerprint(g)
    torch.rand(1, generator=g)
    assert checkpoints.fingerprint(g) != before
    with pytest.raises(TypeError, match="cannot fingerprint"):
        checkpoints.fingerprint(object())
    from metaedu.algorithms.protonet import ProtoNetSettings

    with pytest.raises(ValueError, match="checkpoint name"):
        checkpoints.checkpoint_path("no spaces", ProtoNetSettings.quick())


def test_full_presets_checkpoint_and_quick_presets_do_not():
    from test_settings import CLASSES

    for cls in CLASSES:
        assert preset(cls, "full").checkpoint and not preset(cls, "quick").checkpoint, cls.__name__
