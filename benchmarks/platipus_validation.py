"""Lecture 08's hyper-parameter choices, rerun on meta-validation (never on the test tasks or alphabets).

    python benchmarks/platipus_validation.py regression   # KL weight x initial variance, lines or sines
    python benchmarks/platipus_validation.py glyphs       # inner step x KL weight, ambiguous glyphs

Regression: PLATIPUS (quick-mode network) trained for ``--steps`` meta-updates per setting, scored on
200 ambiguous tasks drawn with a validation seed (777; the lecture tests on seed 2018): the share of
tasks whose 10 samples hold a line and a sinusoid (each with R^2 >= 0.5), and the shares of sample kinds.
Glyphs: PLATIPUS and MAML (quick mode: frozen attribute encoder + MLP) trained on the meta-training
alphabets and scored on 300 tasks from the held-out validation alphabets: coverage, accuracy, NLL.
Prints one row per setting; takes minutes per row on one CPU thread.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import torch

from metaedu.algorithms import ambiguity, maml, platipus
from metaedu.tasks.ambiguous_regression import LINE, SINE, ambiguous_tasks, x_grid
from metaedu.tasks.regression import LinesOrSinesTasks

VALIDATION_SEED = 777


def regression(steps: int) -> None:
    print(f"lines or sines, {steps} meta-updates, 200 ambiguous validation tasks (seed {VALIDATION_SEED})")
    print("kl_weight  init_var  both kinds (%)      lines  sinusoids  seconds")
    for kl, var in itertools.product((0.01, 0.03, 0.1), (0.01, 0.1)):
        s = platipus.LinesOrSinesSettings.quick()
        s.kl_weight, s.init_log_var, s.steps = kl, math.log(var), steps
        torch.manual_seed(0)
        learner = platipus.regression_learner(s)
        tasks = LinesOrSinesTasks(s.k_shot, s.n_query, s.noise_std, seed=1, support_range=s.support_range)
        g = torch.Generator().manual_seed(0)
        start = time.process_time()
        platipus.meta_train(learner, tasks, s, g, progress=False)
        val = ambiguous_tasks(LinesOrSinesTasks(s.k_shot, s.n_query, s.noise_std, seed=VALIDATION_SEED,
                                                support_range=s.support_range), 200)
        x = x_grid(100)
        curves = learner.predict_samples(val.x_support, val.y_support, x.view(1, -1, 1).expand(200, -1, -1),
                                         s.test_inner_steps, 10, g)[..., 0]
        kinds = ambiguity.kinds_of_samples(curves, x)
        both = ambiguity.both_kinds(kinds).mean() * 100
        print(f"{kl:<9}  {var:<8}  {float(both):5.1f}              {float((kinds == LINE).float().mean()):.2f}   "
              f"{float((kinds == SINE).float().mean()):.2f}       {time.process_time() - start:.0f}")


def glyphs(steps: int) -> None:
    from metaedu.data.glyphs import load_glyphs

    base = ambiguity.AmbiguousGlyphSettings.quick()
    prepared = ambiguity.prepare_glyphs(load_glyphs(), base, progress=False)
    print(f"ambiguous glyphs, {steps} meta-updates, 300 tasks from the validation alphabets")
    print("method    inner_lr  kl_weight  coverage  accuracy  NLL")
    for method, inner_lr, kl in [("MAML", lr, None) for lr in (0.3, 0.5, 1.0)] + \
            [("PLATIPUS", lr, kl) for lr, kl in itertools.product((0.5, 1.0), (0.02, 0.05, 0.15))]:
        s = ambiguity.AmbiguousGlyphSettings.quick()
        s.inner_lr, s.steps = inner_lr, steps
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        train = prepared.sampler("train", s.k_shot, s.n_query, 10)
        if method == "MAML":
            learner = maml.MAML(ambiguity.glyph_network(s, prepared.in_features), "cross_entropy", inner_lr)
            maml.meta_train(learner, train, s, progress=False)
            predict = lambda xs, ys, xq, m=learner: m.predict(xs, ys, xq, s.test_inner_steps)[None]  # noqa: E731
        else:
            s.kl_weight = kl
            learner = ambiguity.glyph_learner(s, prepared.in_features)
            platipus.meta_train(learner, train, s, g, progress=False)
            predict = lambda xs, ys, xq, m=learner: m.predict_samples(xs, ys, xq, s.test_inner_steps, 10, g)  # noqa: E731
        r = ambiguity.evaluate_ambiguous(predict, prepared.sampler("validation", s.k_shot, s.eval_query, 20), 300)
        print(f"{method:<9} {inner_lr:<8}  {kl if kl is not None else '-':<9}  {float(r['coverage'].mean()):.2f}      "
              f"{float(r['accuracy'].mean()):5.1f}     {float(r['nll'].mean()):.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("regression", "glyphs"))
    parser.add_argument("--steps", type=int, default=None, help="meta-updates per setting (default: 5000 / 600)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.what == "regression":
        regression(args.steps or 5000)
    else:
        glyphs(args.steps or 600)
