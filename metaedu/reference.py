"""Reference checkpoints: small trained models that let a lecture show paper-scale results in seconds.

Quick mode trains live in the lecture, on a laptop CPU, for a minute; some results a paper is
known for need far more training than that (MAML on 20-way episodes). A *reference* is such a
model, trained once with the package's own training code and settings, shipped with the package
(``metaedu/pretrained/NAME.pt``, at most a few MB) together with a record
(``metaedu/pretrained/NAME.json``): the settings, the data's identity (glyph set version and seed),
the command that rebuilds it, where and how long it trained, and its score on fixed test episodes.

* ``metaedu pretrain NAME [--device cuda] [--steps N]`` trains and writes both files
  (:func:`pretrain`); ``metaedu pretrain --list`` lists the references.
* :func:`load` gives the model and its record; a file made for another data version or file
  format is refused with the command that rebuilds it (:class:`StaleReference`).
* :func:`score` re-scores a model on the record's fixed episodes; ``tests/test_reference.py``
  checks that every shipped reference reproduces its recorded score to its interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from metaedu.evaluation import Score, mean_ci

FORMAT = 1  # the layout of the record; a file of another format is refused
FOLDER = Path(__file__).resolve().parent / "pretrained"
EVAL_SEED = 20_261_127  # the fixed test episodes: evaluation alphabets, this sampler seed


class StaleReference(RuntimeError):
    """A shipped reference does not match this package (data version, format): rebuild it."""


@dataclass(frozen=True)
class Spec:
    """How one reference is built, trained and scored."""

    name: str
    lecture: str  # the lecture that shows it
    what: str  # one line for people
    settings: Callable[[], object]  # the reference preset (the lecture's full preset, with the steps trained)
    build: Callable[[object, torch.device], torch.nn.Module]  # an untrained model for these settings
    train: Callable[..., int]  # (model, settings, device, seed, max_seconds) -> steps done; trains in place
    per_episode: Callable[[torch.nn.Module, object, torch.device, int], torch.Tensor]  # accuracy (%) per episode
    n_way: int
    k_shot: int
    n_query: int = 5
    episodes: int = 400  # fixed test episodes behind the recorded score


# ----------------------------------------------------------------------------- the references


def _glyphs():
    from metaedu.data.glyphs import load_glyphs

    return load_glyphs()


def _test_sampler(spec: Spec, device):
    from metaedu.tasks.episodes import EpisodeSampler

    return EpisodeSampler(_glyphs().split("evaluation"), spec.n_way, spec.k_shot, spec.n_query, device=device,
                          seed=EVAL_SEED)


def _maml_settings(cls_name: str, steps: int):
    def make():
        from metaedu.algorithms import maml
        from metaedu.runtime import preset

        return preset(getattr(maml, cls_name), "full", steps=steps, checkpoint=False)

    return make


def _maml_build(settings, device):
    from metaedu.algorithms import maml
    from metaedu.runtime import seeded

    with seeded(0):
        return maml.glyph_learner(settings, device=device)


def _maml_train(learner, settings, device, seed, max_seconds=None) -> int:
    from metaedu.algorithms import maml
    from metaedu.tasks.episodes import EpisodeSampler

    sampler = EpisodeSampler(_glyphs().split("background"), settings.n_way, settings.k_shot, settings.n_query,
                             device=device, seed=seed)
    return maml.meta_train(learner, sampler, settings, checkpoint=False, max_seconds=max_seconds).steps_done


def _maml_per_episode(spec_name: str):
    def per_episode(learner, settings, device, episodes) -> torch.Tensor:
        from metaedu.evaluation import episode_accuracies

        sampler = _test_sampler(SPECS[spec_name], device)
        steps = settings.test_inner_steps
        return episode_accuracies(lambda e: learner.predict(e.x_support, e.y_support, e.x_query, steps), sampler,
                                  episodes, batch=25)

    return per_episode


def _protonet_settings(steps: int):
    def make():
        from metaedu.algorithms import protonet
        from metaedu.runtime import preset

        return preset(protonet.ProtoNetSettings, "full", steps=steps, checkpoint=False)

    return make


def _protonet_build(settings, device):
    from metaedu.algorithms import protonet
    from metaedu.runtime import seeded

    with seeded(0):
        return protonet.ProtoNet(settings, 1, 28).to(device)


def _protonet_train(model, settings, device, seed, max_seconds=None) -> int:
    from metaedu.algorithms import protonet

    _, history = protonet.train_protonet(settings, _glyphs().split("background"), device, seed, checkpoint=False,
                                         progress=True, model=model, max_seconds=max_seconds)
    return history.steps_done


def _protonet_per_episode(model, settings, device, episodes) -> torch.Tensor:
    from metaedu.algorithms import metric
    from metaedu.evaluation import episode_accuracies

    sampler = _test_sampler(SPECS["protonet-20way"], device)
    return episode_accuracies(lambda e: metric.predict(model, e), sampler, episodes, batch=25)


SPECS: dict[str, Spec] = {
    "protonet-20way": Spec(
        "protonet-20way", "03", "Prototypical Network, Snell et al.'s Omniglot preset (60-way training episodes, "
        "rotations, Conv4-64), scored on 20-way 1-shot glyph episodes",
        _protonet_settings(10_000), _protonet_build, _protonet_train, _protonet_per_episode, 20, 1, episodes=200),
    "maml-5way": Spec(
        "maml-5way", "06", "MAML, Finn et al.'s 5-way 1-shot Omniglot preset (Conv4-64, 32 tasks, second order)",
        _maml_settings("GlyphSettings", 3_000), _maml_build, _maml_train, _maml_per_episode("maml-5way"), 5, 1),
    "maml-20way": Spec(
        "maml-20way", "06", "MAML, Finn et al.'s 20-way 1-shot Omniglot preset (Conv4-64, 16 tasks, 5 inner steps, "
        "second order)",
        _maml_settings("TwentyWayGlyphSettings", 1_000), _maml_build, _maml_train, _maml_per_episode("maml-20way"),
        20, 1, episodes=200),
}


# ----------------------------------------------------------------------------- files


def paths(name: str, folder: Path | None = None) -> tuple[Path, Path]:
    folder = Path(folder) if folder is not None else FOLDER
    return folder / f"{name}.pt", folder / f"{name}.json"


def _spec(name: str) -> Spec:
    if name not in SPECS:
        raise KeyError(f"no reference named {name!r} (references: {', '.join(sorted(SPECS))})")
    return SPECS[name]


def _data_identity() -> dict:
    from metaedu.data.glyphs import DATA_VERSION

    return {"data": "glyphs", "version": DATA_VERSION, "seed": 0, "train_split": "background",
            "test_split": "evaluation"}


def score(name: str, model: torch.nn.Module, settings, device="cpu", episodes: int | None = None) -> tuple[Score, torch.Tensor]:
    """Accuracy (%) with its interval on the reference's fixed test episodes (the first ``episodes``)."""
    spec = _spec(name)
    values = spec.per_episode(model, settings, torch.device(device), episodes or spec.episodes)
    return mean_ci(values), values


