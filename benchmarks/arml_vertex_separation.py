"""Do ARML's meta-knowledge vertices separate the 2-D regression families, and what changes that?

Lecture 05's quick run shows a small largest gap between two families' mean weight on one vertex. This
script varies one thing at a time around the quick preset: the softmax temperature of A_S (gamma_s), the
number of vertices G, the weight of the reconstruction losses (mu), and the training length. For each
setting it trains ARML on validation-seeded tasks (never the lecture's test seed) and reports

* the query MSE (on the same validation tasks for every setting),
* the separation of :func:`metaedu.algorithms.arml.separation`: the largest gap, the number of distinct
  favourite vertices, and the accuracy of naming a task's family from its vertex usage (nearest family mean),
* two references for that decoding accuracy: the *prototypes* themselves (the input A_S sees: if they
  carry the family and the usage does not, the loss is in A_S) and the same ARML *before training*.

Runs on a CPU (each setting a few seconds to a minute at one thread):

    python benchmarks/arml_vertex_separation.py --out results/
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from metaedu.algorithms import arml
from metaedu.evaluation import mean_ci
from metaedu.runtime import preset
from metaedu.tasks.regression2d import FAMILIES, FamilyTasks

TRAIN_SEED, VALIDATION_SEED = 50, 51  # the lecture trains on seed 0 and tests on seed 100


def decoding(features: torch.Tensor, family: torch.Tensor) -> float:
    """Accuracy (%) of naming the family by the nearest family mean of ``features`` (even tasks -> odd tasks)."""
    return arml.separation(features, family, len(FAMILIES))["decoding"]


def measure(model: arml.ARML, tasks) -> dict:
    family = tasks.params["family"].cpu()
    usage = model.vertex_usage(tasks.x_support, tasks.y_support).cpu()
    with torch.no_grad():
        prototypes = model.prototypes(tasks.x_support, tasks.y_support)[0].flatten(1).cpu()
    return {**arml.separation(usage, family, len(FAMILIES)), "prototype_decoding": decoding(prototypes, family),
            "usage_spread": float(usage.max(1).values.mean())}  # a task's largest weight: 1/G flat, 1 one-hot


def run(settings: arml.ARMLSettings, tasks) -> dict:
    model = arml.build(settings, seed=0)
    before = measure(model, tasks)
    start = time.process_time()
    arml.train_arml(model, FamilyTasks(settings.k_shot, settings.n_query, seed=TRAIN_SEED), settings, checkpoint=False,
                    progress=False)
    seconds = time.process_time() - start
    mse = mean_ci(arml.query_mse(model, tasks, settings.test_inner_steps), "")
    return {"mse": mse.mean, "mse_ci95": mse.ci95, "cpu_seconds": round(seconds, 1), "before_training": before,
            **measure(model, tasks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results", help="folder for arml_vertex_separation.json")
    parser.add_argument("--tasks", type=int, default=600, help="validation tasks behind each figure")
    parser.add_argument("--long", type=int, default=4, help="the longest run is this many times the quick preset's steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quick = preset(arml.ARMLSettings, "quick")
    settings = {"quick preset (gamma_s 5, G 6, mu 0.01)": quick}
    for gamma in (2.0**0.5, 1.0, 10.0):
        settings[f"gamma_s {gamma:.2f}"] = replace(quick, gamma_s=gamma)
    for g in (2, 12):
        settings[f"G {g}"] = replace(quick, vertices=g)
    for mu in (0.0, 0.1, 1.0):
        settings[f"mu {mu}"] = replace(quick, aux_weight=mu)
    settings[f"{args.long}x longer"] = replace(quick, steps=quick.steps * args.long)
    settings[f"gamma_s 1.00, {args.long}x longer"] = replace(quick, gamma_s=1.0, steps=quick.steps * args.long)
    tasks = FamilyTasks(quick.k_shot, quick.n_query, seed=VALIDATION_SEED).sample(args.tasks)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    print(f"{'setting':<40} {'MSE':>14} {'gap':>5} {'fav':>4} {'decode %':>9} {'(untrained)':>11} "
          f"{'protos %':>9} {'max w':>6}  (chance {100 / len(FAMILIES):.0f}%)")
    for name, s in settings.items():
        r = results[name] = run(s, tasks)
        print(f"{name:<40} {r['mse']:>7.2f} ± {r['mse_ci95']:<4.2f} {r['gap']:>5.2f} {r['favourites']:>4} "
              f"{r['decoding']:>9.0f} {r['before_training']['decoding']:>11.0f} {r['prototype_decoding']:>9.0f} "
              f"{r['usage_spread']:>6.2f}", flush=True)
        (out / "arml_vertex_separation.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
