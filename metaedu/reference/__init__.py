"""Reference checkpoints: small trained models that let a lecture show paper-scale results in seconds.

Quick mode trains live in the lecture, on a laptop CPU, for a minute; some results a paper is
known for need far more training than that (MAML on 20-way episodes). A *reference* is such a
model, trained once with the package's own training code and settings, shipped with the package
(``metaedu/pretrained/NAME.pt``, at most a few MB) together with a record
(``metaedu/pretrained/NAME.json``): the settings, the data's identity (glyph set version and seed),
the command that rebuilds it, where and how long it trained, and its score on fixed test episodes.

* ``metaedu pretrain NAME [--device cuda] [--steps N]`` trains and writes both files
  (:func:`pretrain`); ``metaedu pretrain --list`` lists the references. ``--init NAME.json`` goes on
  training an earlier run (a second session, perhaps on another machine); the record keeps every session.
* :func:`load` gives the model and its record; a file made for another data version or file
  format is refused with the command that rebuilds it (:class:`StaleReference`).
* :func:`score` re-scores a model on the record's fixed episodes; ``tests/test_reference.py``
  checks that every shipped reference reproduces its recorded score to its interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from metaedu.evaluation import Score, mean_ci

FORMAT = 1  # the layout of the record; a file of another format is refused
FOLDER = Path(__file__).resolve().parent.parent / "pretrained"


class StaleReference(RuntimeError):
    """A shipped reference does not match this package (data version, format): rebuild it."""


from metaedu.reference.spec import EVAL_SEED, Spec, glyph_identity  # noqa: E402,F401

#: The reference modules, one per lecture's models; each defines ``SPECS`` (a tuple of :class:`Spec`).
MODULES = ("glyph_models", "lstm_optimizer", "meta_lstm", "mann", "cactus")


def _collect() -> dict[str, Spec]:
    import importlib

    found: dict[str, Spec] = {}
    for module in MODULES:
        try:
            specs = importlib.import_module(f"metaedu.reference.{module}").SPECS
        except ModuleNotFoundError as error:
            if error.name != f"metaedu.reference.{module}":
                raise
            continue  # a reference module not written yet
        for spec in specs:
            if spec.name in found:
                raise ValueError(f"two references named {spec.name!r}")
            found[spec.name] = spec
    return found


SPECS: dict[str, Spec] = _collect()


# ----------------------------------------------------------------------------- files


def paths(name: str, folder: Path | None = None) -> tuple[Path, Path]:
    folder = Path(folder) if folder is not None else FOLDER
    return folder / f"{name}.pt", folder / f"{name}.json"


def _spec(name: str) -> Spec:
    if name not in SPECS:
        raise KeyError(f"no reference named {name!r} (references: {', '.join(sorted(SPECS))})")
    return SPECS[name]


def _data_identity(spec: Spec) -> dict:
    return spec.data() if spec.data is not None else glyph_identity()


def score(name: str, model: torch.nn.Module, settings, device="cpu", episodes: int | None = None) -> tuple[Score, torch.Tensor]:
    """The reference's score (mean and interval, in ``spec.unit``) on its fixed test episodes (the first ``episodes``)."""
    spec = _spec(name)
    values = spec.per_episode(model, settings, torch.device(device), episodes or spec.episodes)
    return mean_ci(values, unit=spec.unit), values


