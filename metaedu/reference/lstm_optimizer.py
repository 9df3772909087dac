"""The references of lecture 01: Andrychowicz et al.'s LSTM optimizer at the paper's scale.

Two references, each one :class:`~metaedu.algorithms.learned_optimizer.CoordinatewiseLSTM` meta-trained
with the lecture's own :func:`~metaedu.algorithms.learned_optimizer.meta_train` and
``LearnedOptimizerSettings.full()`` (2,000 runs; a time budget shortens it, see :func:`_train`):

* ``lstm-opt-quadratics``: on the paper's random 10-d quadratics;
* ``lstm-opt-mlp``: on the digits MLP (one hidden layer of 20 sigmoid units, mini-batches of 128).

The score, per held-out test function (a quadratic, or a run of a new MLP on the held-out digits):
the LSTM's log10 loss at step 100 minus tuned Adam's on the same function from the same start
(lower is better). Adam's learning rate is tuned as the lecture tunes it: the grid ``lr_grid`` on
training draws (quadratics of seed :data:`TUNE_SEED`; training-digit MLP runs of seed 0), keeping the
rate with the lowest median loss at step 100. A digits run's loss "at step t" is its mini-batch loss
averaged over steps t-9..t, as in the lecture. The extras keep what the lecture draws: every tuned
rule's mean loss curve, the paired differences against each rule, and (MLP) step 200 and the ReLU
network, where the paper's optimizer fails.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from metaedu.evaluation import mean_ci
from metaedu.reference.spec import Spec

TUNE_SEED = 1  # training draws that tune the hand-designed rules' rates (quadratics; the lecture's SEED + 1)
TEST_SEED = 1000  # held-out test functions (the lecture's SEED + 1000)
MLP_TUNE_SEED = 0  # training-digit MLP runs that tune the rules (the lecture's SEED)
PROBE_UPDATES = 10  # meta-updates timed on a copy of the model to fit the run count to a time budget


def log10_loss(values: torch.Tensor) -> torch.Tensor:
    """log10 of per-run losses (float64); a diverged run (inf or nan) counts as 1e30, a certain loss."""
    return torch.log10(torch.nan_to_num(values.double(), nan=1e30, posinf=1e30).clamp_min(1e-30))


def _settings():
    from metaedu.algorithms.learned_optimizer import LearnedOptimizerSettings
    from metaedu.runtime import preset

    return preset(LearnedOptimizerSettings, "full", checkpoint=False)


def _build(settings, device):
    from metaedu.algorithms.learned_optimizer import CoordinatewiseLSTM
    from metaedu.runtime import seeded

    with seeded(0):
        return CoordinatewiseLSTM.from_settings(settings).to(device)


# ----------------------------------------------------------------------------- the optimizees


def _quadratics(settings, device, seed):
    from metaedu.algorithms.learned_optimizer import QuadraticProblem

    return QuadraticProblem.from_settings(settings, device=device, seed=seed)


def digits_problem(settings, part: str, seed: int, device, hidden=None, activation=None):
    """The lecture's digits MLP runs: ``part`` "train" (the first ``mlp_train_examples`` digits) or "test" (the rest)."""
    from metaedu.algorithms.learned_optimizer import MLPProblem
    from metaedu.data.digits import digits_arrays

    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    x, y = digits_arrays()
    rows = slice(0, settings.mlp_train_examples) if part == "train" else slice(settings.mlp_train_examples, None)
    return MLPProblem(x[rows], y[rows], hidden or settings.mlp_hidden, activation or settings.mlp_activation,
                      settings.mlp_batch, device=device, seed=seed)


def at_step(curves: torch.Tensor, step: int, window: int = 1) -> torch.Tensor:
    """Per run: the loss at ``step`` averaged over the ``window`` steps up to it (curves ``[steps + 1, runs]``)."""
    if not window <= step + 1 <= curves.shape[0]:
        raise ValueError(f"step {step} with a window of {window} is outside curves of {curves.shape[0]} points")
    return curves[step - window + 1: step + 1].mean(0)


