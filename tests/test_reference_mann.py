"""Lecture 04's reference (MANN and its LSTM baseline): written, read back, re-scored to the same value;
its extras are the instance-accuracy curves on the same episodes; bad input is refused clearly."""

from __future__ import annotations

import dataclasses
import json

import pytest
from metaedu import reference
from metaedu.algorithms import mann
from metaedu.reference import mann as mann_reference


@pytest.fixture(scope="module")
def written(tmp_path_factory, glyphs):
    folder = tmp_path_factory.mktemp("ref04")
    record = reference.pretrain("mann", "cpu", steps=2, folder=folder)
    return folder, record


def test_the_mann_reference_loads_back_and_reproduces_its_score(written):
    folder, record = written
    assert record["steps"] == 2 and record["settings"]["steps"] == record["settings"]["baseline_steps"] == 2
    assert record["command"] == "metaedu pretrain mann --steps 2"
    model, settings, loaded = reference.load("mann", "cpu", folder=folder)
    assert loaded == json.loads(json.dumps(record)) and set(model) == {"mann", "lstm"}
    assert settings == dataclasses.replace(mann.MANNSettings.reference(), steps=2, baseline_steps=2)
    again, per_episode = reference.score("mann", model, settings, "cpu")
    assert per_episode.shape == (mann_reference.SPEC.episodes,)
    assert again.mean == pytest.approx(record["score"]["mean"], abs=1e-9)
    assert again.ci95 == pytest.approx(record["score"]["ci95"], abs=1e-9)


def test_the_score_is_mann_at_the_2nd_instance_and_the_extras_score_three_methods_on_those_episodes(written):
    folder, record = written
    model, settings, _ = reference.load("mann", "cpu", folder=folder)
    extras = record["extras"]
    assert extras["instances"] == list(mann.INSTANCES) and extras["episodes"] == mann_reference.SPEC.episodes
    curves = extras["accuracy"]
    assert set(curves) == {"MANN", "LSTM", "nearest neighbour (same pixels)"}
    assert curves["MANN"]["2"]["mean"] == pytest.approx(record["score"]["mean"])
    # an independent slow path: the nearest neighbour on the first 20 test episodes, one step at a time
    seq = mann_reference._test_batches(settings, "cpu", 20)[0]
    hits = []
    for b in range(seq.episodes):
        for t in range(1, seq.length):
            if seq.instance[b, t] == 2:
                nearest = int(((seq.x[b, :t] - seq.x[b, t]) ** 2).sum(-1).argmin())
                hits.append(bool(seq.targets[b, nearest, 0] == seq.targets[b, t, 0]))
    by_hand = 100 * sum(hits) / len(hits)
    fast = mann_reference._accuracies(model, settings, "cpu", 20)["nearest neighbour (same pixels)"][2]
    assert float(fast.mean()) == pytest.approx(by_hand)  # every episode has 5 second instances: equal weights


def test_bad_input_to_the_mann_reference_is_refused_clearly(written):
    folder, _ = written
    model, settings, _ = reference.load("mann", "cpu", folder=folder)
    with pytest.raises(ValueError, match="trains both networks equally long"):
        mann_reference._train(model, dataclasses.replace(settings, baseline_steps=3), "cpu", 0)
    with pytest.raises(ValueError, match="per_class must be >= 10"):
        mann_reference._build(dataclasses.replace(settings, per_class=5), "cpu")
    with pytest.raises(ValueError, match="reads pixels"):
        mann_reference._per_episode(model, dataclasses.replace(settings, encoder="conv4"), "cpu", 10)
    with pytest.raises(ValueError, match="episodes must be at least 1"):
        mann_reference._accuracies(model, settings, "cpu", 0)
