"""Reference checkpoints of lecture 09: the pose and NME-classification models, trained once and shipped.

Training the pose and classification models of Yin et al.'s experiments takes minutes per model
on a CPU, more than a lecture's quick mode allows, so the quick-mode models are trained once by
one command and stored (the lecture bar's "reference checkpoints")::

    python -m metaedu.algorithms.memorization_reference --jobs 2

It trains every model of :func:`catalogue` with the experiments' ``quick()`` settings (the
package's own code: :func:`~metaedu.algorithms.memorization_experiments.meta_train`), rounds the
weights to float16, scores each rounded model on fixed test tasks, and writes
``metaedu/algorithms/memorization_models/<name>.pt`` and ``manifest.json`` (settings, data, command,
training time, recorded score). ``tests/test_memorization_reference.py`` reloads each file and
reproduces its recorded score. The lecture loads a model with :func:`load` when its settings
equal the stored ones, and trains it otherwise (full mode, or changed settings).

Only the means of Gaussian encoder weights are stored (the prediction uses the means).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from metaedu.algorithms import memorization_experiments as mx
from metaedu.runtime import check_mode, preset

REFERENCE_DIR = Path(__file__).resolve().parent / "memorization_models"
#: Seed of the fixed tasks behind each recorded score (the lecture's test tasks use the same).
SCORE_SEED = 4242
#: Test tasks (pose) or episodes (classification) behind each recorded score.
SCORE_TASKS = 100
#: The beta grids stored for the widget and for choosing beta on meta-validation.
POSE_BETAS = {"maml": (3e-4, 1e-3, 3e-3), "cnp": (3e-5, 1e-4, 3e-4)}
CLASSIFICATION_BETAS = (3e-6, 1e-5, 3e-5)
#: The weight-decay coefficients of the baselines, chosen on meta-validation like beta.
WEIGHT_DECAYS = (1e-3, 1e-2)
#: The sinusoid grids, per task learner and regularizer, and the two support-set sizes of the paper's table.
SINUSOID_BETAS = {("maml", "activations"): (1e-2, 1e-1), ("maml", "weights"): (1e-5, 1e-4),
                  ("cnp", "activations"): (1e-2, 1e-1), ("cnp", "weights"): (1e-4, 1e-3)}
SINUSOID_SHOTS = (5, 10)
SETTINGS = {"pose": mx.MemorizationPoseSettings, "classification": mx.MemorizationClassificationSettings, "sinusoid": mx.MemorizationSinusoidSettings}


def beta_tag(beta: float) -> str:
    return f"{beta:.0e}".replace("-0", "-")


def catalogue() -> dict[str, dict]:
    """Every stored model: name -> experiment, the changes to its quick settings, and the task switch."""
    out = {}
    for method in ("maml", "cnp"):
        out[f"pose_{method}"] = {"experiment": "pose", "changes": {"method": method}}
        for beta in POSE_BETAS[method]:
            out[f"pose_mr_{method}_w_{beta_tag(beta)}"] = {
                "experiment": "pose", "changes": {"method": method, "regularizer": "weights", "beta": beta}}
    out["pose_maml_exclusive"] = {"experiment": "pose", "changes": {}, "exclusive": True}
    out["pose_cnp_exclusive"] = {"experiment": "pose", "changes": {"method": "cnp"}, "exclusive": True}
    out["pose_ft"] = {"experiment": "pose", "changes": {"inner_steps": 0}}
    for wd in WEIGHT_DECAYS:
        out[f"pose_ft_wd_{beta_tag(wd)}"] = {"experiment": "pose", "changes": {"inner_steps": 0, "weight_decay": wd}}
        out[f"pose_cnp_wd_{beta_tag(wd)}"] = {"experiment": "pose", "changes": {"method": "cnp", "weight_decay": wd}}
    out["classification_maml"] = {"experiment": "classification", "changes": {}}
    out["classification_maml_exclusive"] = {"experiment": "classification", "changes": {}, "exclusive": True}
    for beta in CLASSIFICATION_BETAS:
        out[f"classification_mr_maml_w_{beta_tag(beta)}"] = {
            "experiment": "classification", "changes": {"regularizer": "weights", "beta": beta}}
    for k in SINUSOID_SHOTS:
        for method in ("maml", "cnp"):
            out[f"sinusoid{k}_{method}"] = {"experiment": "sinusoid", "changes": {"method": method, "k_shot": k}}
            for regularizer in ("activations", "weights"):
                for beta in SINUSOID_BETAS[(method, regularizer)]:
                    out[f"sinusoid{k}_mr_{method}_{regularizer[0]}_{beta_tag(beta)}"] = {
                        "experiment": "sinusoid",
                        "changes": {"method": method, "k_shot": k, "regularizer": regularizer, "beta": beta}}
    return out


def _recorded(settings) -> dict:
    """What a record keeps of the settings: every field but the checkpoint switch, and the glyph data's version."""
    from metaedu.data.glyphs import DATA_VERSION

    fields = {k: v for k, v in asdict(settings).items() if k != "checkpoint"}
    return {**fields, "glyph_data_version": DATA_VERSION}


