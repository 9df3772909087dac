"""Choose lecture 02's quick-mode fine-tune step size and step count on meta-validation episodes.

Pre-trains the quick-mode learner as lecture 02 does (the background alphabets less the
held-out validation ones), runs ``baselines.tune_finetune`` for 1 and 5 shots, prints every
cell of the grid, and the choice as ``QUICK_FINETUNE`` rows. The stored choice,
``metaedu.algorithms.baselines.QUICK_FINETUNE`` (what ``BaselineSettings.quick()`` reads), must
equal what this prints; ``tests/test_meta_lstm.py`` (marker slow) runs :func:`choose` and
fails when it does not. About 30 s of CPU::

    METAEDU_THREADS=1 python scripts/choose_quick_finetune.py
"""

from __future__ import annotations

from metaedu.algorithms import baselines, meta_lstm
from metaedu.data.glyphs import load_glyphs
from metaedu.nn.conv_learner import ConvLearner
from metaedu.runtime import preset, set_threads


def choose(seed: int = 0, shots: tuple[int, ...] = (1, 5)) -> dict[int, baselines.Tuning]:
    """The grid's result for each number of shots, on the quick-mode network and data."""
    lstm = preset(meta_lstm.MetaLSTMSettings, "quick")
    base = preset(baselines.BaselineSettings, "quick")
    background = load_glyphs().split("background")
    train_set, validation = baselines.validation_split(background, base.val_fraction, seed=seed)
    learner = ConvLearner(lstm.n_way, lstm.filters, lstm.blocks)
    theta_pre, _ = baselines.pretrain(learner, train_set, base, seed=seed, progress=False)
    return {k: baselines.tune_finetune(learner, theta_pre, validation, base, k, seed=seed) for k in shots}


def as_rows(tunings: dict[int, baselines.Tuning]) -> tuple[tuple[int, float, int], ...]:
    """The choice in the form of ``QUICK_FINETUNE``."""
    return tuple((k, t.lr, t.steps) for k, t in sorted(tunings.items()))


def main() -> None:
    set_threads()
    tunings = choose()
    for k_shot, tuning in tunings.items():
        cells = ", ".join(f"{lr:g}/{n}: {acc:.1f}" for (lr, n), acc in tuning.accuracy.items())
        print(f"{k_shot}-shot (lr/steps: validation accuracy %) {cells}")
    rows = as_rows(tunings)
    print(f"QUICK_FINETUNE = {rows}")
    stored = baselines.QUICK_FINETUNE
    print("the stored choice agrees" if rows == stored else f"the stored choice {stored} differs: update it")


if __name__ == "__main__":
    main()
