"""Lecture 05's full-mode settings within a time budget: the GNN end to end and ARML vs MAML.

Trains the few-shot GNN with Garcia & Bruna's 5-way 1-shot preset (a Conv4 trained end to end, 300
episodes a meta-batch) on the glyph background alphabets, and ARML and its MAML baseline with Yao et
al.'s 2-D regression preset (25 tasks, 5 inner steps), each for at most ``--minutes``. Prints the
steps reached, the seconds per step, the hours a whole full run would take at that pace, and the
scores (GNN accuracy on the evaluation alphabets; ARML and MAML query MSE on the same test tasks,
with the paired difference). Runs on a CPU too (slowly; use a small ``--minutes``).

    python benchmarks/relational_full_mode.py --device cuda --minutes 2
"""

from __future__ import annotations

import argparse

import torch

from metaedu.algorithms import arml, gnn
from metaedu.algorithms.maml import meta_train
from metaedu.data.glyphs import load_glyphs
from metaedu.evaluation import mean_ci
from metaedu.paper_results import paper
from metaedu.runtime import get_device, preset, seed_everything
from metaedu.tasks.regression2d import FamilyTasks


def pace(name: str, history, total: int) -> None:
    done = max(history.steps_done, 1)
    per_step = history.seconds / done
    print(f"{name}: {history.steps_done} of {total} full-preset steps in {history.seconds:.0f} s "
          f"({per_step:.3f} s a step; a whole run: {per_step * total / 3600:.1f} h)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget per method")
    parser.add_argument("--episodes", type=int, default=500, help="test episodes (GNN) or tasks (ARML) per score")
    args = parser.parse_args()
    device = get_device(args.device)
    _ = seed_everything(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"device: {name}; budget {args.minutes} min per method", flush=True)
    budget = 60 * args.minutes

    glyphs = load_glyphs()
    background, evaluation = glyphs.split("background"), glyphs.split("evaluation")
    gs = preset(gnn.GNNSettings, "full", checkpoint=False)
    model, history = gnn.train_gnn(gs, background, device, seed=0, progress=False, max_seconds=budget)
    pace("GNN 5-way 1-shot", history, gs.steps)
    acc = gnn.episode_accuracies(model, evaluation, n_query=5, n_episodes=args.episodes, device=device, seed=2)
    print(f"GNN 5-way 1-shot accuracy: {mean_ci(acc)} % (paper, Omniglot: {paper('GNN', 'Omniglot', '5-way 1-shot')})")

    s = preset(arml.ARMLSettings, "full", checkpoint=False)
    net = arml.build(s, seed=0).to(device)
    history = arml.train_arml(net, FamilyTasks(s.k_shot, s.n_query, device=device, seed=0), s, progress=False,
                              max_seconds=budget)
    pace("ARML", history, s.steps)
    base = arml.maml_baseline(s, seed=0).to(device)
    history = meta_train(base, FamilyTasks(s.k_shot, s.n_query, device=device, seed=0), s, progress=False,
                         max_seconds=budget)
    pace("MAML (ARML's base learner)", history, s.steps)
    test = FamilyTasks(s.k_shot, s.n_query, device=device, seed=100).sample(args.episodes)
    a, b = arml.query_mse(net, test, s.test_inner_steps), arml.query_mse(base, test, s.test_inner_steps)
    print(f"10-shot MSE: ARML {mean_ci(a, '')} (paper {paper('ARML', '2-D regression', '10-shot MSE')}), "
          f"MAML {mean_ci(b, '')} (paper {paper('MAML', '2-D regression', '10-shot MSE')}); "
          f"ARML - MAML {mean_ci(a - b, '')}")


if __name__ == "__main__":
    main()
