"""The crippled-motor experiment over many training seeds, precomputed (lecture 10's target: intervals over >= 10 seeds).

Training MB, GrBAL and ReBAL in quick mode costs about 9 s of CPU per seed, so ten seeds do not fit in the
notebook's budget. :func:`build` runs them all (``python scripts/build_grbal_seeds.py``) and writes
``metaedu/pretrained/grbal_seeds.json``; the lecture loads it (:func:`load`) and shows intervals over seeds,
and ``tests/test_rl_grbal.py`` re-runs one seed and compares it with the file.

Per seed ``s`` the record holds, for every method, the mean return after the failure over the
``test_episodes`` test episodes of ``crippled_test(..., seed=s)`` (each seed has its own episodes; the methods
share them), GrBAL's and ReBAL's prediction errors after the failure, and on ``LONG_SEEDS`` the same for
ReBAL trained ``REBAL_LONG`` times longer (the lecture's question: is ReBAL's weakness a matter of budget?).
"""

from __future__ import annotations

import json
import resource
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path

import torch

from metaedu.rl import grbal_experiment as gx
from metaedu.rl.grbal import GrBALSettings

SEEDS = tuple(range(10))
REBAL_LONG = 4  # ReBAL's extra run: this many times the quick preset's steps ...
LONG_SEEDS = (0,)  # ... on this seed only (it costs twice the three quick models together)
FILE = "grbal_seeds.json"
COMMAND = "python scripts/build_grbal_seeds.py"


def settings_record(settings: GrBALSettings) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items() if k != "checkpoint"}


@torch.no_grad()
def rebal_errors(model, trajectories, settings: GrBALSettings, stride: int = 4) -> dict[str, float]:
    """ReBAL's prediction error on the K steps after each window's M past steps, after the failure, with the
    GRU reading (a) those M steps ("fresh"), (b) the M steps just before the failure ("stale"), (c) nothing
    (a zero state). Normalised MSE of the state change, mean over windows and episodes."""
    m, k, fail = settings.past, settings.future, settings.fail_step
    norm = model.norm
    o, a = trajectories.obs, trajectories.actions

    def window(t0: int, t1: int):
        return norm.inputs(o[:, t0:t1], a[:, t0:t1]), norm.targets(o[:, t0:t1], o[:, t0 + 1:t1 + 1])

    stale = model.context(*window(fail - m, fail))
    errors = {"fresh": [], "stale": [], "zero": []}
    for t in range(fail + m, trajectories.steps - k + 1, stride):
        x_past, y_past = window(t - m, t)
        x, y = window(t, t + k)
        for name, h in (("fresh", model.context(x_past, y_past)), ("stale", stale), ("zero", torch.zeros_like(stale))):
            errors[name].append(float(((model(x, h)[..., : y.shape[-1]] - y) ** 2).mean()))
    return {name: sum(v) / len(v) for name, v in errors.items()}


def seed_result(settings: GrBALSettings, seed: int, device="cpu", long: bool = True) -> dict:
    """Train the three models on ``seed`` (and, with ``long``, ReBAL ``REBAL_LONG`` times longer), test them,
    measure the errors."""
    models, _ = gx.train_all(settings, seed=seed, device=device, progress=False)
    runs = gx.crippled_test(models, settings, seed=seed, device=device)
    before, after = gx.prediction_errors(models["grbal"], runs["grbal"], settings, start=settings.fail_step)
    result = {
        "seed": seed,
        "return_after_failure": {m: float(r.returns(settings.fail_step).mean()) for m, r in runs.items()},
        "return_before_failure": {m: float(r.returns(0, settings.fail_step).mean()) for m, r in runs.items()},
        "grbal_error": {"before": float(before.mean()), "after": float(after.mean())},
        "rebal_error": rebal_errors(models["rebal"], runs["rebal"], settings),
    }
    if long:
        more = replace(settings, steps=settings.steps * REBAL_LONG)
        rebal_long, _ = gx.train_model("rebal", more, seed=seed, device=device, progress=False)
        run = gx.crippled_test({"rebal": rebal_long}, settings, seed=seed, device=device)["rebal"]
        result["rebal_long"] = {"return_after_failure": float(run.returns(settings.fail_step).mean()),
                                "error": rebal_errors(rebal_long, run, settings)}
    return result


def build(seeds=SEEDS, path: Path | None = None, verbose: bool = True) -> dict:
    """All seeds of the quick preset, on one CPU thread; written to ``path`` (default: the package's file)."""
    settings = GrBALSettings.quick()
    record = {"command": COMMAND, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "settings": settings_record(settings), "rebal_long_steps": settings.steps * REBAL_LONG, "seeds": []}
    for seed in seeds:
        record["seeds"].append(seed_result(settings, seed, long=seed in LONG_SEEDS))
        if verbose:
            print(json.dumps(record["seeds"][-1]), flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    record["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    path = Path(path) if path is not None else Path(__file__).resolve().parents[1] / "pretrained" / FILE
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def load(settings: GrBALSettings | None = None) -> dict:
    """The shipped record; refuses it if it was built with other settings than ``settings`` (default: quick)."""
    record = json.loads(resources.files("metaedu").joinpath("pretrained", FILE).read_text())
    wanted = settings_record(settings or GrBALSettings.quick())
    if record["settings"] != wanted:
        differ = sorted(k for k in wanted if record["settings"].get(k) != wanted[k])
        raise ValueError(f"{FILE} was built with other settings (fields {differ}); rebuild it with {COMMAND}")
    return record


def per_seed(record: dict, key: str, name: str) -> torch.Tensor:
    """One number per seed, e.g. ``per_seed(record, "return_after_failure", "grbal")`` -> ``[seeds]``."""
    return torch.tensor([s[key][name] for s in record["seeds"]], dtype=torch.float64)
