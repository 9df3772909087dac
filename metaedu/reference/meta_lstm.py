"""The references of lecture 02: Ravi & Larochelle's meta-learner LSTM, 5-way 1-shot and 5-shot glyph episodes.

The model is an ``nn.ModuleDict`` of three pieces, so that every comparison the lecture draws can be
recomputed from the shipped file alone (no pre-training at load time):

* ``"meta"``: the trained meta-learner (its gates, its LSTM and its learned start c_0);
* ``"start"``: the same meta-learner before meta-training: c_0 = the pre-trained network (the
  baselines' start), the gates = the tuned fine-tune rule (input gate at the step size that
  fine-tuning chose at T steps on meta-validation episodes, forget gate at sigmoid(8));
* ``"choice"``: the fine-tune baseline's tuned step size and step count, the start's step size,
  the pre-training steps done and the meta-update whose weights were kept (buffers).

Training (``max_seconds`` split): pre-training gets a fifth of the budget, the fine-tune grid runs on
meta-validation episodes (held-out background alphabets), and meta-training (``MetaLSTMSettings.reference``)
the rest; the weights that score best on meta-validation episodes are kept.

Score: accuracy per fixed test episode (evaluation alphabets). Extras, on the same episodes: fine-tune's and
the nearest neighbour's accuracy (paired; both on the pre-trained network), the two ablation hybrids (learned
rule + start c_0; start rule + learned c_0), the gates per update step and layer (trained and before training)
and the learner's test accuracy after each update.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

from metaedu.reference.spec import Spec, glyphs, test_sampler

PRETRAIN_SHARE = 0.2  # share of the time budget spent pre-training the baselines' network (c_0's start)
TRACE_EPISODES = 20  # fixed test episodes whose gates and per-update accuracies the record keeps
EVAL_BATCH = 25  # test episodes per sampler draw when scoring (the shipped files were scored so: the draws set the episodes)


class Choice(nn.Module):
    """What training chose, kept as buffers so the file carries it: fine-tune's (lr, steps), the start's lr, ..."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("finetune_lr", "start_lr"):
            self.register_buffer(name, torch.zeros((), dtype=torch.float64))
        for name in ("finetune_steps", "pretrain_steps", "kept_step"):
            self.register_buffer(name, torch.zeros((), dtype=torch.long))


def _settings(k_shot: int):
    def make():
        from metaedu.algorithms.meta_lstm import MetaLSTMSettings

        return MetaLSTMSettings.reference(k_shot)

    return make


def baseline_settings():
    """The baselines' settings for the reference (pre-training, the fine-tune grid)."""
    from metaedu.algorithms.baselines import BaselineSettings

    return BaselineSettings.reference()


def build(settings, device) -> nn.ModuleDict:
    from metaedu.algorithms import meta_lstm

    return nn.ModuleDict({"meta": meta_lstm.build(settings, device, seed=0),
                          "start": meta_lstm.build(settings, device, seed=0),
                          "choice": Choice().to(device)})


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def train(model: nn.ModuleDict, settings, device, seed: int, max_seconds: float | None = None) -> int:
    """Pre-train c_0's start, tune fine-tuning, start the meta-learner as that rule, meta-train; the meta-updates done."""
    from metaedu.algorithms import baselines, meta_lstm
    from metaedu.tasks.episodes import EpisodeSampler

    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"the time budget must be positive, got max_seconds={max_seconds}")
    began = time.perf_counter()
    base = baseline_settings()
    if settings.updates not in base.finetune_step_grid:
        raise ValueError(f"the fine-tune grid {base.finetune_step_grid} must hold the meta-learner's T = "
                         f"{settings.updates}, so that its start rule is fine-tuning at T steps")
    train_set, validation = baselines.validation_split(glyphs().split("background"), base.val_fraction, seed=0)
    meta, start, choice = model["meta"], model["start"], model["choice"]
    theta_pre, pre = baselines.pretrain(start.learner, train_set, base, device, seed=seed, checkpoint=False,
                                        max_seconds=None if max_seconds is None else PRETRAIN_SHARE * max_seconds)
    tuning = baselines.tune_finetune(start.learner, theta_pre, validation, base, settings.k_shot, device, seed)
    at_T = max((acc, -lr, lr) for (lr, n), acc in tuning.accuracy.items() if n == settings.updates)[2]
    with torch.no_grad():
        start.c0.copy_(theta_pre)
        start.b_I.fill_(_logit(at_T))  # the start rule: fine-tuning at T steps with its best step size
        meta.load_state_dict(start.state_dict())
        choice.finetune_lr.fill_(tuning.lr)
        choice.finetune_steps.fill_(tuning.steps)
        choice.start_lr.fill_(at_T)
        choice.pretrain_steps.fill_(pre.steps_done)
    sampler = EpisodeSampler(train_set, settings.n_way, settings.k_shot, settings.n_query, device=device, seed=seed)
    val = EpisodeSampler(validation, settings.n_way, settings.k_shot, settings.eval_query, device=device,
                         seed=seed + 1).sample(settings.val_episodes)
    left = None if max_seconds is None else max(max_seconds - (time.perf_counter() - began), 1e-3)
    history = meta_lstm.meta_train(meta, sampler, settings, checkpoint=False, validation=val, max_seconds=left)
    if history["val_acc"]:
        best = max(range(len(history["val_acc"])), key=lambda j: history["val_acc"][j])
        choice.kept_step.fill_(history["val_step"][best])
    else:  # the budget ran out before the first meta-validation: the last weights are kept
        choice.kept_step.fill_(history.steps_done)
    return history.steps_done


