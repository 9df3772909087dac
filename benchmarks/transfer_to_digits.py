"""Do glyph-trained features transfer to real handwriting? A public proxy of the data set's purpose.

Trains the package's Prototypical Network (quick preset) on the glyph background
alphabets only, then measures one-shot accuracy on

* scikit-learn's real handwritten digits, 10-way (never seen in training), and
* the glyph evaluation alphabets, 5-way and 20-way,

beside pixel 1-nearest-neighbour on the same episodes, with 95% intervals over
test episodes. ``--steps`` changes the training budget; the learning-rate
schedule is stretched with it (the quick preset halves the rate every 40 of its
100 steps, so 1,000 steps halve it every 400). Several ``--seeds`` train several
networks; their mean shows how much of a difference is the training seed's.

    python benchmarks/transfer_to_digits.py [--steps 100] [--seeds 0 1 2] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from metaedu.algorithms import protonet, transfer
from metaedu.data import glyphs as glyph_data
from metaedu.data.digits import load_digits
from metaedu.evaluation import episode_accuracy, mean_ci
from metaedu.runtime import get_device, preset, seed_everything
from metaedu.tasks.episodes import EpisodeSampler


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def settings_for(steps: int) -> protonet.ProtoNetSettings:
    """The quick preset with ``steps`` steps and its learning-rate schedule stretched alike."""
    quick = protonet.ProtoNetSettings.quick()
    halve = max(1, round(quick.lr_halve_every * steps / quick.steps))
    return preset(protonet.ProtoNetSettings, "quick", steps=steps, lr_halve_every=halve)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="ProtoNet training steps (the quick preset has 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (one network each)")
    parser.add_argument("--episodes", type=int, default=600, help="test episodes per score")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.steps < 1 or args.episodes < 1:
        raise ValueError("--steps and --episodes must be at least 1")
    torch.set_num_threads(args.threads)
    device = get_device(args.device)

    glyphs = glyph_data.load_glyphs()
    evaluation = glyphs.split("evaluation")
    digits = load_digits(size=28)
    settings = settings_for(args.steps)
    version = getattr(glyph_data, "DATA_VERSION", getattr(glyph_data, "GENERATOR_VERSION", "?"))
    print(f"glyph data version {version}: {glyphs.n_characters} characters; "
          f"ProtoNet {settings.steps} steps (lr {settings.lr:g} halved every {settings.lr_halve_every}), "
          f"hidden {settings.hidden}, {settings.train_way}-way training episodes; {args.threads} thread(s) on {device}")
    tests = (("sklearn digits", digits, 10), ("glyph evaluation", evaluation, 5), ("glyph evaluation", evaluation, 20))
    means: dict[str, list[float]] = {}
    print(f"{'seed':>4}  {'episodes (1-shot)':<26} {'pixel 1-NN':>12} {'ProtoNet':>12}  train CPU s")
    for seed in args.seeds:
        seed_everything(seed)
        start = cpu_seconds()
        model, _ = protonet.train_protonet(settings, glyphs.split("background"), device=device, seed=seed, progress=False)
        trained = cpu_seconds() - start
        predict = lambda e: protonet.predict(model, e)  # noqa: E731
        for name, data, n_way in tests:
            label = f"{name}, {n_way}-way"
            scores = []
            for method in (transfer.pixel_nearest_neighbour, predict):
                sampler = EpisodeSampler(data, n_way=n_way, k_shot=1, n_query=5, device=device, seed=seed + 1)
                scores.append(episode_accuracy(method, sampler, n_episodes=args.episodes))
            means.setdefault(label, []).append(scores[1].mean)
            print(f"{seed:>4}  {label:<26} {str(scores[0]):>12} {str(scores[1]):>12}  {trained:8.0f}")
    if len(args.seeds) > 1:
        print(f"ProtoNet over {len(args.seeds)} training seeds (mean ± 95% interval over seeds):")
        for label, values in means.items():
            print(f"      {label:<26} {str(mean_ci(values)):>25}")
    print(f"total CPU time {cpu_seconds():.0f} s")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"wall time {time.perf_counter() - start:.0f} s")
