"""LLAMA's eta on meta-validation only: the sweep behind the values in ``metaedu.algorithms.llama``'s quick presets.

    python benchmarks/llama_meta_validation.py [--mode quick] [--etas 0 1e-3 1e-2]

Sinusoids: LLAMA is trained with each eta on the quick budget; its predictive (sigma, tau) is chosen on
one set of validation tasks and scored (held-out log-likelihood per point, K = 5 and 10) on a second
set of validation tasks. Neither set shares a seed with lecture 07's test tasks (seeds 300 + K there).
Glyphs: 5-way 1-shot accuracy on episodes from held-out background alphabets
(``baselines.validation_split``), never the evaluation alphabets. Prints one table per family; run with
one thread (``METAEDU_THREADS=1``) on a shared machine.
"""

from __future__ import annotations

import argparse
import resource

import torch

from metaedu.algorithms import llama, maml
from metaedu.algorithms.baselines import validation_split
from metaedu.data.glyphs import load_glyphs
from metaedu.evaluation import episode_accuracies, mean_ci
from metaedu.runtime import preset, seed_everything, set_threads
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.tasks.regression import SinusoidTasks


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sinusoids(mode: str, etas: list[float]) -> None:
    print("sinusoids: held-out log-likelihood per point on validation tasks (higher is better)")
    for eta in etas:
        settings = preset(llama.SinusoidSettings, mode, eta=eta)
        seed_everything(0)
        learner = llama.sinusoid_learner(settings)
        start = cpu_seconds()
        maml.meta_train(learner, SinusoidTasks(settings.k_shot, settings.n_query, seed=1), settings, progress=False)
        trained = cpu_seconds() - start
        scores = []
        for K in (5, 10):
            choose = SinusoidTasks(K, settings.test_points, seed=500 + K).sample(settings.val_tasks)
            score = SinusoidTasks(K, settings.test_points, seed=600 + K).sample(settings.val_tasks)
            sigma, tau, _ = llama.choose_laplace(learner, choose, settings.test_inner_steps, list(settings.noise_grid),
                                                 list(settings.tau_grid), settings.val_samples)
            out = learner.predictive_samples(score.x_support, score.y_support, score.x_query, settings.test_inner_steps,
                                             settings.n_samples, torch.Generator().manual_seed(0), sigma, tau)
            scores.append(f"K={K}: {mean_ci(llama.predictive_log_likelihood(out, score.y_query, sigma), unit='ll')}")
        print(f"  eta = {eta:<8g} {'   '.join(scores)}   (training: {trained:.0f} s CPU)")


def glyphs(mode: str, etas: list[float]) -> None:
    print("glyphs: 5-way 1-shot accuracy (%) on validation alphabets")
    data = load_glyphs()
    train, val = validation_split(data.split("background"))
    for eta in etas:
        settings = preset(llama.GlyphSettings, mode, eta=eta)
        seed_everything(0)
        learner = llama.glyph_learner(settings)
        start = cpu_seconds()
        maml.meta_train(learner, EpisodeSampler(train, settings.n_way, settings.k_shot, settings.n_query, seed=0),
                        settings, progress=False)
        trained = cpu_seconds() - start
        acc = episode_accuracies(lambda e: learner.predict(e.x_support, e.y_support, e.x_query, settings.test_inner_steps),
                                 EpisodeSampler(val, 5, 1, 5, seed=11), settings.eval_episodes, 25)
        print(f"  eta = {eta:<8g} {mean_ci(acc)}   (training: {trained:.0f} s CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", default="quick", choices=("quick", "full"))
    parser.add_argument("--etas", nargs="+", type=float, default=[0.0, 1e-3, 1e-2])
    parser.add_argument("--only", choices=("sinusoids", "glyphs"))
    args = parser.parse_args()
    set_threads()
    if args.only != "glyphs":
        sinusoids(args.mode, args.etas)
    if args.only != "sinusoids":
        glyphs(args.mode, args.etas)


if __name__ == "__main__":
    main()
