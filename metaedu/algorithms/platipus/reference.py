"""Reference checkpoints of lecture 08: PLATIPUS and MAML on ambiguous lines-or-sines, trained longer.

Quick mode trains both methods for a lecture's minute, which is too short for
PLATIPUS's samples to settle into lines *and* sinusoids. These small checkpoints
(the quick-mode networks, ``REFERENCE_STEPS`` meta-updates each, about 50 KB) let the
lecture show the trained behaviour in seconds. They are produced by one command::

    python scripts/build_platipus_reference.py

which calls :func:`build`: it trains both with :func:`reference_settings` (the same seeds every time), scores
them on fixed test tasks (:func:`score`) and writes ``<name>.pt`` and ``<name>.json``
(settings, steps, seconds, scores, the command) into ``metaedu/pretrained/``. A test
reloads them and reproduces the recorded scores.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from metaedu.algorithms import maml as maml_module
from metaedu.algorithms.platipus.core import (
    LinesOrSinesSettings,
    PLATIPUS,
    meta_train,
    regression_learner,
    regression_network,
)
from metaedu.algorithms.platipus.regression import both_kinds, kinds_of_samples
from metaedu.evaluation import mean_ci
from metaedu.tasks.ambiguous_regression import LINE, NEITHER, SINE, ambiguous_tasks, x_grid
from metaedu.tasks.regression import LinesOrSinesTasks

NAME = "platipus_lines_or_sines"
#: Meta-updates of each reference model (quick mode takes ``LinesOrSinesSettings.quick().steps``).
REFERENCE_STEPS = 12000
#: Seeds: the training tasks, the weights, PLATIPUS's noise, and the fixed test tasks of :func:`score`.
TRAIN_SEED, WEIGHT_SEED, NOISE_SEED, TEST_SEED = 1, 0, 0, 2018
COMMAND = "python scripts/build_platipus_reference.py"


def folder() -> Path:
    """Where the package keeps its reference checkpoints."""
    return Path(__file__).resolve().parents[2] / "pretrained"


def reference_settings() -> LinesOrSinesSettings:
    """The quick-mode settings with ``REFERENCE_STEPS`` meta-updates."""
    return replace(LinesOrSinesSettings.quick(), steps=REFERENCE_STEPS)


def _maml(settings: LinesOrSinesSettings) -> maml_module.MAML:
    return maml_module.MAML(regression_network(settings, WEIGHT_SEED), "mse", settings.inner_lr)


def train_models(settings: LinesOrSinesSettings, device="cpu", progress: bool = True):
    """PLATIPUS and MAML trained on the same stream of tasks with the same network and budget."""
    platipus = regression_learner(settings, device, WEIGHT_SEED)
    maml = _maml(settings).to(device)

    def tasks():
        return LinesOrSinesTasks(
            settings.k_shot,
            settings.n_query,
            settings.noise_std,
            device=device,
            seed=TRAIN_SEED,
            support_range=settings.support_range,
        )

    noise = torch.Generator(device=device).manual_seed(NOISE_SEED)
    meta_train(platipus, tasks(), settings, noise, progress=progress)
    maml_module.meta_train(maml, tasks(), settings, progress=progress, desc="MAML")
    return platipus, maml


@torch.no_grad()
def score(platipus: PLATIPUS, maml, settings: LinesOrSinesSettings, n_tasks: int = 200) -> dict:
    """On ``n_tasks`` fixed ambiguous test tasks: how often PLATIPUS's ``n_samples`` samples include a line
    and a sinusoid, the share of samples that are lines, and both methods' query MSE (mean prediction)."""
    device = next(platipus.parameters()).device
    sampler = LinesOrSinesTasks(
        settings.k_shot,
        settings.n_query,
        settings.noise_std,
        device=device,
        seed=TEST_SEED,
        support_range=settings.support_range,
    )
    tasks = ambiguous_tasks(sampler, n_tasks)
    x = x_grid(100, device)
    grid = x.view(1, -1, 1).expand(n_tasks, -1, -1)
    g = torch.Generator(device=device).manual_seed(TEST_SEED)
    samples = platipus.predict_samples(
        tasks.x_support, tasks.y_support, grid, settings.test_inner_steps, settings.n_samples, g
    )  # [S, tasks, n, 1]
    kinds = kinds_of_samples(samples[..., 0], x)
    loose = kinds_of_samples(samples[..., 0], x, min_fit=0.0)  # the better shape, however poorly it fits
    mse_p = platipus.predict_samples(
        tasks.x_support, tasks.y_support, tasks.x_query, settings.test_inner_steps, settings.n_samples, g
    ).mean(0)
    mse_m = maml.predict(tasks.x_support, tasks.y_support, tasks.x_query, settings.test_inner_steps)
    return {
        "both_kinds": mean_ci(both_kinds(kinds) * 100).as_dict(),
        "kind_shares": {
            name: float((kinds == k).float().mean())
            for name, k in (("line", LINE), ("sine", SINE), ("neither", NEITHER))
        },
        "both_kinds_any_fit": mean_ci(both_kinds(loose) * 100).as_dict(),
        "platipus_mse": mean_ci(((mse_p - tasks.y_query) ** 2).flatten(1).mean(1).cpu(), unit="mse").as_dict(),
        "maml_mse": mean_ci(((mse_m - tasks.y_query) ** 2).flatten(1).mean(1).cpu(), unit="mse").as_dict(),
        "n_tasks": n_tasks,
    }


def build(progress: bool = True, where: Path | None = None) -> dict:
    """Train, score and write the reference checkpoint; returns its record."""
    settings = reference_settings()
    start = time.perf_counter()  # wall time on whatever machine builds it (one thread)
    platipus, maml = train_models(settings, "cpu", progress)
    seconds = time.perf_counter() - start
    record = {
        "name": NAME,
        "command": COMMAND,
        "settings": settings_record(settings),
        "steps": settings.steps,
        "train_seconds_wall": round(seconds, 1),
        "torch": torch.__version__,
        "seeds": {"train": TRAIN_SEED, "weights": WEIGHT_SEED, "noise": NOISE_SEED, "test": TEST_SEED},
        "score": score(platipus, maml, settings),
    }
    where = where or folder()
    where.mkdir(parents=True, exist_ok=True)
    torch.save({"platipus": platipus.state_dict(), "maml": maml.state_dict()}, where / f"{NAME}.pt")
    (where / f"{NAME}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def settings_record(settings: LinesOrSinesSettings) -> dict:
    """The settings as recorded beside the checkpoint: every field but ``checkpoint`` (not part of the run)."""
    return {k: v for k, v in asdict(settings).items() if k != "checkpoint"}


def load(device="cpu", where: Path | None = None):
    """The reference PLATIPUS and MAML, and the record written beside them."""
    where = where or folder()
    path = where / f"{NAME}.pt"
    if not path.exists():
        raise FileNotFoundError(f"no reference checkpoint at {path}; build it with `{COMMAND}`")
    record = json.loads((where / f"{NAME}.json").read_text())
    settings = LinesOrSinesSettings(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in record["settings"].items()}
    )
    state = torch.load(path, map_location=device, weights_only=True)
    platipus = regression_learner(settings, device)
    platipus.load_state_dict(state["platipus"])
    maml = _maml(settings).to(device)
    maml.load_state_dict(state["maml"])
    return platipus, maml, settings, record