def settings_of(name: str, mode: str = "quick"):
    """The settings of model ``name``: its experiment's ``quick()`` (what is stored) or ``full()``, plus its changes."""
    entry = _entry(name)
    return mx.variant(preset(SETTINGS[entry["experiment"]], mode), **entry["changes"])


def _entry(name: str) -> dict:
    table = catalogue()
    if name not in table:
        raise ValueError(f"no reference model {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def splits(experiment: str, settings, glyphs=None) -> dict:
    """The data of each split: glyph characters, or (for sinusoids) nothing: tasks are drawn fresh."""
    from metaedu.data.glyphs import load_glyphs

    if experiment == "sinusoid":
        return {"train": None, "validation": None, "test": None}
    n_train = settings.train_characters if experiment == "pose" else settings.train_classes
    return mx.glyph_splits(glyphs if glyphs is not None else load_glyphs(), n_train)


def score(name: str, model, glyphs=None, device="cpu") -> float:
    """The recorded score: mean test MSE (pose) or accuracy % (classification) on fixed tasks."""
    entry = _entry(name)
    settings = settings_of(name)
    data = splits(entry["experiment"], settings, glyphs)["test"]
    tasks = mx.sampler(entry["experiment"], settings, data, test=True, seed=SCORE_SEED,
                       device=device).sample(SCORE_TASKS)
    if entry["experiment"] != "classification":
        return float(mx.task_errors(model, tasks).mean())
    return float(mx.episode_accuracies(model, tasks).mean())


def _model(name: str, settings, device="cpu"):
    entry = _entry(name)
    n_classes = settings.n_way if entry["experiment"] == "classification" else None
    return mx.build(settings, mx.input_dim(entry["experiment"], settings), n_classes=n_classes, device=device)


def _train(name: str, mode: str, glyphs, device="cpu", checkpoint=None, progress: bool = False,
           steps: int | None = None):
    entry, settings = _entry(name), settings_of(name, mode)
    if steps is not None:
        settings = mx.variant(settings, steps=steps, cnp_steps=None)
    data = splits(entry["experiment"], settings, glyphs)
    model = _model(name, settings, device)
    tasks = mx.sampler(entry["experiment"], settings, data["train"], entry.get("exclusive", False),
                       seed=settings.seed, device=device)
    history = mx.meta_train(model, tasks, settings, checkpoint=checkpoint, progress=progress, desc=name,
                            device=device)
    return model, history


def obtain(name: str, mode: str = "quick", device="cpu", glyphs=None, progress: bool = True):
    """Model ``name`` for a lecture: the stored reference in quick mode, otherwise trained here.

    Training in full mode checkpoints under ``cache_dir()`` (:mod:`metaedu.checkpoints`) and resumes
    from there after an interruption; quick settings that no longer match the stored file train here.
    """
    from metaedu.data.glyphs import load_glyphs

    check_mode(mode)
    if mode == "quick" and stored(name) is not None:
        return load(name, device)[0]
    if glyphs is None and _entry(name)["experiment"] != "sinusoid":
        glyphs = load_glyphs()
    model, _ = _train(name, mode, glyphs, device, None, progress)
    return model.eval()


def train_one(name: str, out_dir: Path = REFERENCE_DIR, device="cpu", steps: int | None = None) -> dict:
    """Train, round to float16, score and save one reference model; return its manifest record.

    ``steps`` shortens training for a smoke test (the record then holds settings that
    :func:`stored` rejects, so such a file is never taken for a reference).
    """
    from metaedu.data.glyphs import load_glyphs

    torch.set_num_threads(1)
    entry, settings = _entry(name), settings_of(name)
    glyphs = load_glyphs() if entry["experiment"] != "sinusoid" else None
    start = time.process_time()
    model, history = _train(name, "quick", glyphs, device, steps=steps)
    if steps is not None:
        settings = mx.variant(settings, steps=steps, cnp_steps=None)
    seconds = time.process_time() - start
    state = {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items() if ".log_var." not in k}
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)  # score what is stored
    record = {"name": name, "experiment": entry["experiment"], "exclusive": entry.get("exclusive", False),
              "settings": _recorded(settings), "score": score(name, model.to("cpu"), glyphs),
              "score_tasks": SCORE_TASKS, "score_seed": SCORE_SEED, "cpu_seconds": round(seconds, 1),
              "final_loss": sum(history["loss"][-100:]) / min(100, len(history["loss"])),
              "torch": str(torch.__version__), "machine": platform.machine(),
              "command": "python -m metaedu.algorithms.memorization_reference"}
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "record": record}, out_dir / f"{name}.pt")
    return record