def pretrain(name: str, device="cpu", steps: int | None = None, seed: int = 0, folder: Path | None = None,
             max_seconds: float | None = None, like: dict | None = None, init: Path | None = None,
             changes: dict[str, str] | None = None) -> dict:
    """Train the reference ``name`` with its preset, score it, write ``NAME.pt`` and ``NAME.json``; return the record.

    ``max_seconds`` stops training early (a time budget on a lent machine); the record then says
    how many steps were done, and its command rebuilds exactly that (``--steps N``, or for a
    reference trained in stages, ``--like`` its record: every stage's steps). ``like``: train with
    the settings of that record instead of the preset.

    ``init``: the record (``NAME.json``, its weights beside it) of an earlier run of the same
    reference to go on training from, with that record's settings and a fresh optimizer: a second
    session of training, on another machine if need be. The new record counts the steps and
    seconds of both, lists each session under ``"sessions"``, and its command chains their commands.

    ``changes``: settings fields to change for this run, ``{"outer_lr": "0.0001"}`` (``--set
    outer_lr=0.0001``), e.g. a smaller step size for a second session. The session records them under
    ``"set"`` and its command repeats them; the record's settings are those of the last session.
    """
    spec = _spec(name)
    device = torch.device(device)
    earlier = _earlier_run(name, Path(init)) if init is not None else None
    if earlier is not None:
        like = earlier
    settings = spec.settings() if like is None else _restore(spec.settings(), like["settings"])
    step_fields = (spec.steps_field,) if isinstance(spec.steps_field, str) else spec.steps_field
    if earlier is not None and len(step_fields) > 1:
        raise ValueError(f"reference {name!r} trains in stages; --init continues only a single-stage reference")
    if steps is not None:
        settings = dataclasses.replace(settings, **dict.fromkeys(step_fields, steps))
    changed = _changed_fields(settings, changes or {}, step_fields)
    settings = dataclasses.replace(settings, **changed)
    model = spec.build(settings, device)
    if earlier is not None:
        model.load_state_dict(torch.load(Path(init).with_suffix(".pt"), map_location=device))
    start = time.perf_counter()
    done = spec.train(model, settings, device, seed, max_seconds)
    staged = dataclasses.is_dataclass(done)
    if staged:  # the settings as trained (several stages, each with its own steps)
        settings = done
        done = getattr(settings, step_fields[0])
    else:  # the steps done: what was trained, for the record and for load()
        settings = dataclasses.replace(settings, **dict.fromkeys(step_fields, done))
    seconds = time.perf_counter() - start
    device_name = _device_name(device)
    command = (f"metaedu pretrain {name} " + (f"--like metaedu/pretrained/{name}.json" if staged else f"--steps {done}")
               + (" --device cuda" if device.type == "cuda" else "")
               + "".join(f" --set {key}={value}" for key, value in changed.items()))
    session = {"steps": done, "seconds": round(seconds, 1), "device": device_name, "torch": torch.__version__,
               "seed": seed, "command": command}
    if changed:
        session["set"] = changed
    sessions = [session]
    if earlier is not None:
        session["command"] = f"{command} --init metaedu/pretrained/{name}.json --seed {seed}"
        sessions = _sessions(earlier) + sessions
        settings = dataclasses.replace(settings, **{step_fields[0]: sum(s["steps"] for s in sessions)})
    result, values = score(name, model, settings, device)
    extras = spec.extras(model, settings, device) if spec.extras is not None else {}
    weights, record_path = paths(name, folder)
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
    record = {
        "name": name, "format": FORMAT, "lecture": spec.lecture, "what": spec.what,
        "settings_class": type(settings).__name__, "settings": dataclasses.asdict(settings),
        "data": _data_identity(spec), "seed": seed, "steps": sum(s["steps"] for s in sessions),
        "seconds": round(sum(s["seconds"] for s in sessions), 1),
        "device": ", then ".join(dict.fromkeys(s["device"] for s in sessions)), "torch": torch.__version__,
        "command": " && ".join(s["command"] for s in sessions),
        "test": {"n_way": spec.n_way, "k_shot": spec.k_shot, "n_query": spec.n_query, "episodes": spec.episodes,
                 "sampler_seed": EVAL_SEED, "what": spec.test, "higher_is_better": spec.higher_is_better},
        "score": result.as_dict(),
        "per_episode": [round(float(v), 4) for v in values],  # for paired comparisons on the same episodes
        "extras": extras,
    }
    if earlier is not None:
        record["sessions"] = sessions
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def rescore(name: str, device="cpu", folder: Path | None = None) -> dict:
    """Score the shipped reference ``name`` again with this package and rewrite its record's score, per-episode
    values and extras; the weights and the training fields stay as they are. For a change on the evaluation
    side (a new extra a lecture reads); a changed model or data needs ``metaedu pretrain`` instead."""
    spec = _spec(name)
    model, settings, record = load(name, device, folder)
    device = torch.device(device)
    result, values = score(name, model, settings, device)
    record["score"] = result.as_dict()
    record["per_episode"] = [round(float(v), 4) for v in values]
    record["extras"] = spec.extras(model, settings, device) if spec.extras is not None else {}
    record["rescored"] = {"torch": torch.__version__, "device": _device_name(device)}
    paths(name, folder)[1].write_text(json.dumps(record, indent=1) + "\n")
    return record


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from metaedu.algorithms.maml_plan import machine

    return f"{machine()}, {torch.get_num_threads()} threads"


