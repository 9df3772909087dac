"""Lecture 04's reference (MANN and its LSTM baseline): written, read back, re-scored to the same value;
its extras are the instance-accuracy curves on the same episodes; bad input is refused clearly."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from metaedu import reference
from metaedu.algorithms import mann
from metaedu.evaluation import Score
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
    assert extras["per_episode"]["MANN"]["2"] == pytest.approx(record["per_episode"], abs=1e-4)
    assert all(len(v) == extras["episodes"] for acc in extras["per_episode"].values() for v in acc.values())
    scores, values = mann_reference.recorded_curves(record)
    assert scores["LSTM"][10].mean == pytest.approx(float(values["LSTM"][10].mean()), abs=1e-4)
    assert scores["MANN"][2].n == values["MANN"][2].numel() == record["score"]["n"]
    with pytest.raises(ValueError, match="expected the record of the 'mann' reference"):
        mann_reference.recorded_curves({**record, "name": "maml-5way"})
    # a record without the per-episode extras is re-scored from its weights: the same curves
    loaded, scores_file, values_file = mann_reference.curves(folder)
    assert loaded == json.loads(json.dumps(record)) and values_file["MANN"][2].tolist() == values["MANN"][2].tolist()
    older = {**loaded, "extras": {k: v for k, v in loaded["extras"].items() if k != "per_episode"}}
    (folder / "mann.json").write_text(json.dumps(older))
    try:
        _, scores_again, values_again = mann_reference.curves(folder)
    finally:
        (folder / "mann.json").write_text(json.dumps(loaded))
    for name in scores:
        for k in mann.INSTANCES:
            assert values_again[name][k].tolist() == pytest.approx(values[name][k].tolist(), abs=1e-3)
            assert scores_again[name][k].mean == pytest.approx(scores[name][k].mean, abs=1e-3)
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


def test_bad_input_to_the_mann_reference_is_refused_clearly(written, tmp_path):
    folder, _ = written
    with pytest.raises(FileNotFoundError, match="metaedu pretrain mann"):
        reference.load("mann", folder=tmp_path)
    model, settings, _ = reference.load("mann", "cpu", folder=folder)
    with pytest.raises(ValueError, match="per_class must be >= 10"):
        mann_reference._build(dataclasses.replace(settings, per_class=5), "cpu")
    with pytest.raises(ValueError, match="reads pixels"):
        mann_reference._per_episode(model, dataclasses.replace(settings, encoder="conv4"), "cpu", 10)
    with pytest.raises(ValueError, match="episodes must be at least 1"):
        mann_reference._accuracies(model, settings, "cpu", 0)


def test_the_shipped_mann_reference_reproduces_its_curves(glyphs):
    """The shipped file re-scores to its record: MANN (the score) and the LSTM and the nearest neighbour (extras)."""
    torch.set_num_threads(1)
    model, settings, record = reference.load("mann", "cpu")
    now = mann_reference._accuracies(model, settings, "cpu", record["extras"]["episodes"])
    recorded = {name: {int(k): Score(**s) for k, s in acc.items()} for name, acc in record["extras"]["accuracy"].items()}
    per_episode = record["extras"].get("per_episode", {"MANN": {"2": record["per_episode"]}})  # older records: MANN's
    for name in ("MANN", "LSTM", "nearest neighbour (same pixels)"):
        for k in mann.INSTANCES:
            score = recorded[name][k]
            assert abs(float(now[name][k].mean()) - score.mean) <= score.ci95, (name, k, now[name][k].mean(), score)
            if str(k) in per_episode.get(name, {}):
                changed = (now[name][k].double() - torch.tensor(per_episode[name][str(k)], dtype=torch.float64)).abs() > 1e-3
                assert int(changed.sum()) <= max(1, len(changed) // 50), f"{name}, instance {k}: episodes score differently"
