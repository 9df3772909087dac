"""Full-mode settings on a GPU, within a time budget: how close do the paper's settings get on glyphs?

Trains Prototypical Networks (Snell et al.'s Omniglot preset: 60-way episodes,
rotations, Conv4-64) and MAML (Finn et al.'s 5-way 1-shot preset: Conv4-64,
32 tasks, second order) on the glyph background alphabets for at most
``--minutes`` each, then reports accuracy with 95% intervals on the evaluation
alphabets beside the papers' Omniglot figures. The step count is whatever the
budget allows, printed with the result; a full run trains far longer.

    python benchmarks/gpu_full_mode.py --device cuda --minutes 3
"""

from __future__ import annotations

import argparse

import torch

from metaedu.algorithms import maml, protonet
from metaedu.data.glyphs import load_glyphs
from metaedu.paper_results import paper
from metaedu.runtime import get_device, preset, seed_everything
from metaedu.tasks.episodes import EpisodeSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per method")
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes per score")
    args = parser.parse_args()
    device = get_device(args.device)
    seed_everything(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    glyphs = load_glyphs()
    background, evaluation = glyphs.split("background"), glyphs.split("evaluation")
    rows = []

    budget = 60 * args.minutes

    # Prototypical Networks, full preset
    ps = preset(protonet.ProtoNetSettings, "full")
    model, history = protonet.train_protonet(ps, background, device, max_seconds=budget)
    done = history.steps_done
    print(f"ProtoNet: {done} of {ps.steps} full-preset steps in {history.seconds:.0f} s on {name}", flush=True)
    for n, k in ((5, 1), (5, 5), (20, 1), (20, 5)):
        score = protonet.evaluate(model, evaluation, n, k, n_episodes=args.episodes, device=device)
        rows.append(("Prototypical Networks", f"{n}-way {k}-shot", score, paper("Prototypical Networks", "Omniglot", f"{n}-way {k}-shot"), done))

    # MAML, full preset (5-way 1-shot, second order)
    ms = preset(maml.GlyphSettings, "full")
    learner = maml.glyph_learner(ms, device=device)
    msampler = EpisodeSampler(background, ms.n_way, ms.k_shot, ms.n_query, device=device, seed=1)
    history = maml.meta_train(learner, msampler, ms, max_seconds=budget)
    done = history.steps_done
    print(f"MAML: {done} of {ms.steps} full-preset steps in {history.seconds:.0f} s on {name}", flush=True)
    test = EpisodeSampler(evaluation, ms.n_way, ms.k_shot, ms.n_query, device=device, seed=2)
    score = maml.evaluate_episodes(learner, test, ms.test_inner_steps, n_episodes=args.episodes)
    rows.append(("MAML", "5-way 1-shot", score, paper("MAML", "Omniglot", "5-way 1-shot"), done))

    print(f"\n{'method':<24} {'setting':<14} {'glyphs (ours)':>15} {'Omniglot (paper)':>18} {'steps':>7}")
    for method, setting, score, reported, steps in rows:
        print(f"{method:<24} {setting:<14} {str(score):>15} {reported:>18} {steps:>7}")


if __name__ == "__main__":
    main()
