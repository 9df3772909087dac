"""Reference checkpoints: written and read back faithfully, refused when stale, and every shipped one
reproduces its recorded score on its fixed test episodes (so a package change that silently breaks
a checkpoint fails here)."""

from __future__ import annotations

import json

import pytest
import torch

from metaedu import reference


@pytest.fixture
def small_tests(monkeypatch):
    """The MAML reference scored on fewer fixed episodes (a CPU test's budget); everything else as shipped."""
    import dataclasses

    from metaedu.reference import glyph_models

    spec = dataclasses.replace(reference.SPECS["maml-5way"], episodes=40,
                               extras=glyph_models._extras(glyph_models._maml_predict, ((5, 5, 10),)))
    monkeypatch.setitem(reference.SPECS, "maml-5way", spec)
    monkeypatch.setitem(glyph_models.BY_NAME, "maml-5way", spec)


def test_a_written_reference_loads_back_with_its_settings_and_score(tmp_path, glyphs, small_tests):
    record = reference.pretrain("maml-5way", "cpu", steps=1, folder=tmp_path)
    assert record["steps"] == 1 and record["settings"]["steps"] == 1
    assert record["command"] == "metaedu pretrain maml-5way --steps 1"
    assert record["data"]["data"] == "glyphs" and record["test"]["sampler_seed"] == reference.EVAL_SEED
    model, settings, loaded = reference.load("maml-5way", "cpu", folder=tmp_path)
    assert loaded == record and settings.steps == 1 and settings.n_way == 5
    assert reference.read_record("maml-5way", folder=tmp_path) == record and len(record["per_episode"]) == 40
    assert len(record["extras"]["per_episode"]["5-way 5-shot"]) == 10
    saved = torch.load(tmp_path / "maml-5way.pt")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    # the recorded score is the model's score on the fixed episodes (the first 40 of them agree too)
    again, per_episode = reference.score("maml-5way", model, settings, "cpu", episodes=40)
    first, _ = reference.score("maml-5way", model, settings, "cpu", episodes=40)
    assert again.mean == first.mean and per_episode.numel() == 40


def test_a_second_session_goes_on_from_the_first_and_records_both(tmp_path, glyphs, small_tests):
    first = reference.pretrain("maml-5way", "cpu", steps=1, folder=tmp_path / "one")
    start = torch.load(tmp_path / "one" / "maml-5way.pt")
    second = reference.pretrain("maml-5way", "cpu", steps=2, seed=1, folder=tmp_path / "two",
                                init=tmp_path / "one" / "maml-5way.json")
    assert second["steps"] == second["settings"]["steps"] == 3
    assert [s["steps"] for s in second["sessions"]] == [1, 2] and second["sessions"][0]["command"] == first["command"]
    assert second["command"] == ("metaedu pretrain maml-5way --steps 1 && metaedu pretrain maml-5way --steps 2 "
                                 "--init metaedu/pretrained/maml-5way.json --seed 1")
    assert second["seconds"] == pytest.approx(first["seconds"] + second["sessions"][1]["seconds"], abs=0.11)
    # the second session started from the first one's weights: two meta-updates of Adam at the preset's
    # step size move each tensor by at most 2 * outer_lr (plus rounding), far less than a fresh initialisation would
    after = torch.load(tmp_path / "two" / "maml-5way.pt")
    moved = max(float((after[k] - start[k]).abs().max()) for k in start if start[k].is_floating_point())
    assert 0 < moved <= 2 * second["settings"]["outer_lr"] * 1.01
    third = reference.pretrain("maml-5way", "cpu", steps=1, seed=2, folder=tmp_path / "three",
                               init=tmp_path / "two" / "maml-5way.json")
    assert [s["steps"] for s in third["sessions"]] == [1, 2, 1] and third["steps"] == 4
    with pytest.raises(ValueError, match="record of 'maml-5way', not of 'maml-20way'"):
        reference.pretrain("maml-20way", "cpu", steps=1, folder=tmp_path, init=tmp_path / "one" / "maml-5way.json")
    with pytest.raises(FileNotFoundError, match="weights beside it"):
        reference.pretrain("maml-5way", "cpu", steps=1, folder=tmp_path, init=tmp_path / "nothing.json")


def test_a_session_can_change_a_setting_and_records_it(tmp_path, glyphs, small_tests):
    reference.pretrain("maml-5way", "cpu", steps=1, folder=tmp_path / "one")
    start = torch.load(tmp_path / "one" / "maml-5way.pt")
    second = reference.pretrain("maml-5way", "cpu", steps=2, seed=1, folder=tmp_path / "two",
                                init=tmp_path / "one" / "maml-5way.json", changes={"outer_lr": "1e-5"})
    assert second["settings"]["outer_lr"] == 1e-5 and second["sessions"][1]["set"] == {"outer_lr": 1e-5}
    assert "set" not in second["sessions"][0]
    assert second["command"].endswith("--steps 2 --set outer_lr=1e-05 --init metaedu/pretrained/maml-5way.json --seed 1")
    # the smaller step size is the one Adam used: two updates move each tensor by at most 2e-5
    after = torch.load(tmp_path / "two" / "maml-5way.pt")
    moved = max(float((after[k] - start[k]).abs().max()) for k in start if start[k].is_floating_point())
    assert 0 < moved <= 2 * 1e-5 * 1.01
    _, settings, _ = reference.load("maml-5way", "cpu", folder=tmp_path / "two")
    assert settings.outer_lr == 1e-5
    from metaedu.reference import lecture  # the lecture's sentence names each session and what it changed

    said = lecture.sessions(second)
    assert said.startswith("3 meta-updates in 2 sessions: 1 meta-update in ") and "; then 2 more meta-updates" in said
    assert said.endswith("threads with outer_lr = 1e-05") and said.count("outer_lr") == 1
    for changes, message in (({"outer_rate": "1"}, "has no field 'outer_rate'"),
                             ({"steps": "5"}, "set with --steps"),
                             ({"outer_lr": "fast"}, "'outer_lr' needs a float"),
                             ({"first_order": "yes"}, "'first_order' needs a bool")):
        with pytest.raises(ValueError, match=message):
            reference.pretrain("maml-5way", "cpu", steps=1, folder=tmp_path / "bad", changes=changes)
    assert not (tmp_path / "bad").exists()


