"""Lecture 05's full-mode settings within a time budget: the GNN end to end, ARML vs MAML on 2-D regression
and on mixed image families.

Three parts, each a paper's full preset trained for its share of ``--seconds``:

* ``gnn``: Garcia & Bruna's 5-way 1-shot preset (a Conv4 trained end to end, 300 episodes a meta-batch) on
  the glyph background alphabets; accuracy on the evaluation alphabets.
* ``regression``: ARML and its MAML baseline with Yao et al.'s 2-D preset (25 tasks, 5 inner steps) on the
  six families; query MSE on the same test tasks, the paired difference, and how well the meta-knowledge
  vertices separate the families (:func:`metaedu.algorithms.arml.separation`).
* ``images``: ARML and its MAML baseline with the authors' Plain-Multi 5-way 1-shot script (Conv4-32, 5 inner
  steps of 0.01, 4 episodes, G = 16) on our four image families (:mod:`metaedu.tasks.image_families`);
  accuracy per family on the same test episodes, the paired difference, and the vertices' separation; and a
  control, MAML started from theta_0 / 2 (where ARML's untrained gate, about 1/2, starts it).

In each ARML part, MAML trains for as many meta-updates as ARML reached, on the same tasks. For each
training run it records the steps reached, the seconds per step and the hours a whole full run
would take at that pace. Everything printed is also written to ``--out``/relational_full_mode.json.
Runs on a CPU too (slowly; give a small ``--seconds``):

    python benchmarks/relational_full_mode.py --device cuda --seconds 300 --out results/
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from metaedu.algorithms import arml, arml_images, gnn
from metaedu.algorithms.maml import meta_train
from metaedu.data.glyphs import load_glyphs
from metaedu.evaluation import mean_ci
from metaedu.paper_results import paper
from metaedu.runtime import get_device, preset, seed_everything
from metaedu.tasks.image_families import FAMILIES as IMAGE_FAMILIES
from metaedu.tasks.image_families import ImageFamilies
from metaedu.tasks.regression2d import FAMILIES as REGRESSION_FAMILIES
from metaedu.tasks.regression2d import FamilyTasks

SHARES = {"gnn": 0.3, "regression": 0.3, "images": 0.4}  # of --seconds, split among the parts asked for
ARML_SHARE = 0.55  # of a part's time, for ARML; MAML then trains for as many steps (same data, same steps)
MAML_CAP = 0.55  # MAML stops there if it has not reached ARML's steps by then (the JSON records both counts)


def pace(history, total: int) -> dict:
    done = max(history.steps_done, 1)
    per_step = history.seconds / done
    return {"steps": history.steps_done, "of_steps": total, "seconds": round(history.seconds, 1),
            "seconds_per_step": per_step, "full_run_hours": per_step * total / 3600}


def score(values: torch.Tensor, unit: str) -> dict | None:
    if values.numel() == 0:
        return None  # a family no test task drew (only with very few test tasks)
    s = mean_ci(values, unit)
    return {"mean": s.mean, "ci95": s.ci95, "n": s.n, "text": str(s)}


def say(name: str, record: dict) -> None:
    print(f"{name}: " + json.dumps(record, default=str), flush=True)


def run_gnn(budget: float, device, episodes: int) -> dict:
    glyphs = load_glyphs()
    settings = preset(gnn.GNNSettings, "full", checkpoint=False)
    model, history = gnn.train_gnn(settings, glyphs.split("background"), device, seed=0, progress=False,
                                   max_seconds=budget)
    acc = gnn.episode_accuracies(model, glyphs.split("evaluation"), n_query=5, n_episodes=episodes, device=device,
                                 seed=2)
    return {"training": pace(history, settings.steps), "accuracy_5way_1shot": score(acc, "%"),
            "paper_omniglot": paper("GNN", "Omniglot", "5-way 1-shot")}


def usage_record(model, x_support, y_support, family, names) -> dict:
    usage = model.vertex_usage(x_support, y_support).cpu()
    if len(set(family.tolist())) < len(names) or len(family) < 2 * len(names):
        return {"error": f"too few test tasks ({len(family)}) to average every family's vertex usage"}
    by_family = arml.usage_by_family(usage, family.cpu(), len(names))
    return {"separation": arml.separation(usage, family.cpu(), len(names)),
            "usage_by_family": {n: [round(float(v), 4) for v in row] for n, row in zip(names, by_family)}}


def run_regression(budget: float, device, tasks: int) -> dict:
    s = preset(arml.ARMLSettings, "full", checkpoint=False)
    net = arml.build(s, seed=0).to(device)
    arml_history = arml.train_arml(net, FamilyTasks(s.k_shot, s.n_query, device=device, seed=0), s, progress=False,
                                   max_seconds=budget * ARML_SHARE)
    base = arml.maml_baseline(s, seed=0).to(device)
    maml_history = meta_train(base, FamilyTasks(s.k_shot, s.n_query, device=device, seed=0),
                              replace(s, steps=arml_history.steps_done), progress=False, max_seconds=MAML_CAP * budget)
    test = FamilyTasks(s.k_shot, s.n_query, device=device, seed=100).sample(tasks)
    a, b = arml.query_mse(net, test, s.test_inner_steps), arml.query_mse(base, test, s.test_inner_steps)
    family = test.params["family"].cpu()
    return {"arml_training": pace(arml_history, s.steps), "maml_training": pace(maml_history, s.steps),
            "mse": {"ARML": score(a, ""), "MAML": score(b, ""), "ARML - MAML": score(a - b, "")},
            "mse_by_family": {n: {"ARML": score(a[family == f], ""), "MAML": score(b[family == f], "")}
                              for f, n in enumerate(REGRESSION_FAMILIES)},
            "paper": {"ARML": paper("ARML", "2-D regression", "10-shot MSE"),
                      "MAML": paper("MAML", "2-D regression", "10-shot MSE")},
            "vertices": usage_record(net, test.x_support, test.y_support, test.params["family"], REGRESSION_FAMILIES)}


def run_images(budget: float, device, episodes: int) -> dict:
    s = preset(arml_images.ARMLImageSettings, "full", checkpoint=False)
    glyphs = load_glyphs()
    train = lambda: ImageFamilies("background", s.n_way, s.k_shot, s.n_query, device=device, seed=0,  # noqa: E731
                                  glyphs=glyphs)
    net = arml_images.build(s, seed=0).to(device)
    arml_history = arml.train_arml(net, train(), s, progress=False, max_seconds=budget * ARML_SHARE)
    base = arml_images.maml_baseline(s, seed=0).to(device)
    maml_history = meta_train(base, train(), replace(s, steps=arml_history.steps_done), progress=False,
                              max_seconds=MAML_CAP * budget)
    test = arml_images.fixed_episodes(ImageFamilies("evaluation", s.n_way, s.k_shot, 5, device=device, seed=100,
                                                    glyphs=glyphs), episodes)
    a, family = arml_images.accuracies(net, test, s.test_inner_steps)
    b, _ = arml_images.accuracies(base, test, s.test_inner_steps)
    half = arml_images.maml_baseline(s, seed=0, scale=0.5).to(device)  # the control: MAML from theta_0 / 2
    half_history = meta_train(half, train(), replace(s, steps=arml_history.steps_done), progress=False,
                              max_seconds=MAML_CAP * budget)
    c, _ = arml_images.accuracies(half, test, s.test_inner_steps)
    xs = torch.cat([e.x_support for e in test])
    ys = torch.cat([e.y_support for e in test])
    return {"arml_training": pace(arml_history, s.steps), "maml_training": pace(maml_history, s.steps),
            "control_training": pace(half_history, s.steps),
            "accuracy_5way_1shot": {"ARML": score(a, "%"), "MAML": score(b, "%"), "ARML - MAML": score(a - b, "%"),
                                    "MAML from theta_0 / 2": score(c, "%"),
                                    "ARML - MAML from theta_0 / 2": score(a - c, "%")},
            "accuracy_by_family": {n: {"ARML": score(a[family == f], "%"), "MAML": score(b[family == f], "%")}
                                   for f, n in enumerate(IMAGE_FAMILIES)},
            "vertices": usage_record(net, xs, ys, family, IMAGE_FAMILIES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=300.0, help="training budget of all parts together")
    parser.add_argument("--parts", default="regression,images,gnn", help="comma-separated, run in this order: regression, images, gnn")
    parser.add_argument("--episodes", type=int, default=500, help="test episodes (GNN, images) or tasks (regression)")
    parser.add_argument("--out", default="results", help="folder for relational_full_mode.json")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in SHARES]
    if unknown or not parts:
        parser.error(f"--parts must name some of {', '.join(SHARES)}; got {args.parts!r}")
    if not args.seconds > 0 or args.episodes < 2:
        parser.error("--seconds must be positive and --episodes at least 2")
    device = get_device(args.device)
    _ = seed_everything(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    record = {"device": name, "torch": torch.__version__, "seconds_budget": args.seconds, "parts": {}}
    share = sum(SHARES[p] for p in parts)
    runners = {"gnn": run_gnn, "regression": run_regression, "images": run_images}
    for part in parts:
        start = time.perf_counter()
        record["parts"][part] = runners[part](args.seconds * SHARES[part] / share, device, args.episodes)
        record["parts"][part]["wall_seconds"] = round(time.perf_counter() - start, 1)
        say(part, record["parts"][part])
        (out / "relational_full_mode.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"written {out / 'relational_full_mode.json'}")


if __name__ == "__main__":
    main()
