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
import math
import time

import torch

from metaedu.algorithms import maml, protonet
from metaedu.data.glyphs import load_glyphs
from metaedu.paper_results import paper
from metaedu.runtime import get_device, preset, seed_everything
from metaedu.tasks.episodes import EpisodeSampler


def timed_steps(step, minutes: float, max_steps: int, desc: str) -> int:
    """Run ``step(i)`` until the time budget or ``max_steps`` is reached; return the steps done."""
    deadline = time.perf_counter() + 60 * minutes
    done = 0
    while done < max_steps and time.perf_counter() < deadline:
        loss = float(step(done)["loss"])
        if not math.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss} at step {done}")
        done += 1
    return done


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

    # Prototypical Networks, full preset
    ps = preset(protonet.ProtoNetSettings, "full")
    model = protonet.ProtoNet(ps).to(device)
    sampler = EpisodeSampler(background, ps.train_way, ps.train_shot, ps.train_query, rotations=ps.rotations, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=ps.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=ps.lr_halve_every, gamma=0.5)

    def proto_step(i):
        eps = sampler.sample(ps.tasks)
        loss = protonet.episode_loss(model(eps), eps.y_query)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.detach()}

    start = time.perf_counter()
    done = timed_steps(proto_step, args.minutes, ps.steps, "ProtoNet")
    print(f"ProtoNet: {done} of {ps.steps} full-preset steps in {time.perf_counter() - start:.0f} s on {name}", flush=True)
    for n, k in ((5, 1), (5, 5), (20, 1), (20, 5)):
        score = protonet.evaluate(model, evaluation, n, k, n_episodes=args.episodes, device=device)
        rows.append(("Prototypical Networks", f"{n}-way {k}-shot", score, paper("Prototypical Networks", "Omniglot", f"{n}-way {k}-shot"), done))

    # MAML, full preset (5-way 1-shot, second order)
    ms = preset(maml.GlyphSettings, "full")
    learner = maml.glyph_learner(ms, device=device)
    msampler = EpisodeSampler(background, ms.n_way, ms.k_shot, ms.n_query, device=device, seed=1)
    mopt = torch.optim.Adam(learner.parameters(), lr=ms.outer_lr)

    def maml_step(i):
        tasks = msampler.sample(ms.meta_batch)
        loss, _ = learner.meta_loss(tasks, ms.inner_steps)
        mopt.zero_grad(set_to_none=True)
        loss.backward()
        mopt.step()
        return {"loss": loss.detach()}

    start = time.perf_counter()
    done = timed_steps(maml_step, args.minutes, ms.steps, "MAML")
    print(f"MAML: {done} of {ms.steps} full-preset steps in {time.perf_counter() - start:.0f} s on {name}", flush=True)
    test = EpisodeSampler(evaluation, ms.n_way, ms.k_shot, ms.n_query, device=device, seed=2)
    score = maml.evaluate_episodes(learner, test, ms.test_inner_steps, n_episodes=args.episodes)
    rows.append(("MAML", "5-way 1-shot", score, paper("MAML", "Omniglot", "5-way 1-shot"), done))

    print(f"\n{'method':<24} {'setting':<14} {'glyphs (ours)':>15} {'Omniglot (paper)':>18} {'steps':>7}")
    for method, setting, score, reported, steps in rows:
        print(f"{method:<24} {setting:<14} {str(score):>15} {reported:>18} {steps:>7}")


if __name__ == "__main__":
    main()