def test_rescoring_rewrites_the_score_and_extras_from_the_weights_and_keeps_the_rest(tmp_path, glyphs, small_tests):
    record = reference.pretrain("maml-5way", "cpu", steps=1, folder=tmp_path)
    path = tmp_path / "maml-5way.json"
    damaged = {**record, "score": {**record["score"], "mean": -1.0}, "per_episode": [0.0] * 40, "extras": {}}
    path.write_text(json.dumps(damaged))
    again = reference.rescore("maml-5way", "cpu", folder=tmp_path)
    assert again["per_episode"] == record["per_episode"] and again["extras"] == record["extras"]
    assert again["score"] == record["score"] and json.loads(path.read_text()) == again
    assert {k: v for k, v in again.items() if k != "rescored"} == record  # training fields untouched
    assert again["rescored"]["torch"] == torch.__version__ and "threads" in record["device"]


def test_stale_and_missing_references_name_the_command_that_rebuilds_them(tmp_path, glyphs, small_tests):
    reference.pretrain("maml-5way", "cpu", steps=1, folder=tmp_path)
    path = tmp_path / "maml-5way.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "data": {**record["data"], "version": -1}}))
    with pytest.raises(reference.StaleReference, match="metaedu pretrain maml-5way"):
        reference.load("maml-5way", folder=tmp_path)
    path.write_text(json.dumps({**record, "format": 0}))
    with pytest.raises(reference.StaleReference, match="file format 0"):
        reference.load("maml-5way", folder=tmp_path)
    with pytest.raises(FileNotFoundError, match="metaedu pretrain maml-20way"):
        reference.load("maml-20way", folder=tmp_path)
    with pytest.raises(KeyError, match="no reference named"):
        reference.load("nothing")


SHIPPED = sorted(name for name in reference.SPECS if reference.paths(name)[1].is_file())


def test_every_reference_module_is_importable_and_names_are_unique():
    assert set(reference.SPECS) >= {"protonet-20way", "maml-5way", "maml-20way", "cactus-5way"}
    for spec in reference.SPECS.values():
        assert spec.lecture.isdigit() and spec.episodes > 0 and spec.what


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_reference_reproduces_its_recorded_score(name, glyphs):
    """The shipped weights, re-scored here on the first of their fixed episodes, give the recorded scores.

    A reference was trained and scored on another machine (often a GPU): floating-point differences
    flip a query here and there, and move a log-loss after 100 optimisation steps, but the mean stays
    within the recorded interval. A package change that breaks the model or its episodes fails.
    """
    torch.set_num_threads(1)
    spec = reference.SPECS[name]
    model, settings, record = reference.load(name, "cpu")  # a stale file fails with the rebuild command
    recorded = reference.recorded_score(record)
    assert recorded.n == spec.episodes == len(record["per_episode"])
    n = spec.check_episodes or spec.episodes
    now = spec.per_episode(model, settings, torch.device("cpu"), n).double()
    then = reference.recorded_per_episode(record)[:n]
    assert now.numel() == n
    hint = f"{name}: rebuild with `{record['command']}` if the change is meant"
    assert abs(float(now.mean() - then.mean())) <= recorded.ci95, (
        f"{hint}: mean {float(now.mean()):.3f} now vs {float(then.mean()):.3f} recorded on {record['device']}")
    if spec.unit == "%":  # accuracy per episode: the same episodes, the same answers up to a flipped query or two
        assert float((now - then).abs().mean()) <= 1.0, f"{hint}: {float((now - then).abs().mean()):.2f} points per episode"


def test_the_20way_maml_reference_reproduces_its_score_after_more_test_steps(glyphs):
    """The record's accuracy per episode after the released code's 10 test-time steps (lecture 06 pairs it with
    ProtoNet's) is what the shipped weights give on the first fixed episodes, and more steps help this model."""
    import dataclasses

    from metaedu.reference.glyph_models import RELEASED_CODE_TEST_STEPS

    torch.set_num_threads(1)
    spec = reference.SPECS["maml-20way"]
    model, settings, record = reference.load("maml-20way", "cpu")
    then = torch.tensor(record["extras"]["test_steps"][str(RELEASED_CODE_TEST_STEPS)], dtype=torch.float64)
    assert then.numel() == spec.episodes
    n = spec.check_episodes
    now = spec.per_episode(model, dataclasses.replace(settings, test_inner_steps=RELEASED_CODE_TEST_STEPS),
                           torch.device("cpu"), n).double()
    assert float((now - then[:n]).abs().mean()) <= 1.0
    assert float(then.mean()) > float(reference.recorded_per_episode(record).mean())