def pretrain(name: str, device="cpu", steps: int | None = None, seed: int = 0, folder: Path | None = None,
             max_seconds: float | None = None) -> dict:
    """Train the reference ``name`` with its preset, score it, write ``NAME.pt`` and ``NAME.json``; return the record.

    ``max_seconds`` stops training early (a time budget on a lent machine); the record then says
    how many steps were done, and its command rebuilds exactly that (``--steps N``).
    """
    spec = _spec(name)
    device = torch.device(device)
    settings = spec.settings()
    if steps is not None:
        settings = dataclasses.replace(settings, steps=steps)
    model = spec.build(settings, device)
    start = time.perf_counter()
    done = spec.train(model, settings, device, seed, max_seconds)
    settings = dataclasses.replace(settings, steps=done)  # what was trained, for the record and for load()
    seconds = time.perf_counter() - start
    result, _ = score(name, model, settings, device)
    weights, record_path = paths(name, folder)
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    record = {
        "name": name, "format": FORMAT, "lecture": spec.lecture, "what": spec.what,
        "settings_class": type(settings).__name__, "settings": dataclasses.asdict(settings),
        "data": _data_identity(), "seed": seed, "steps": done, "seconds": round(seconds, 1),
        "device": device_name, "torch": torch.__version__,
        "command": f"metaedu pretrain {name} --steps {done}" + (" --device cuda" if device.type == "cuda" else ""),
        "test": {"n_way": spec.n_way, "k_shot": spec.k_shot, "n_query": spec.n_query, "episodes": spec.episodes,
                 "sampler_seed": EVAL_SEED},
        "score": result.as_dict(),
    }
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def load(name: str, device="cpu", folder: Path | None = None) -> tuple[torch.nn.Module, object, dict]:
    """The shipped reference ``name``: (model, its settings, its record); refuses a stale file."""
    spec = _spec(name)
    weights, record_path = paths(name, folder)
    rebuild = f"rebuild it with `metaedu pretrain {name}`"
    if not weights.is_file() or not record_path.is_file():
        raise FileNotFoundError(f"reference {name!r} is not in {weights.parent}; {rebuild}")
    record = json.loads(record_path.read_text())
    if record.get("format") != FORMAT:
        raise StaleReference(f"reference {name!r} has file format {record.get('format')}, this package reads {FORMAT}; {rebuild}")
    if record.get("data") != _data_identity():
        raise StaleReference(f"reference {name!r} was trained on {record.get('data')}, this package has "
                             f"{_data_identity()}; {rebuild}")
    settings = dataclasses.replace(spec.settings(), **_settings_fields(record["settings"]))
    model = spec.build(settings, torch.device(device))
    model.load_state_dict(torch.load(weights, map_location=device))
    return model, settings, record


def _settings_fields(saved: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}


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
    budget = 60 * args.minutes if args.minutes else None
    record = pretrain(args.name, get_device(args.device), args.steps, args.seed, Path(args.out) if args.out else None,
                      budget)
    print(f"{record['name']}: {record['steps']} steps in {record['seconds']:.0f} s on {record['device']}; "
          f"{record['test']['n_way']}-way {record['test']['k_shot']}-shot accuracy "
          f"{Score(**record['score'])} on {record['test']['episodes']} fixed episodes")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("pretrain", help="train a reference checkpoint that the lectures load")
    p.add_argument("name", nargs="?", choices=sorted(SPECS), help="which reference")
    p.add_argument("--list", action="store_true", help="list the references and whether they are shipped")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="meta-updates (default: the reference preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=None, help="stop training after this long (the record keeps the steps done)")
    p.add_argument("--out", default=None, help="folder for NAME.pt and NAME.json (default: the package's pretrained/)")
    p.set_defaults(func=_pretrain)
