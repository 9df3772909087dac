"""Choose MB + dynamic evaluation's quick-mode step size (lecture 10) on validation tasks.

Trains the quick-mode MB model as lecture 10 does, runs
``grbal_experiment.tune_dynamic_evaluation`` over a grid on validation tasks (drawn from rho(E)
with seeds apart from the test episodes'), prints every cell and the choice. The stored value,
``metaedu.rl.grbal.QUICK_DE_LR`` (what ``GrBALSettings.quick()`` reads), should equal what this
prints. About 10 s of CPU::

    METAEDU_THREADS=1 python scripts/choose_quick_de_lr.py
"""

from __future__ import annotations

from metaedu.rl import grbal, grbal_experiment
from metaedu.runtime import preset, set_threads

GRID = (1e-5, 1e-4, 1e-3, 1e-2, 3e-2)


def choose(seed: int = 0) -> tuple[float, dict[float, float]]:
    settings = preset(grbal.GrBALSettings, "quick")
    model, _ = grbal_experiment.train_model("mb", settings, seed=seed, progress=False)
    scores = grbal_experiment.tune_dynamic_evaluation(model, settings, GRID, seed=seed)
    return max(scores, key=scores.get), scores


def main() -> None:
    set_threads()
    best, scores = choose()
    print("validation return per step size: " + ", ".join(f"{lr:g}: {r:.1f}" for lr, r in scores.items()))
    print(f"QUICK_DE_LR = {best:g}")
    stored = grbal.QUICK_DE_LR
    print("the stored choice agrees" if best == stored else f"the stored choice {stored:g} differs: update it")


if __name__ == "__main__":
    main()