def stored(name: str, ref_dir: Path = REFERENCE_DIR) -> dict | None:
    """The record of a stored model, or None when it is missing or its settings or the glyph data changed since."""
    path = ref_dir / f"{name}.pt"
    if not path.exists():
        return None
    record = torch.load(path, map_location="cpu", weights_only=True)["record"]
    return record if record["settings"] == _recorded(settings_of(name)) else None


def load(name: str, device="cpu", ref_dir: Path = REFERENCE_DIR):
    """The stored model ``name`` (a :class:`~metaedu.algorithms.memorization.MetaRegularized`) and its record."""
    if stored(name, ref_dir) is None:
        raise FileNotFoundError(f"no up-to-date reference model {name!r} in {ref_dir}; run "
                                "python -m metaedu.algorithms.memorization_reference")
    payload = torch.load(ref_dir / f"{name}.pt", map_location="cpu", weights_only=True)
    model = _model(name, settings_of(name))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in payload["state"].items()}, strict=False)
    if unexpected or any(".log_var." not in k for k in missing):
        raise ValueError(f"reference {name!r} does not fit its model: missing {missing}, unexpected {unexpected}")
    return model.to(device).eval(), payload["record"]


def _train_safely(name: str, out_dir: Path, steps: int | None, missing: bool = False) -> dict:
    """Train one model, turning an error into a record; with ``missing``, skip a model that is stored
    by now or that another run is training (it holds ``<name>.lock``)."""
    lock = out_dir / f"{name}.lock"
    if missing:
        out_dir.mkdir(parents=True, exist_ok=True)
        if stored(name, out_dir) is not None:
            return {"name": name, "skipped": "stored meanwhile"}
        try:
            lock.touch(exist_ok=False)
        except FileExistsError:
            return {"name": name, "skipped": "trained by another run"}
    try:
        return train_one(name, out_dir, "cpu", steps)
    except Exception as err:  # one failed model must not lose the others
        return {"name": name, "error": f"{err.__class__.__name__}: {err}"}
    finally:
        if missing:
            lock.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="models trained in parallel (one thread each)")
    parser.add_argument("--only", nargs="*", help="names to train (default: all)")
    parser.add_argument("--out", type=Path, default=REFERENCE_DIR)
    parser.add_argument("--steps", type=int, default=None, help="shorter training, for a smoke test only")
    parser.add_argument("--missing", action="store_true", help="only models not yet stored with the current settings")
    args = parser.parse_args(argv)
    names = args.only or list(catalogue())
    for n in names:
        _entry(n)
    if args.missing:
        names = [n for n in names if stored(n, args.out) is None]
    names.sort(key=lambda n: -settings_of(n).train_steps * (3 if n.startswith("pose") else 1))  # longest first
    jobs = [(n, args.out, args.steps, args.missing) for n in names]
    failed = []
    if args.jobs > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(args.jobs) as pool:
            results = pool.imap_unordered(_train_safely_star, jobs)
            for r in results:
                failed += _report(r, args.out)
    else:
        for job in jobs:
            failed += _report(_train_safely(*job), args.out)
    return 1 if failed else 0


def _train_safely_star(job):
    return _train_safely(*job)


def _report(record: dict, out_dir: Path) -> list[str]:
    if "skipped" in record:
        print(f"{record['name']:40s} skipped: {record['skipped']}", flush=True)
        return []
    if "error" in record:
        print(f"{record['name']:40s} FAILED {record['error']}", flush=True)
        return [record["name"]]
    write_manifest(out_dir)
    print(f"{record['name']:40s} score {record['score']:.3f}  ({record['cpu_seconds']} s CPU)", flush=True)
    return []


def write_manifest(out_dir: Path = REFERENCE_DIR) -> Path:
    """``manifest.json``: the records of every model file in ``out_dir``, rebuilt from the files themselves
    (so that two runs training different models into one folder cannot lose each other's records)."""
    records = {p.stem: torch.load(p, map_location="cpu", weights_only=True)["record"]
               for p in sorted(out_dir.glob("*.pt"))}
    manifest = out_dir / "manifest.json"
    partial = manifest.with_suffix(".json.partial")
    partial.write_text(json.dumps(records, indent=1, sort_keys=True))
    partial.replace(manifest)
    return manifest


if __name__ == "__main__":
    sys.exit(main())