# ----------------------------------------------------------------------------- training


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(kind: str):
    def train(model, settings, device, seed, max_seconds=None) -> int:
        """Meta-train in place; return the runs done (``settings.quad_episodes`` / ``mlp_episodes`` or fewer).

        With a time budget, a few meta-updates of a copy of the model are timed first and the run count is
        cut to what fits (so the cosine decay of the meta learning rate completes); the budget still stops
        training if the estimate was optimistic, and then the runs completed are returned.
        """
        from metaedu.algorithms import learned_optimizer as lo

        field, batch = ("quad_episodes", settings.quad_meta_batch) if kind == "quad" else \
            ("mlp_episodes", settings.mlp_meta_batch)

        def problem(s):
            return _quadratics(settings, device, s) if kind == "quad" else digits_problem(settings, "train", s, device)

        segments = settings.horizon // settings.unroll
        runs = getattr(settings, field)
        began = time.perf_counter()
        if max_seconds is not None:
            if max_seconds <= 0:
                raise ValueError(f"max_seconds must be positive, got {max_seconds}")
            copy = _build(settings, device)
            copy.load_state_dict(model.state_dict())
            timed = -(-PROBE_UPDATES // segments)  # whole runs
            lo.meta_train(copy, problem(seed + 99_991), dataclasses.replace(settings, **{field: 1}), 1, batch,
                          progress=False)  # warm-up (first calls on a device are slow)
            _sync(device)
            start = time.perf_counter()
            history = lo.meta_train(copy, problem(seed + 99_992), dataclasses.replace(settings, **{field: timed}),
                                    timed, batch, progress=False)
            _sync(device)
            per_update = (time.perf_counter() - start) / history.steps_done
            left = max_seconds - (time.perf_counter() - began)
            runs = max(1, min(runs, int(0.95 * left / (per_update * segments))))
            max_seconds = left if runs > 1 else None  # one whole run is the least a record can say
        history = lo.meta_train(model, problem(seed), settings, runs, batch, progress=True, checkpoint=False,
                                desc=f"reference {kind}", max_seconds=max_seconds)
        done = history.steps_done // segments if history.steps_done < runs * segments else runs
        return max(1, done)  # cut inside the first run only if the timing was off by the planned run count

    return train


# ----------------------------------------------------------------------------- scoring


def _tuned(settings, run, names, around=None) -> dict[str, float]:
    """Each rule's rate on the training ``run``: the whole grid, or (``around``) that rate and its grid neighbours."""
    from metaedu.algorithms import learned_optimizer as lo

    grid = list(settings.lr_grid)
    if around is None:
        return lo.tune_baselines(run, settings.horizon, grid, names=names)
    near = lambda lr: grid[max(0, grid.index(lr) - 1): grid.index(lr) + 2]  # noqa: E731
    return {k: lo.tune_baselines(run, settings.horizon, near(around[k]), names=(k,))[k] for k in names}


def _quad_comparison(model, settings, device, episodes: int, names=("Adam",)):
    from metaedu.algorithms import learned_optimizer as lo

    lrs = _tuned(settings, _quadratics(settings, device, TUNE_SEED).sample(settings.tune_functions), names)
    test = _quadratics(settings, device, TEST_SEED).sample(episodes)
    return lo.compare(model, test, settings.horizon, lrs)


def _mlp_comparison(model, settings, device, episodes: int, names=("Adam",), steps=None, around=None, **change):
    from metaedu.algorithms import learned_optimizer as lo

    tune = digits_problem(settings, "train", MLP_TUNE_SEED, device, **change).sample(settings.mlp_tune, settings.horizon)
    lrs = _tuned(settings, tune, names, around)
    # test runs are always drawn for 2 * horizon steps (the draw depends on the length), so every comparison is on the same runs
    test = digits_problem(settings, "test", TEST_SEED, device, **change).sample(episodes, 2 * settings.horizon)
    return lo.compare(model, test, steps or settings.horizon, lrs)


def _difference(comparison, step: int, window: int, rule: str = "Adam") -> torch.Tensor:
    """Per test function: log10 loss of the LSTM minus the rule's, at ``step``."""
    curves = comparison.curves
    return log10_loss(at_step(curves["LSTM"], step, window)) - log10_loss(at_step(curves[rule], step, window))


def _quad_per_episode(model, settings, device, episodes) -> torch.Tensor:
    return _difference(_quad_comparison(model, settings, device, episodes), settings.horizon, 1)


def _mlp_per_episode(model, settings, device, episodes) -> torch.Tensor:
    return _difference(_mlp_comparison(model, settings, device, episodes), settings.horizon, 10)


def _summary(comparison, steps, window: int) -> dict:
    """What the lecture draws from one comparison: rates, mean curves, and per step the paired differences."""
    from metaedu.algorithms.learned_optimizer import BASELINES

    curves = comparison.curves
    out = {"lrs": comparison.lrs,
           "mean_curve": {k: [float(x) for x in torch.nan_to_num(v.double(), nan=1e30, posinf=1e30).mean(1)]
                          for k, v in curves.items()},
           "mean_log10_curve": {k: [round(float(x), 4) for x in log10_loss(v).mean(1)] for k, v in curves.items()}}
    for step in steps:
        out[f"step_{step}"] = {
            "log10": {k: mean_ci(log10_loss(at_step(v, step, window)), unit="log10").as_dict() for k, v in curves.items()},
            "lstm_minus": {k: mean_ci(_difference(comparison, step, window, k), unit="log10").as_dict()
                           for k in BASELINES},
            "lstm_lower_share": {k: float((at_step(curves["LSTM"], step, window) < at_step(curves[k], step, window))
                                          .double().mean()) for k in BASELINES},
        }
    return out


def _quad_extras(model, settings, device) -> dict:
    from metaedu.algorithms.learned_optimizer import BASELINES

    comparison = _quad_comparison(model, settings, device, BY_NAME["lstm-opt-quadratics"].episodes, BASELINES)
    return {"quadratics": _summary(comparison, (settings.horizon,), 1)}


def _mlp_extras(model, settings, device) -> dict:
    from metaedu.algorithms.learned_optimizer import BASELINES

    episodes = BY_NAME["lstm-opt-mlp"].episodes
    mlp = _mlp_comparison(model, settings, device, episodes, BASELINES, steps=2 * settings.horizon)
    relu = _mlp_comparison(model, settings, device, episodes, BASELINES, around=mlp.lrs, activation="relu")
    return {"mlp": _summary(mlp, (settings.horizon, 2 * settings.horizon), 10),
            "relu": _summary(relu, (settings.horizon,), 10)}


def _data() -> dict:
    return {"data": "quadratics and scikit-learn digits", "tune_seed": TUNE_SEED, "mlp_tune_seed": MLP_TUNE_SEED,
            "test_seed": TEST_SEED}


_TEST = "log10 loss at step 100, LSTM minus tuned Adam, per held-out test function"
BY_NAME: dict[str, Spec] = {
    "lstm-opt-quadratics": Spec(
        "lstm-opt-quadratics", "01", "LSTM optimizer meta-trained on random 10-d quadratics (Andrychowicz et al., "
        "full preset: 2-layer LSTM of 20, unrolls of 20, horizon 100)",
        _settings, _build, _trainer("quad"), _quad_per_episode, episodes=1000, unit="log10", higher_is_better=False,
        test=_TEST + " (new quadratics)", data=_data, extras=_quad_extras, steps_field="quad_episodes"),
    "lstm-opt-mlp": Spec(
        "lstm-opt-mlp", "01", "LSTM optimizer meta-trained on a digits MLP (20 sigmoid units, mini-batches of 128; "
        "Andrychowicz et al.'s MNIST experiment, full preset)",
        _settings, _build, _trainer("mlp"), _mlp_per_episode, episodes=64, unit="log10", higher_is_better=False,
        test=_TEST + " (new MLP runs on held-out digits; loss averaged over steps 91-100)", data=_data,
        extras=_mlp_extras, steps_field="mlp_episodes"),
}
SPECS = tuple(BY_NAME.values())
