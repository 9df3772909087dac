"""Lecture 08's quick-mode choices, made on meta-validation (never on the test tasks or alphabets).

    METAEDU_THREADS=1 python scripts/choose_platipus_settings.py glyphs       # about 2 min of CPU
    METAEDU_THREADS=1 python scripts/choose_platipus_settings.py regression   # about 5 min of CPU

**Glyphs** (:func:`choose_glyphs`): MAML and PLATIPUS (quick mode: frozen attribute encoder + MLP),
``--steps`` meta-updates each (600 by default), scored on 300 tasks from the held-out validation
alphabets. The inner step alpha is MAML's most accurate of (0.3, 0.5, 1.0); PLATIPUS's KL weight is
the one of (0.02, 0.05, 0.15) that loses the least accuracy at that alpha. The stored choice is
``AmbiguousGlyphSettings.quick()``'s ``inner_lr`` and ``kl_weight``; ``tests/test_platipus.py``
(marker slow) runs :func:`choose_glyphs` and fails when they differ.

**Regression** (:func:`choose_regression`): PLATIPUS on lines or sines (quick-mode network),
``--steps`` meta-updates per setting (5,000 by default), scored on 200 ambiguous tasks drawn with a
validation seed (777; the lecture tests on 2018): the share of tasks whose 10 samples hold a line and
a sinusoid (each with R^2 >= 0.5). The KL weight and initial variance with the highest share are
``LinesOrSinesSettings``' ``kl_weight`` and ``init_log_var``. Too long for the test suite; rerun by hand.
"""

from __future__ import annotations

import argparse
import itertools
import math
from dataclasses import replace

import torch

from metaedu.algorithms import maml, platipus
from metaedu.runtime import set_threads
from metaedu.tasks.ambiguous_regression import LINE, SINE, ambiguous_tasks, x_grid
from metaedu.tasks.regression import LinesOrSinesTasks

VALIDATION_SEED = 777
INNER_LRS = (0.3, 0.5, 1.0)
KL_WEIGHTS = (0.02, 0.05, 0.15)


def choose_glyphs(steps: int = 600, verbose: bool = True) -> tuple[float, float]:
    """``(inner_lr, kl_weight)`` for quick-mode glyphs, chosen on the validation alphabets."""
    from metaedu.data.glyphs import load_glyphs

    base = platipus.AmbiguousGlyphSettings.quick()
    prepared = platipus.prepare_glyphs(load_glyphs(), base, progress=False)

    def score(method: str, inner_lr: float, kl: float | None) -> dict:
        s = replace(base, inner_lr=inner_lr, steps=steps, kl_weight=kl if kl is not None else base.kl_weight)
        train = prepared.sampler("train", s.k_shot, s.n_query, 10)
        g = torch.Generator().manual_seed(0)
        if method == "MAML":
            learner = maml.MAML(platipus.glyph_network(s, prepared.in_features), "cross_entropy", inner_lr)
            maml.meta_train(learner, train, s, progress=False)

            def predict(xs, ys, xq):
                return learner.predict(xs, ys, xq, s.test_inner_steps)[None]
        else:
            learner = platipus.glyph_learner(s, prepared.in_features)
            platipus.meta_train(learner, train, s, g, progress=False)

            def predict(xs, ys, xq):
                return learner.predict_samples(xs, ys, xq, s.test_inner_steps, s.n_samples, g)

        r = platipus.evaluate_ambiguous(predict, prepared.sampler("validation", s.k_shot, s.eval_query, 20), 300)
        row = {k: float(v.mean()) for k, v in r.items()}
        if verbose:
            print(
                f"{method:<9} {inner_lr:<8}  {kl if kl is not None else '-':<9}  {row['coverage']:.2f}      "
                f"{row['accuracy']:5.1f}     {row['nll']:.3f}",
                flush=True,
            )
        return row

    if verbose:
        print(f"ambiguous glyphs, {steps} meta-updates, 300 tasks from the validation alphabets")
        print("method    inner_lr  kl_weight  coverage  accuracy  NLL")
    maml_rows = {lr: score("MAML", lr, None) for lr in INNER_LRS}
    inner_lr = max(INNER_LRS, key=lambda lr: maml_rows[lr]["accuracy"])
    loss = {kl: maml_rows[inner_lr]["accuracy"] - score("PLATIPUS", inner_lr, kl)["accuracy"] for kl in KL_WEIGHTS}
    kl_weight = min(KL_WEIGHTS, key=lambda kl: loss[kl])
    if verbose:
        print(f"chosen: inner_lr = {inner_lr}, kl_weight = {kl_weight}")
    return inner_lr, kl_weight


def choose_regression(steps: int = 5000, verbose: bool = True) -> tuple[float, float]:
    """``(kl_weight, initial variance)`` for lines or sines, chosen on validation tasks."""
    if verbose:
        print(f"lines or sines, {steps} meta-updates, 200 ambiguous validation tasks (seed {VALIDATION_SEED})")
        print("kl_weight  init_var  both kinds (%)  lines  sinusoids")
    base = platipus.LinesOrSinesSettings.quick()
    val = ambiguous_tasks(
        LinesOrSinesTasks(
            base.k_shot, base.n_query, base.noise_std, seed=VALIDATION_SEED, support_range=base.support_range
        ),
        200,
    )
    x = x_grid(100)
    shares = {}
    for kl, var in itertools.product((0.01, 0.03, 0.1), (0.01, 0.1)):
        s = replace(base, kl_weight=kl, init_log_var=math.log(var), steps=steps)
        learner = platipus.regression_learner(s)
        tasks = LinesOrSinesTasks(s.k_shot, s.n_query, s.noise_std, seed=1, support_range=s.support_range)
        g = torch.Generator().manual_seed(0)
        platipus.meta_train(learner, tasks, s, g, progress=False)
        curves = learner.predict_samples(
            val.x_support, val.y_support, x.view(1, -1, 1).expand(200, -1, -1), s.test_inner_steps, s.n_samples, g
        )[..., 0]
        kinds = platipus.kinds_of_samples(curves, x)
        shares[(kl, var)] = float(platipus.both_kinds(kinds).mean()) * 100
        if verbose:
            print(
                f"{kl:<9}  {var:<8}  {shares[(kl, var)]:5.1f}           {float((kinds == LINE).float().mean()):.2f}"
                f"   {float((kinds == SINE).float().mean()):.2f}",
                flush=True,
            )
    best = max(shares, key=shares.get)
    if verbose:
        print(f"chosen: kl_weight = {best[0]}, initial variance = {best[1]}")
    return best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("glyphs", "regression"))
    parser.add_argument("--steps", type=int, default=None, help="meta-updates per setting")
    args = parser.parse_args()
    set_threads()
    if args.what == "glyphs":
        choose_glyphs(args.steps or 600)
    else:
        choose_regression(args.steps or 5000)
