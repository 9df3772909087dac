"""Lecture 01's references (the LSTM optimizer on quadratics and on the digits MLP): written, read back,
re-scored to the recorded number; the score is the paired log10 difference against tuned Adam."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from metaedu import reference
from metaedu.algorithms import learned_optimizer as lo
from metaedu.reference import lstm_optimizer as ref


def test_the_quadratics_reference_loads_back_and_rescores_to_its_record(tmp_path):
    record = reference.pretrain("lstm-opt-quadratics", "cpu", steps=1, folder=tmp_path)
    assert record["steps"] == 1 and record["settings"]["quad_episodes"] == 1
    assert record["command"] == "metaedu pretrain lstm-opt-quadratics --steps 1"
    assert record["score"]["unit"] == "log10" and record["test"]["higher_is_better"] is False
    model, settings, loaded = reference.load("lstm-opt-quadratics", "cpu", folder=tmp_path)
    assert loaded == json.loads(json.dumps(record)) and settings.quad_episodes == 1 and settings.meta_lr == lo.LearnedOptimizerSettings.full().meta_lr
    again, per_function = reference.score("lstm-opt-quadratics", model, settings, "cpu")
    assert again.mean == pytest.approx(record["score"]["mean"], abs=1e-9) and per_function.numel() == 1000
    quad = record["extras"]["quadratics"]
    assert set(quad["lrs"]) == set(lo.BASELINES) and len(quad["mean_curve"]["LSTM"]) == settings.horizon + 1
    # the score is the extras' paired difference against Adam, on the same functions
    assert quad["step_100"]["lstm_minus"]["Adam"]["mean"] == pytest.approx(record["score"]["mean"], abs=1e-9)


def test_the_score_is_the_lstm_minus_tuned_adam_on_the_same_functions():
    """Recompute one reference score by hand: tune Adam on the training draws, run both on the test draws."""
    s = ref._settings()
    model = ref._build(s, torch.device("cpu"))
    values = ref._quad_per_episode(model, s, torch.device("cpu"), 50)
    tune = lo.QuadraticProblem.from_settings(s, seed=ref.TUNE_SEED).sample(s.tune_functions)
    finals = torch.stack([lo.optimize_baseline("Adam", lr, tune, s.horizon)[-1] for lr in s.lr_grid])
    finals = torch.where(torch.isfinite(finals), finals, torch.full_like(finals, float("inf")))
    lr = s.lr_grid[int(finals.median(dim=1).values.argmin())]
    test = lo.QuadraticProblem.from_settings(s, seed=ref.TEST_SEED).sample(50)
    expect = torch.log10(lo.optimize_learned(model, test, s.horizon)[-1].double()) \
        - torch.log10(lo.optimize_baseline("Adam", lr, test, s.horizon)[-1].double())
    torch.testing.assert_close(values, expect, rtol=1e-4, atol=1e-4)


def test_the_mlp_reference_trains_and_scores_on_held_out_digits(tmp_path, monkeypatch):
    # smaller tuning and test sets keep this test short (the shipped file is checked at full size)
    spec = reference.SPECS["lstm-opt-mlp"]
    small = dataclasses.replace(spec, episodes=6, settings=lambda: dataclasses.replace(
        ref._settings(), mlp_tune=4, lr_grid=(1e-2, 3e-2, 1e-1, 3e-1, 1.0)))
    monkeypatch.setitem(reference.SPECS, "lstm-opt-mlp", small)
    monkeypatch.setitem(ref.BY_NAME, "lstm-opt-mlp", small)
    record = reference.pretrain("lstm-opt-mlp", "cpu", steps=1, folder=tmp_path)
    assert record["settings"]["mlp_episodes"] == 1 and record["score"]["n"] == 6
    extras = record["extras"]
    assert set(extras) == {"mlp", "relu"} and {"step_100", "step_200"} <= set(extras["mlp"])
    assert len(extras["mlp"]["mean_curve"]["Adam"]) == 2 * record["settings"]["horizon"] + 1
    assert extras["mlp"]["step_100"]["lstm_minus"]["Adam"]["mean"] == pytest.approx(record["score"]["mean"], abs=1e-9)
    model, settings, _ = reference.load("lstm-opt-mlp", "cpu", folder=tmp_path)
    again, _ = reference.score("lstm-opt-mlp", model, settings, "cpu")
    assert again.mean == pytest.approx(record["score"]["mean"], abs=1e-9)


def test_bad_input_is_refused_with_a_sentence():
    s = ref._settings()
    with pytest.raises(ValueError, match="part must be"):
        ref.digits_problem(s, "validation", 0, "cpu")
    with pytest.raises(ValueError, match="outside curves"):
        ref.at_step(torch.zeros(11, 3), 10, window=12)
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        ref.BY_NAME["lstm-opt-quadratics"].train(ref._build(s, torch.device("cpu")), s, torch.device("cpu"), 0, 0)
    assert torch.equal(ref.log10_loss(torch.tensor([float("inf"), float("nan"), 100.0])),
                       torch.tensor([30.0, 30.0, 2.0], dtype=torch.float64))