def _earlier_run(name: str, path: Path) -> dict:
    """The record at ``path`` (weights beside it), checked to be a run of reference ``name`` on this data."""
    if not path.is_file() or not path.with_suffix(".pt").is_file():
        raise FileNotFoundError(f"--init {path}: expected a reference record with its weights beside it "
                                f"({path.with_suffix('.pt').name})")
    record = json.loads(path.read_text())
    if record.get("name") != name:
        raise ValueError(f"--init {path} is a record of {record.get('name')!r}, not of {name!r}")
    if record.get("data") != _data_identity(_spec(name)):
        raise StaleReference(f"--init {path} was trained on {record.get('data')}, this package has "
                             f"{_data_identity(_spec(name))}")
    return record


def _changed_fields(settings, changes: dict[str, str], step_fields: tuple[str, ...]) -> dict:
    """``changes`` (field name to text, from ``--set``) as typed values of ``settings``' fields; refuses an
    unknown field, a steps field (``--steps`` sets those) and a value of the wrong kind, naming it."""
    known = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    typed = {}
    for key, text in changes.items():
        if key not in known:
            raise ValueError(f"--set {key}=...: {type(settings).__name__} has no field {key!r}; "
                             f"its fields are {', '.join(sorted(known))}")
        if key in step_fields:
            raise ValueError(f"--set {key}=...: the number of steps is set with --steps")
        current = known[key]
        kind = type(current)
        if kind not in (bool, int, float, str):
            raise ValueError(f"--set {key}=...: field {key!r} holds a {kind.__name__}, which --set cannot change")
        wrong = ValueError(f"--set {key}={text}: {key!r} needs a {kind.__name__} value")
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise wrong
            typed[key] = text.lower() == "true"
            continue
        try:
            typed[key] = kind(text)
        except ValueError:
            raise wrong from None
    return typed


def _sessions(record: dict) -> list[dict]:
    """The training sessions behind a record: its ``"sessions"``, or the one session a plain record describes."""
    if "sessions" in record:
        return list(record["sessions"])
    return [{key: record[key] for key in ("steps", "seconds", "device", "torch", "seed", "command")}]


def load(name: str, device="cpu", folder: Path | None = None) -> tuple[torch.nn.Module, object, dict]:
    """The shipped reference ``name``: (model, its settings, its record); refuses a missing or stale file."""
    spec = _spec(name)
    weights, _ = paths(name, folder)
    record = read_record(name, folder)
    if not weights.is_file():
        raise FileNotFoundError(f"reference {name!r} has a record but no weights in {weights.parent}; "
                                f"rebuild it with `metaedu pretrain {name}`")
    settings = _restore(spec.settings(), record["settings"])
    model = spec.build(settings, torch.device(device))
    model.load_state_dict(torch.load(weights, map_location=device))
    return model, settings, record


