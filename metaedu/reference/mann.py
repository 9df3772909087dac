"""The reference of lecture 04: Santoro et al.'s MANN and its LSTM baseline, trained on the paper's task.

One checkpoint holds both networks (an ``nn.ModuleDict``: ``"mann"`` and ``"lstm"``), trained with
:func:`metaedu.algorithms.mann.train_model` at :meth:`MANNSettings.reference` (the paper's task and
network; pixels, no encoder, as in ``full()``). MANN gets most of the time budget; the LSTM then gets
as many updates as MANN made (the record's ``steps`` and ``baseline_steps``). The score is MANN's
accuracy at the 2nd instance of a class, one value per fixed test episode (5 classes x 10 images from
the evaluation alphabets, sampler seed :data:`EVAL_SEED`). The extras hold the instance-accuracy
curves of MANN, the LSTM and the nearest neighbour on the same inputs (the same 20 x 20 pixels), all
scored on those same episodes, with each episode's value for paired comparisons.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from metaedu.evaluation import Score
from metaedu.reference.spec import EVAL_SEED, Spec, glyphs

NAME = "mann"
MANN_SHARE = 0.8  # of a time budget, for MANN; the LSTM (one cuDNN call per batch of episodes) needs far less
TEST_BATCH = 50  # test episodes per forward pass (the batches are part of the fixed episodes' definition)


def _settings():
    from metaedu.algorithms.mann import MANNSettings

    return MANNSettings.reference()


def _check(settings) -> None:
    if settings.encoder != "pixels":
        raise ValueError(f"the MANN reference reads pixels (its checkpoint holds no encoder), got encoder={settings.encoder!r}")
    if settings.per_class < 10:
        raise ValueError(f"the MANN reference is scored up to the 10th instance; per_class must be >= 10, got {settings.per_class}")


def _sampler(settings, split: str, device, seed: int, training: bool = False):
    from metaedu.algorithms import mann

    return mann.make_sampler(settings, glyphs().split(split), device=device, seed=seed, training=training)


def _build(settings, device) -> nn.ModuleDict:
    from metaedu.algorithms import mann

    _check(settings)
    shape = _sampler(settings, "evaluation", "cpu", EVAL_SEED)  # only its input and label sizes are used
    return nn.ModuleDict({kind: mann.build_model(kind, settings, shape, device) for kind in ("mann", "lstm")})


def _train(model: nn.ModuleDict, settings, device, seed: int, max_seconds: float | None = None) -> int:
    """MANN for ``settings.steps`` updates (or ``MANN_SHARE`` of the budget), then the LSTM for as many
    (``settings.baseline_steps`` is not used: the paper trains both equally); returns MANN's updates, which
    the record keeps as both ``steps`` and ``baseline_steps`` (the spec's two step fields)."""
    from metaedu.algorithms import mann

    _check(settings)
    quiet = dataclasses.replace(settings, checkpoint=False)
    share = None if max_seconds is None else MANN_SHARE * max_seconds
    sampler = _sampler(quiet, "background", device, seed, training=True)
    done = mann.train_model(model["mann"], sampler, quiet, quiet.steps, checkpoint=False, desc="MANN",
                            max_seconds=share).steps_done
    sampler = _sampler(quiet, "background", device, seed, training=True)  # the same episodes for the LSTM
    lstm = mann.train_model(model["lstm"], sampler, quiet, done, checkpoint=False, desc="LSTM")
    if lstm.steps_done != done:
        raise RuntimeError(f"the LSTM stopped after {lstm.steps_done} of {done} updates")
    return done


def _accuracies(model: nn.ModuleDict, settings, device, episodes: int) -> dict[str, dict[int, torch.Tensor]]:
    """Per test episode accuracy (%) at each instance, ``{method: {k: [episodes]}}``, on the same episodes."""
    from metaedu.algorithms import mann

    _check(settings)
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    batches = _test_batches(settings, device, episodes)
    guess = torch.Generator().manual_seed(EVAL_SEED)  # the nearest neighbour's guess at step 1
    return {
        "MANN": mann.instance_accuracies(mann.predictor(model["mann"]), batches),
        "LSTM": mann.instance_accuracies(mann.predictor(model["lstm"]), batches),
        "nearest neighbour (same pixels)": mann.instance_accuracies(
            lambda seq: mann.nearest_neighbour_predict(seq, guess), batches),
    }


def _test_batches(settings, device, episodes: int) -> list:
    sampler = _sampler(settings, "evaluation", device, EVAL_SEED)
    sizes = [min(TEST_BATCH, episodes - start) for start in range(0, episodes, TEST_BATCH)]
    return [sampler.sample(n) for n in sizes]


def _per_episode(model: nn.ModuleDict, settings, device, episodes: int) -> torch.Tensor:
    from metaedu.algorithms import mann

    _check(settings)
    batches = _test_batches(settings, device, episodes)
    return mann.instance_accuracies(mann.predictor(model["mann"]), batches, instances=(2,))[2]


def _extras(model: nn.ModuleDict, settings, device) -> dict:
    """Accuracy with its interval at each instance for MANN, the LSTM and the nearest neighbour."""
    from metaedu.algorithms import mann
    from metaedu.evaluation import mean_ci

    per_episode = _accuracies(model, settings, device, SPEC.episodes)
    curves = {name: {str(k): mean_ci(v).as_dict() for k, v in acc.items()} for name, acc in per_episode.items()}
    values = {name: {str(k): [round(float(x), 4) for x in v] for k, v in acc.items()} for name, acc in per_episode.items()}
    return {"instances": list(mann.INSTANCES), "episodes": SPEC.episodes, "accuracy": curves,
            "per_episode": values}  # each test episode's accuracy: paired comparisons without re-scoring


def recorded_curves(record: dict) -> tuple[dict[str, dict[int, Score]], dict[str, dict[int, torch.Tensor]]]:
    """From a record (``reference.read_record("mann")``): each method's accuracy with its interval at each
    instance, ``{method: {k: Score}}``, and each test episode's accuracy, ``{method: {k: [episodes]}}``."""
    if record.get("name") != NAME:
        raise ValueError(f"expected the record of the {NAME!r} reference, got {record.get('name')!r}")
    extras = record["extras"]
    scores = {name: {int(k): Score(**s) for k, s in acc.items()} for name, acc in extras["accuracy"].items()}
    values = {name: {int(k): torch.tensor(v, dtype=torch.float64) for k, v in acc.items()}
              for name, acc in extras["per_episode"].items()}
    return scores, values


def curves(folder=None) -> tuple[dict, dict[str, dict[int, Score]], dict[str, dict[int, torch.Tensor]]]:
    """The shipped reference's record and its curves (as :func:`recorded_curves`).

    A record written before the extras kept each episode's values is re-scored from its weights on the
    CPU (the same fixed episodes; seconds). A missing or stale file raises, naming ``metaedu pretrain mann``.
    """
    from metaedu import reference
    from metaedu.evaluation import mean_ci

    record = reference.read_record(NAME, folder)
    if "per_episode" in record["extras"]:
        return (record, *recorded_curves(record))
    model, settings, record = reference.load(NAME, "cpu", folder)
    values = _accuracies(model, settings, torch.device("cpu"), record["extras"]["episodes"])
    scores = {name: {k: mean_ci(v) for k, v in acc.items()} for name, acc in values.items()}
    return record, scores, {name: {k: v.double() for k, v in acc.items()} for name, acc in values.items()}


SPEC = Spec(
    NAME, "04", "MANN and its LSTM baseline, Santoro et al.'s Omniglot task (5 classes x 10 instances, one-hot "
    "labels, 20 x 20 pixels, 128 x 40 memory, 4 heads), trained for a time budget",
    _settings, _build, _train, _per_episode, n_way=5, k_shot=0, n_query=0, episodes=500, check_episodes=50,
    test="MANN's accuracy at the 2nd instance of a class (5 classes x 10 images per episode, evaluation alphabets)",
    extras=_extras, steps_field=("steps", "baseline_steps"),
)
SPECS = (SPEC,)