def _hybrid(rule, c0) -> nn.Module:
    """The meta-learner ``rule`` (gates, LSTM) started from another c_0."""
    import copy

    twin = copy.deepcopy(rule)
    with torch.no_grad():
        twin.c0.copy_(c0)
    return twin


def _accuracies(name: str, predict, device, episodes: int) -> torch.Tensor:
    from metaedu.evaluation import episode_accuracies

    return episode_accuracies(predict, test_sampler(BY_NAME[name], device), episodes, batch=EVAL_BATCH)


def first_episodes(name: str, n: int, device="cpu"):
    """The reference's first ``n`` fixed test episodes (``n`` <= EVAL_BATCH: the first n of the scorer's first draw),
    so a lecture can re-score a few of the record's episodes cheaply."""
    if not 1 <= n <= EVAL_BATCH:
        raise ValueError(f"the first draw holds {EVAL_BATCH} episodes; ask for 1 to {EVAL_BATCH}, got {n}")
    draw = test_sampler(BY_NAME[name], device).sample(EVAL_BATCH)
    return dataclasses.replace(draw, x_support=draw.x_support[:n], y_support=draw.y_support[:n],
                               x_query=draw.x_query[:n], y_query=draw.y_query[:n], classes=draw.classes[:n])


def _per_episode(name: str):
    def per_episode(model, settings, device, episodes) -> torch.Tensor:
        from metaedu.algorithms import meta_lstm

        with torch.no_grad():
            return _accuracies(name, meta_lstm.predictor(model["meta"], settings.updates), device, episodes)

    return per_episode


def _gate_summary(trace: dict) -> dict:
    """Per update step and layer: mean and 10/50/90th percentiles of each gate over episodes and coordinates."""
    out = {}
    for gate in ("input_gate", "forget_gate"):
        g = trace[gate].double()  # [T, tasks, P]
        layers = {}
        for layer, sl in trace["layers"].items():
            x = g[:, :, sl].flatten(1)  # [T, tasks * coordinates]
            q = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9], dtype=x.dtype), dim=1)  # [3, T]
            layers[layer] = {"mean": x.mean(1).tolist(), "p10": q[0].tolist(), "p50": q[1].tolist(), "p90": q[2].tolist()}
        out[gate] = {"all": g.flatten(1).mean(1).tolist(), "layers": layers}
    out["query_acc"] = trace["query_acc"].double().mean(1).tolist()  # [T + 1] learner's D_test accuracy after t updates
    return out


def _extras(name: str):
    def extras(model, settings, device) -> dict:
        from metaedu.algorithms import baselines, meta_lstm

        spec = BY_NAME[name]
        meta, start, choice = model["meta"], model["start"], model["choice"]
        lr, steps = float(choice.finetune_lr), int(choice.finetune_steps)
        n, T = spec.episodes, settings.updates
        with torch.no_grad():
            predictors = {
                "meta-learner": meta_lstm.predictor(meta, T),
                "fine-tune": baselines.finetune_predictor(start.learner, start.c0.detach(), lr, steps),
                "nearest neighbour": baselines.nearest_neighbour_predictor(start.learner, start.c0.detach()),
                "learned rule + start c0": meta_lstm.predictor(_hybrid(meta, start.c0), T),
                "start rule + learned c0": meta_lstm.predictor(_hybrid(start, meta.c0), T),
                "start (before meta-training)": meta_lstm.predictor(start, T),
            }
            per_episode = {k: [round(v, 4) for v in _accuracies(name, p, device, n).tolist()] for k, p in predictors.items()}
            traced = test_sampler(spec, device).sample(TRACE_EPISODES)
            gates = {"trained": _gate_summary(meta_lstm.trace_episode(meta, traced, T)),
                     "start": _gate_summary(meta_lstm.trace_episode(start, traced, T))}
        return {
            "per_episode": per_episode,
            "gates": {**gates, "episodes": TRACE_EPISODES, "layers": list(meta.learner.layers())},
            "finetune": {"lr": lr, "steps": steps, "chosen_on": "meta-validation episodes (held-out background alphabets)"},
            "start_input_gate": float(choice.start_lr),
            "pretrain_steps": int(choice.pretrain_steps),
            "kept_step": int(choice.kept_step),
            "baseline_settings": dataclasses.asdict(baseline_settings()),
        }

    return extras


def _spec(k_shot: int) -> Spec:
    name = f"meta-lstm-{k_shot}shot"
    return Spec(
        name, "02", f"Meta-learner LSTM, Ravi & Larochelle's 5-way {k_shot}-shot setting (Conv4-32 learner, T = 12, "
        "meta-batch 8), started from the pre-trained network and the tuned fine-tune rule, with its baselines",
        _settings(k_shot), build, train, _per_episode(name), 5, k_shot, n_query=15, episodes=200, check_episodes=25,
        extras=_extras(name), steps_field="meta_steps")


BY_NAME: dict[str, Spec] = {spec.name: spec for spec in (_spec(1), _spec(5))}
SPECS = tuple(BY_NAME.values())