def _restore(default, saved: dict):
    """``default`` (a settings dataclass) with the saved fields; nested settings are restored field by field."""
    fields = {}
    for key, value in saved.items():
        current = getattr(default, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            fields[key] = _restore(current, value)
        else:
            fields[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(default, **fields)


def read_record(name: str, folder: Path | None = None) -> dict:
    """The record of the shipped reference ``name`` without loading its model (a lecture's table reads it).

    Refuses a missing or stale record, as :func:`load` does, naming the command that rebuilds it.
    """
    spec = _spec(name)
    weights, record_path = paths(name, folder)
    rebuild = f"rebuild it with `metaedu pretrain {name}`"
    if not record_path.is_file():
        raise FileNotFoundError(f"reference {name!r} is not in {record_path.parent}; {rebuild}")
    record = json.loads(record_path.read_text())
    if record.get("format") != FORMAT:
        raise StaleReference(f"reference {name!r} has file format {record.get('format')}, this package reads {FORMAT}; {rebuild}")
    if record.get("data") != _data_identity(spec):
        raise StaleReference(f"reference {name!r} was trained on {record.get('data')}, this package has "
                             f"{_data_identity(spec)}; {rebuild}")
    return record


def recorded_per_episode(record: dict) -> torch.Tensor:
    """The reference's score on each of its fixed test episodes, as recorded (float64)."""
    return torch.tensor(record["per_episode"], dtype=torch.float64)


def recorded_score(record: dict) -> Score:
    s = record["score"]
    return Score(s["mean"], s["ci95"], s["n"], s.get("unit", "%"))


# ----------------------------------------------------------------------------- command


def _pretrain(args: argparse.Namespace) -> int:
    from metaedu.runtime import get_device, set_threads

    if args.list or not args.name:
        for spec in SPECS.values():
            have = "shipped" if paths(spec.name)[0].is_file() else "missing"
            print(f"{spec.name:<16} lecture {spec.lecture}  {have:<8} {spec.what}")
        return 0
    set_threads()
    if args.rescore:
        record = rescore(args.name, get_device(args.device), Path(args.out) if args.out else None)
        print(f"{record['name']}: rescored, {Score(**record['score'])} on {record['test']['episodes']} fixed episodes")
        return 0
    budget = 60 * args.minutes if args.minutes else None
    like = json.loads(Path(args.like).read_text()) if args.like else None
    record = pretrain(args.name, get_device(args.device), args.steps, args.seed, Path(args.out) if args.out else None,
                      budget, like, Path(args.init) if args.init else None, _parse_set(args.set))
    test = record["test"]
    what = test["what"] or f"{test['n_way']}-way {test['k_shot']}-shot accuracy"
    print(f"{record['name']}: {record['steps']} steps in {record['seconds']:.0f} s on {record['device']}; "
          f"{what} {Score(**record['score'])} on {test['episodes']} fixed episodes")
    return 0


def _parse_set(items: list[str]) -> dict[str, str]:
    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"metaedu pretrain: --set takes FIELD=VALUE, got {item!r}")
        changes[key] = value
    return changes


def add_commands(sub) -> None:
    p = sub.add_parser("pretrain", help="train a reference checkpoint that the lectures load")
    p.add_argument("name", nargs="?", choices=sorted(SPECS), help="which reference")
    p.add_argument("--list", action="store_true", help="list the references and whether they are shipped")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="meta-updates (default: the reference preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=None, help="stop training after this long (the record keeps the steps done)")
    p.add_argument("--like", default=None, metavar="RECORD",
                   help="train with the settings of this record (NAME.json): rebuilds a reference trained in stages")
    p.add_argument("--init", default=None, metavar="RECORD",
                   help="go on training from this record's weights (NAME.json, NAME.pt beside it), with its settings")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one settings field for this run (repeatable), e.g. --set outer_lr=0.0001 with --init")
    p.add_argument("--rescore", action="store_true",
                   help="score the shipped weights again and rewrite the record's score and extras (no training)")
    p.add_argument("--out", default=None, help="folder for NAME.pt and NAME.json (default: the package's pretrained/)")
    p.set_defaults(func=_pretrain)
