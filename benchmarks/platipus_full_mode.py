"""Lecture 08 in full mode on a GPU, within a time budget: do longer training and larger networks give what quick mode cannot?

Quick mode's lines-or-sines models (even the shipped 12,000-update reference) hold a line and a
sinusoid among ten samples on about half of the ambiguous tasks when each sample must fit its
shape with R^2 >= 0.5, and the learned prior variance barely leaves its starting value. This
script trains the full presets (``LinesOrSinesSettings.full()``: 100 + 100 units; and
``AmbiguousGlyphSettings.full()``: Conv4 on the pixels, KL weight 0.15) for at most ``--minutes``
per method, then prints, side by side with the quick-mode figures of the notebook:

* lines or sines: the share of ambiguous test tasks whose samples hold both shapes (strict and
  loose), the kinds of the samples, the mean prior variance, and both methods' query MSE
  (:func:`metaedu.algorithms.platipus.reference.score`, the fixed test tasks of the reference);
* ambiguous glyphs: coverage, accuracy and NLL of MAML, MAML + noise (noise chosen on
  meta-validation) and PLATIPUS on the evaluation alphabets, with paired verdicts.

The step count is whatever the budget allows, printed with each result; a full run trains longer
(50,000 and 30,000 meta-updates). Runs on CPU too (``--minutes 0.1 --tasks 20`` as a smoke test).

    python benchmarks/platipus_full_mode.py --device cuda --minutes 3
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from metaedu import verdicts
from metaedu.algorithms import maml, platipus
from metaedu.algorithms.platipus import reference
from metaedu.data.glyphs import load_glyphs
from metaedu.evaluation import Score, mean_ci
from metaedu.runtime import get_device, preset
from metaedu.tasks.regression import LinesOrSinesTasks


def regression(device: torch.device, budget: float, n_tasks: int) -> None:
    settings = preset(platipus.LinesOrSinesSettings, "full")
    settings = replace(settings, checkpoint=False)  # a timed benchmark: start from scratch every time
    learner = platipus.regression_learner(settings, device, seed=reference.WEIGHT_SEED)
    baseline = maml.MAML(platipus.regression_network(settings, reference.WEIGHT_SEED), "mse", settings.inner_lr)
    baseline = baseline.to(device)

    def tasks():
        return LinesOrSinesTasks(settings.k_shot, settings.n_query, settings.noise_std, device=device,
                                 seed=reference.TRAIN_SEED, support_range=settings.support_range)

    noise = torch.Generator(device=device).manual_seed(reference.NOISE_SEED)
    h_p = platipus.meta_train(learner, tasks(), settings, noise, checkpoint=False, progress=False, max_seconds=budget)
    h_m = maml.meta_train(baseline, tasks(), settings, checkpoint=False, progress=False, max_seconds=budget)
    print(f"lines or sines, full preset: PLATIPUS {h_p.steps_done} and MAML {h_m.steps_done} of {settings.steps} "
          f"meta-updates in {h_p.seconds:.0f} s and {h_m.seconds:.0f} s", flush=True)
    s = reference.score(learner.cpu(), baseline.cpu(), settings, n_tasks)  # scored on CPU: small and exact
    sigma2 = torch.cat([p.detach().exp().flatten() for p in learner.log_sigma2.values()]).mean().item()
    quick = reference.load("cpu")[3]["score"]
    print(f"{'':38}{'full (this run)':>22}{'quick reference (12,000)':>28}")
    for key, label in (("both_kinds", "a line and a sinusoid, R² >= 0.5 (%)"),
                       ("both_kinds_any_fit", "a line and a sinusoid, no R² bar (%)"),
                       ("platipus_mse", "PLATIPUS query MSE (mean of samples)"), ("maml_mse", "MAML query MSE")):
        print(f"{label:38}{_text(s[key]):>22}{_text(quick[key]):>28}")
    print("sample kinds: " + ", ".join(f"{k} {v * 100:.0f} %" for k, v in s["kind_shares"].items()) +
          f"; mean prior variance {sigma2:.4f} (start {torch.tensor(settings.init_log_var).exp():.4f})")
    v = verdicts.against("PLATIPUS (full)", _ci(s["both_kinds"]), 50.0, "half of the tasks",
                         "tasks whose samples hold a line and a sinusoid, R² ≥ 0.5 (%)")
    print(v.sentence(), flush=True)


def glyphs(device: torch.device, budget: float, n_tasks: int) -> None:
    settings = replace(preset(platipus.AmbiguousGlyphSettings, "full"), checkpoint=False, eval_tasks=n_tasks,
                       val_tasks=min(300, n_tasks))
    prepared = platipus.prepare_glyphs(load_glyphs(), settings, device, seed=0, progress=False)
    learner = platipus.glyph_learner(settings, prepared.in_features, device, seed=0)
    baseline = maml.MAML(platipus.glyph_network(settings, prepared.in_features, 0), "cross_entropy",
                         settings.inner_lr).to(device)

    def train_tasks():
        return prepared.sampler("train", settings.k_shot, settings.n_query, 10, device)

    g = torch.Generator(device=device).manual_seed(0)
    h_p = platipus.meta_train(learner, train_tasks(), settings, g, checkpoint=False, progress=False, max_seconds=budget)
    h_m = maml.meta_train(baseline, train_tasks(), settings, checkpoint=False, progress=False, max_seconds=budget)
    print(f"ambiguous glyphs, full preset (Conv4 on pixels): PLATIPUS {h_p.steps_done} and MAML {h_m.steps_done} "
          f"of {settings.steps} meta-updates in {h_p.seconds:.0f} s and {h_m.seconds:.0f} s", flush=True)

    def validation():
        return prepared.sampler("validation", settings.k_shot, settings.eval_query, 20, device)

    noise_std, _ = platipus.choose_noise(baseline, validation, settings, g)
    steps, n = settings.test_inner_steps, settings.n_samples
    methods = {
        "MAML": lambda xs, ys, xq: baseline.predict(xs, ys, xq, steps)[None],
        f"MAML + noise ({noise_std})": lambda xs, ys, xq: platipus.forward_samples(
            baseline, platipus.noisy_maml_models(baseline, xs, ys, steps, n, noise_std, g), xq),
        f"PLATIPUS (KL weight {settings.kl_weight})": lambda xs, ys, xq: learner.predict_samples(
            xs, ys, xq, steps, n, g),
    }
    results = {name: platipus.evaluate_ambiguous(
        f, prepared.sampler("test", settings.k_shot, settings.eval_query, 30, device), n_tasks)
        for name, f in methods.items()}
    print(f"{'method':28}{'accuracy (%)':>16}{'coverage':>18}{'NLL':>18}")
    for name, r in results.items():
        print(f"{name:28}{str(mean_ci(r['accuracy'].cpu())):>16}{str(mean_ci(r['coverage'].cpu(), unit='count')):>18}"
              f"{str(mean_ci(r['nll'].cpu(), unit='nats')):>18}")
    ours, plain = results[list(methods)[2]], results["MAML"]
    for what, higher in (("coverage", True), ("accuracy", True), ("nll", False)):
        v = verdicts.paired("PLATIPUS", ours[what].cpu(), "MAML", plain[what].cpu(), what, higher_is_better=higher)
        print(v.sentence(), flush=True)


def _ci(record: dict) -> Score:
    return Score(record["mean"], record["ci95"], record["n"], record["unit"])


def _text(record: dict) -> str:
    return str(_ci(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per method and experiment")
    parser.add_argument("--tasks", type=int, default=300, help="test tasks behind each score")
    parser.add_argument("--only", choices=("regression", "glyphs"), default=None)
    args = parser.parse_args()
    device = get_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"device: {name}", flush=True)
    start = time.perf_counter()
    if args.only in (None, "regression"):
        regression(device, 60 * args.minutes, args.tasks)
    if args.only in (None, "glyphs"):
        glyphs(device, 60 * args.minutes, args.tasks)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
