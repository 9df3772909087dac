"""Lecture 10's shipped Meta-Q-Learning model: theta_meta and the old buffer of ``MQLSettings.quick()``.

Meta-training the context TD3 until its context tells goals apart takes thousands of updates (about a
minute of CPU), more than the notebook's budget; the adaptation experiment itself is cheap. So
``python scripts/build_mql_reference.py`` runs :func:`metaedu.rl.mql_experiment.meta_train` once and writes
``metaedu/pretrained/mql_navigation.{pt,json}``: the weights, the last ``KEEP`` collections of the old buffer
(with their goals), the training curve, and the score of the deterministic policy on validation goals,
which ``tests/test_rl_mql_experiment.py`` reproduces from the loaded weights.
"""

from __future__ import annotations

import json
import resource
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import torch

from metaedu.rl import mql_experiment as mx
from metaedu.rl.rollout import Trajectories

NAME = "mql_navigation"
COMMAND = "python scripts/build_mql_reference.py"
KEEP = 400  # most recent old episodes shipped (the buffer MQL reuses)
SEED = 0
VALIDATION_OFFSET = 40_000  # seed offset of the validation goals (test goals: mql_adaptation.TEST_OFFSET)


def settings_record(settings: mx.MQLSettings) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def validation_goals(settings: mx.MQLSettings) -> torch.Tensor:
    """Goals of neither the training nor the test (the recorded score is on them)."""
    return mx.PointNavigation.sample_goals(settings.test_goals, torch.Generator().manual_seed(SEED + VALIDATION_OFFSET))


def score(model, theta, goals: torch.Tensor, settings: mx.MQLSettings) -> float:
    """Mean return of one deterministic episode per goal with theta_meta."""
    return float(mx.run_episodes(model, theta, goals, 1, settings, torch.Generator().manual_seed(SEED)).returns().mean())


def build(folder: Path | None = None) -> dict:
    settings = mx.MQLSettings.quick()
    model, theta, old, owners, curve = mx.meta_train(settings, seed=SEED)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    goals = validation_goals(settings)
    stay = float((-(goals**2).sum(-1) * settings.horizon).mean())
    record = {"command": COMMAND, "torch": torch.__version__, "seed": SEED, "settings": settings_record(settings),
              "cpu_seconds": usage.ru_utime + usage.ru_stime, "curve": curve, "collect_every": settings.collect_every,
              "validation_score": score(model, theta, goals, settings), "stay_at_start_score": stay,
              "old_episodes": min(KEEP, old.obs.shape[0]), "old_episodes_in_training": old.obs.shape[0]}
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[1] / "pretrained"
    keep = slice(-KEEP, None)
    torch.save({"theta": theta, "old_obs": old.obs[keep].clone(), "old_actions": old.actions[keep].clone(),
                "old_rewards": old.rewards[keep].clone(), "old_goals": owners[keep].clone()},
               folder / f"{NAME}.pt")
    (folder / f"{NAME}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def load(settings: mx.MQLSettings | None = None):
    """``(model, theta_meta, old buffer, its goals, record)``; refuses a file built with other settings."""
    settings = settings or mx.MQLSettings.quick()
    folder = resources.files("metaedu").joinpath("pretrained")
    record = json.loads(folder.joinpath(f"{NAME}.json").read_text())
    if record["settings"] != settings_record(settings):
        differ = sorted(k for k, v in settings_record(settings).items() if record["settings"].get(k) != v)
        raise ValueError(f"{NAME} was built with other settings (fields {differ}); rebuild it with {COMMAND}")
    with resources.as_file(folder.joinpath(f"{NAME}.pt")) as path:
        state = torch.load(path, weights_only=True)
    model = mx.build(settings, SEED)
    old = Trajectories(state["old_obs"], state["old_actions"], state["old_rewards"])
    return model, state["theta"], old, state["old_goals"], record
