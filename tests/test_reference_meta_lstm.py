"""Lecture 02's references (metaedu.reference.meta_lstm): written, loaded back and re-scored to the recorded
values; the extras are computed on the same fixed episodes as the score; bad input is refused clearly.

The training run here is two meta-updates with a tiny pre-training and fine-tune grid (the plumbing); the
reference's real preset is exercised by ``metaedu pretrain meta-lstm-1shot --minutes 0.3``."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from metaedu import reference
from metaedu.algorithms.baselines import BaselineSettings
from metaedu.algorithms.meta_lstm import MetaLSTMSettings
from metaedu.reference import meta_lstm as ref

NAME = "meta-lstm-1shot"


@pytest.fixture
def small(monkeypatch, glyphs):
    """The 1-shot reference with few test episodes, a short pre-training and a small fine-tune grid."""
    spec = dataclasses.replace(ref.BY_NAME[NAME], episodes=6,
                               settings=lambda: dataclasses.replace(MetaLSTMSettings.reference(1), val_episodes=3))
    monkeypatch.setitem(ref.BY_NAME, NAME, spec)
    monkeypatch.setitem(reference.SPECS, NAME, spec)
    monkeypatch.setattr(ref, "TRACE_EPISODES", 2)
    monkeypatch.setattr(ref, "baseline_settings", lambda: BaselineSettings(
        pretrain_steps=3, batch_size=16, finetune_lrs=(0.03, 0.3), finetune_step_grid=(4, 12), tune_episodes=3))
    return spec


def test_written_reference_loads_back_and_reproduces_its_score_and_extras(small, tmp_path):
    record = reference.pretrain(NAME, "cpu", steps=2, folder=tmp_path)
    assert record["steps"] == 2 and record["settings"]["meta_steps"] == 2
    assert record["command"] == f"metaedu pretrain {NAME} --steps 2"
    extras = record["extras"]
    assert extras["pretrain_steps"] == 3 and extras["finetune"]["lr"] in (0.03, 0.3)
    assert extras["finetune"]["steps"] in (4, 12) and extras["start_input_gate"] in (0.03, 0.3)
    model, settings, loaded = reference.load(NAME, "cpu", folder=tmp_path)
    assert loaded == json.loads(json.dumps(record)) and settings.meta_steps == 2 and settings.k_shot == 1 and settings.filters == 32
    again, values = reference.score(NAME, model, settings, "cpu")
    assert again.mean == pytest.approx(record["score"]["mean"], abs=1e-9) and values.numel() == 6
    per_episode = extras["per_episode"]
    assert values.tolist() == pytest.approx(per_episode["meta-learner"], abs=1e-3)  # the score's own episodes
    assert set(per_episode) == {"meta-learner", "fine-tune", "nearest neighbour", "learned rule + start c0", "start rule + learned c0",
                                "start (before meta-training)"} and all(len(v) == 6 for v in per_episode.values())
    # the start is the pre-trained network with the fine-tune rule: its input gate is the chosen step size
    start = model["start"]
    assert torch.sigmoid(start.b_I).item() == pytest.approx(extras["start_input_gate"], rel=1e-5)
    assert not torch.equal(start.c0, model["meta"].c0)  # two meta-updates moved c_0
    gates = extras["gates"]
    assert len(gates["trained"]["input_gate"]["all"]) == settings.updates == 12
    assert len(gates["start"]["query_acc"]) == 13 and set(gates["layers"]) == set(gates["trained"]["forget_gate"]["layers"])


def test_the_hybrids_are_the_two_parts_swapped(small, tmp_path):
    model = ref.build(small.settings(), torch.device("cpu"))
    with torch.no_grad():
        model["meta"].c0.add_(1.0)
        model["meta"].b_I.fill_(-1.0)
    rule_only = ref._hybrid(model["meta"], model["start"].c0)
    assert torch.equal(rule_only.c0, model["start"].c0) and rule_only.b_I.item() == -1.0
    assert model["meta"].c0[0].item() != model["start"].c0[0].item()  # the original is left alone


def test_bad_input_is_refused_with_a_sentence(small, tmp_path):
    with pytest.raises(ValueError, match="time budget must be positive"):
        ref.train(ref.build(small.settings(), torch.device("cpu")), small.settings(), torch.device("cpu"), 0, -1.0)
    odd = dataclasses.replace(small.settings(), updates=7)
    with pytest.raises(ValueError, match="must hold the meta-learner's T = 7"):
        ref.train(ref.build(odd, torch.device("cpu")), odd, torch.device("cpu"), 0, None)
    with pytest.raises(FileNotFoundError, match=f"metaedu pretrain {NAME}"):
        reference.load(NAME, folder=tmp_path)


def test_first_episodes_are_the_records_first_episodes(small):
    """Re-scoring the first few episodes of a record needs the same episodes the scorer drew."""
    from metaedu.reference.spec import test_sampler

    few = ref.first_episodes(NAME, 3)
    whole = test_sampler(small, "cpu").sample(ref.EVAL_BATCH)
    assert few.tasks == 3 and torch.equal(few.x_query, whole.x_query[:3]) and torch.equal(few.y_support, whole.y_support[:3])
    with pytest.raises(ValueError, match="first draw holds"):
        ref.first_episodes(NAME, ref.EVAL_BATCH + 1)
