"""Library code never touches the global random state: it takes a seed or a torch.Generator.

Only ``runtime.seed_everything`` (called by a notebook or script) sets the global state, and
``runtime.seeded`` lends a seeded global generator to a block and restores it after.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import metaedu
from metaedu.runtime import preset, seeded
from tiny_data import tiny_images

#: Files allowed to set the global seed, and why.
ALLOWED = {
    "runtime.py": "seed_everything and seeded are the two sanctioned ways",
    "grading/stage_b.py": "runs alone in the grader's sandbox process, seeding it for the student's code",
}
SETS_GLOBAL_STATE = re.compile(
    r"torch\.manual_seed\(|torch\.cuda\.manual_seed|np\.random\.seed\(|"
    r"(?<![\w.])random\.seed\(|torch\.set_rng_state\("
)


def test_no_module_sets_the_global_seed():
    root = Path(metaedu.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in ALLOWED:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SETS_GLOBAL_STATE.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "library code sets the global random state:\n" + "\n".join(found)


def test_seeded_gives_the_same_draws_and_restores_the_state():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded(7):
        a = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)  # the global state moves on ...
    with seeded(7):
        b = torch.rand(3)
    assert torch.equal(a, b)  # ... and the seeded block does not notice


def _protonet(data, seed):
    from metaedu.algorithms import protonet

    s = replace(preset(protonet.ProtoNetSettings, "quick"), hidden=4, train_way=4, train_query=2, steps=2)
    return protonet.train_protonet(s, data, seed=seed, progress=False)[0]


def _zero_shot(data, seed):
    from metaedu.algorithms import protonet
    from metaedu.nn.backbones import Conv4

    s = replace(
        preset(protonet.ZeroShotSettings, "quick"),
        embed_dim=4,
        meta_hidden=5,
        train_way=4,
        train_query=2,
        tasks=1,
        steps=2,
    )
    metadata = torch.eye(data.n_classes)
    with seeded(0):  # the fixed image encoder is the test's own, built without touching the global state
        encoder = Conv4(hidden=4, image_size=16)
    return protonet.train_zero_shot(s, encoder, data, metadata, seed=seed, progress=False)[0]


def _matching(data, seed):
    from metaedu.algorithms import matching

    s = replace(preset(matching.MatchingSettings, "quick"), hidden=4, train_way=3, train_query=2, steps=2)
    return matching.train_matching(s, data, seed=seed, progress=False)[0]


def _siamese(data, seed):
    from metaedu.algorithms import siamese

    s = replace(preset(siamese.SiameseSettings, "quick"), hidden=4, pair_classes=4, steps=2)
    return siamese.train_siamese(s, data, seed=seed, progress=False)[0]


def _transfer(data, seed):
    from metaedu.algorithms import transfer

    s = replace(preset(transfer.TransferSettings, "quick"), hidden=4, epochs=1, batch_size=32)
    return transfer.pretrain_classifier(data, s, seed=seed, progress=False)[0]


def _mann(data, seed):
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
        baseline_hidden=6,
        encoder="pixels",
        seed=seed,
    )
    sampler = mann.make_sampler(s, data)
    return torch.nn.ModuleList([mann.build_model(kind, s, sampler) for kind in mann.MODELS])


def _platipus(data, seed):
    from metaedu.algorithms import platipus
    from metaedu.tasks.regression import LinesOrSinesTasks

    s = replace(preset(platipus.LinesOrSinesSettings, "quick"), hidden=(6,), meta_batch=2, steps=2)
    learner = platipus.regression_learner(s, seed=seed)
    sampler = LinesOrSinesTasks(s.k_shot, s.n_query, s.noise_std, seed=seed, support_range=s.support_range)
    platipus.meta_train(learner, sampler, s, torch.Generator().manual_seed(seed), progress=False)
    return learner


def _attribute_encoder(data, seed):
    from metaedu.algorithms import platipus

    s = replace(preset(platipus.AmbiguousGlyphSettings, "quick"), hidden=4, encoder_epochs=1)
    values = torch.randint(0, 2, (len(data.targets), 3), generator=torch.Generator().manual_seed(0))
    return platipus.attribute_encoder(data.images, values, s, seed=seed, progress=False, batch_size=16)[0]


def _gnn(data, seed):
    from metaedu.algorithms import gnn

    s = replace(preset(gnn.SemiSupervisedGNNSettings, "quick"), n_way=3, k_shot=2, hidden=4, gc_width=3,
                edge_hidden=(4,), tasks=2, steps=2, active=True)
    return gnn.train_gnn(s, data, seed=seed, progress=False)[0]


def _arml(data, seed):
    from metaedu.algorithms import arml
    from metaedu.tasks.regression2d import FamilyTasks

    s = replace(preset(arml.ARMLSettings, "quick"), hidden=(6,), embed_dim=5, code=3, meta_batch=3, steps=2)
    net = arml.build(s, seed=seed)
    arml.train_arml(net, FamilyTasks(s.k_shot, s.n_query, seed=seed), s, progress=False)
    return net


TRAINERS = [_protonet, _zero_shot, _matching, _siamese, _transfer, _mann, _platipus, _attribute_encoder, _gnn, _arml]


@pytest.mark.parametrize("make", TRAINERS, ids=lambda f: f.__name__.strip("_"))
def test_training_leaves_the_global_state_alone_and_depends_on_its_seed_only(make):
    data = tiny_images()
    torch.manual_seed(1)
    before = torch.get_rng_state()
    first = make(data, seed=3)
    assert torch.equal(torch.get_rng_state(), before), "the global random state changed"
    torch.manual_seed(2)  # another global state: the same seed still gives the same model
    second = make(data, seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    third = make(data, seed=4)
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), third.state_dict().values()))
