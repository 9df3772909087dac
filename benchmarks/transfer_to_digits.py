"""Do glyph-trained features transfer to real handwriting? A public proxy of the data set's purpose.

Trains a small Prototypical Network on the glyph background alphabets only, then
measures 10-way one-shot accuracy on scikit-learn's real handwritten digits
(never seen in training), beside pixel 1-nearest-neighbour on the same episodes,
and the glyph evaluation alphabets for reference.

    python benchmarks/transfer_to_digits.py [--steps 300] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from metaedu.algorithms import protonet, transfer
from metaedu.data.digits import load_digits
from metaedu.data.glyphs import load_glyphs
from metaedu.evaluation import episode_accuracy
from metaedu.runtime import get_device, preset, seed_everything
from metaedu.tasks.episodes import EpisodeSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="ProtoNet training steps (quick preset otherwise)")
    parser.add_argument("--episodes", type=int, default=600, help="test episodes per score")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    seed_everything(args.seed)

    glyphs = load_glyphs()
    settings = preset(protonet.ProtoNetSettings, "quick", steps=args.steps)
    start = time.perf_counter()
    model, _ = protonet.train_protonet(settings, glyphs.split("background"), device=device, seed=args.seed, progress=False)
    trained = time.perf_counter() - start
    predict = lambda e: protonet.predict(model, e)  # noqa: E731

    digits = load_digits(size=28)
    rows = []
    for name, data, n_way in (("sklearn digits", digits, 10), ("glyph evaluation alphabets", glyphs.split("evaluation"), 5),
                              ("glyph evaluation alphabets", glyphs.split("evaluation"), 20)):
        scores = []
        for method in (transfer.pixel_nearest_neighbour, predict):
            sampler = EpisodeSampler(data, n_way=n_way, k_shot=1, n_query=5, device=device, seed=args.seed + 1)
            scores.append(episode_accuracy(method, sampler, n_episodes=args.episodes))
        rows.append((f"{name}, {n_way}-way 1-shot", *scores))
    print(f"ProtoNet ({settings.steps} steps, hidden {settings.hidden}) trained on glyphs in {trained:.0f} s on {device}")
    print(f"{'episodes':<44} {'pixel 1-NN':>14} {'ProtoNet':>14}")
    for label, pixel, proto in rows:
        print(f"{label:<44} {str(pixel):>14} {str(proto):>14}")


if __name__ == "__main__":
    main()
