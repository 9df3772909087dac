"""``metaedu train METHOD``: a method's meta-training from the command line, on one or several devices.

The same training functions the lectures call, with the lecture's presets (``--mode quick`` or
``full``), for a run that outlives a notebook: full mode on a GPU node, checkpointed and resumed.
Under PyTorch's launcher the meta-batch is split across the ranks (:mod:`metaedu.distributed`)::

    metaedu train maml-glyphs --mode full --device cuda                       # one GPU
    torchrun --nproc-per-node 4 -m metaedu train maml-glyphs --mode full --device cuda

Rank 0 alone evaluates, prints and writes ``--out`` (``model.pt``: the weights; ``result.json``:
the method, settings, world size, steps, seconds and the score with its interval). An interrupted
run started again with the same command (same ``--checkpoint``, or the default one named from the
settings) resumes where it stopped, with the same number of processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from metaedu import distributed


@dataclass
class Run:
    """What a method's training gives back: the model to save and its score on test tasks."""

    model: torch.nn.Module
    settings: object
    steps_done: int
    seconds: float
    score: object  # metaedu.evaluation.Score
    what: str  # e.g. "5-way 1-shot accuracy (%), glyph evaluation alphabets"


def _maml_sinusoid(mode, overrides, device, seed, checkpoint, evaluate=True) -> Run:
    from metaedu.algorithms import maml
    from metaedu.runtime import preset, seeded
    from metaedu.tasks.regression import SinusoidTasks

    settings = preset(maml.SinusoidSettings, mode, **overrides)
    with seeded(seed):  # the initial weights depend on the seed only (and rank 0's are broadcast)
        learner = maml.sinusoid_learner(settings, device=device)
    sampler = SinusoidTasks(settings.k_shot, settings.n_query, device=device, seed=distributed.rank_seed(seed))
    history = maml.meta_train(learner, sampler, settings, checkpoint=checkpoint)
    score = None
    if evaluate and distributed.is_main():
        test = SinusoidTasks(settings.k_shot, settings.n_query, device=device, seed=seed + 1)
        score = maml.evaluate_regression(learner, test, settings.test_inner_steps, settings.eval_tasks)
    return Run(learner, settings, history.steps_done, history.seconds, score,
               f"query MSE after {settings.test_inner_steps} steps, new sinusoids")


def _maml_glyphs(settings_cls) -> Callable:
    def run(mode, overrides, device, seed, checkpoint, evaluate=True) -> Run:
        from metaedu.algorithms import maml
        from metaedu.data.glyphs import load_glyphs
        from metaedu.runtime import preset, seeded
        from metaedu.tasks.episodes import EpisodeSampler

        settings = preset(settings_cls, mode, **overrides)
        glyphs = load_glyphs()
        with seeded(seed):
            learner = maml.glyph_learner(settings, device=device)
        sampler = EpisodeSampler(glyphs.split("background"), settings.n_way, settings.k_shot, settings.n_query,
                                 device=device, seed=distributed.rank_seed(seed))
        history = maml.meta_train(learner, sampler, settings, checkpoint=checkpoint)
        score = None
        if evaluate and distributed.is_main():
            test = EpisodeSampler(glyphs.split("evaluation"), settings.n_way, settings.k_shot, settings.n_query,
                                  device=device, seed=seed + 1)
            score = maml.evaluate_episodes(learner, test, settings.test_inner_steps, settings.eval_episodes)
        return Run(learner, settings, history.steps_done, history.seconds, score,
                   f"{settings.n_way}-way {settings.k_shot}-shot accuracy (%), glyph evaluation alphabets")

    return run


def _protonet(mode, overrides, device, seed, checkpoint, evaluate=True) -> Run:
    from metaedu.algorithms import protonet
    from metaedu.data.glyphs import load_glyphs
    from metaedu.runtime import preset

    settings = preset(protonet.ProtoNetSettings, mode, **overrides)
    glyphs = load_glyphs()
    model, history = protonet.train_protonet(settings, glyphs.split("background"), device, seed, checkpoint=checkpoint)
    score = None
    if evaluate and distributed.is_main():
        score = protonet.evaluate(model, glyphs.split("evaluation"), 20, 1, n_episodes=600, device=device)
    return Run(model, settings, history.steps_done, history.seconds, score,
               "20-way 1-shot accuracy (%), glyph evaluation alphabets")


def _maml_classes():
    from metaedu.algorithms import maml

    return maml.GlyphSettings, maml.TwentyWayGlyphSettings


METHODS: dict[str, Callable] = {
    "maml-sinusoid": _maml_sinusoid,
    "maml-glyphs": lambda *a: _maml_glyphs(_maml_classes()[0])(*a),  # 5-way 1-shot, the paper's Omniglot preset
    "maml-glyphs-20way": lambda *a: _maml_glyphs(_maml_classes()[1])(*a),
    "protonet": _protonet,
}


def _overrides(args) -> dict:
    out = {}
    if args.steps is not None:
        out["steps"] = args.steps
    if args.meta_batch is not None:
        out["tasks" if args.method == "protonet" else "meta_batch"] = args.meta_batch
    return out


def run(args: argparse.Namespace) -> int:
    from metaedu.runtime import get_device, set_threads

    device = get_device(args.device)
    here = distributed.init(device)
    device = distributed.device_for(device)
    set_threads()
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    try:
        result = METHODS[args.method](args.mode, _overrides(args), device, args.seed, checkpoint, not args.no_eval)
        if here.main:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            torch.save(result.model.state_dict(), out / "model.pt")
            record = {"method": args.method, "mode": args.mode, "world_size": here.size, "device": str(device),
                      "settings": dataclasses.asdict(result.settings), "steps_done": result.steps_done,
                      "seconds": round(result.seconds, 2), "what": result.what,
                      "score": result.score.as_dict() if result.score is not None else None}
            (out / "result.json").write_text(json.dumps(record, indent=1) + "\n")
            scored = f"; {result.what}: {result.score}" if result.score is not None else ""
            print(f"{args.method}: {result.steps_done} steps on {here.size} process(es) in {result.seconds:.1f} s{scored}")
            print(f"weights and result in {out}/")
    finally:
        distributed.shutdown()
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="meta-train a method from the command line (also under torchrun)")
    p.add_argument("method", choices=sorted(METHODS), help="what to train")
    p.add_argument("--mode", choices=["quick", "full"], default="full")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (under torchrun: each rank its cuda:LOCAL_RANK)")
    p.add_argument("--steps", type=int, default=None, help="meta-updates (default: the preset's)")
    p.add_argument("--meta-batch", type=int, default=None, help="tasks (or episodes) per meta-update, over all ranks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file (default: full mode names one from the settings under the cache folder)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation on test tasks (e.g. for timing)")
    p.add_argument("--out", default="train-out", help="folder for model.pt and result.json (default: train-out/)")
    p.set_defaults(func=run)


if __name__ == "__main__":  # pragma: no cover - `python -m metaedu train` goes through metaedu.cli
    sys.exit(1)
