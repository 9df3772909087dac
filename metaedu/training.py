"""The one meta-training loop: progress bar, history, NaN guard, checkpoint and resume.

Every algorithm supplies a ``step(i)`` function that samples a meta-batch,
computes the loss, updates the parameters and returns its metrics; this loop
does the rest, the same way for every lecture::

    history = train(step, n_steps=settings.steps, state={"model": model, "opt": opt, "sampler": sampler.generator},
                    checkpoint=resolve(checkpoint, "protonet", settings, data, seed))

An interrupted full-mode run called again with the same ``checkpoint`` resumes
from the last saved step (models, optimisers, tensors, generators and history
restored); :mod:`metaedu.checkpoints` names the file.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from metaedu import distributed
from metaedu.runtime import progress_bars


@dataclass
class History:
    """Metrics recorded during training: ``history.metrics["loss"][j]`` was logged at ``history.steps[j]``."""

    steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def log(self, step: int, values: dict[str, float]) -> None:
        self.steps.append(step)
        for key, value in values.items():
            self.metrics.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> list[float]:
        return self.metrics[key]

    @property
    def steps_done(self) -> int:
        """Steps run so far (the last step is always logged)."""
        return self.steps[-1] + 1 if self.steps else 0

    def smoothed(self, key: str, window: int = 20) -> list[float]:
        """Running mean over the last ``window`` logged values (for learning-curve plots)."""
        values = self.metrics[key]
        out, total = [], 0.0
        for i, v in enumerate(values):
            total += v
            if i >= window:
                total -= values[i - window]
            out.append(total / min(i + 1, window))
        return out

    def state_dict(self) -> dict:
        return {"steps": self.steps, "metrics": self.metrics, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.metrics, self.seconds = list(state["steps"]), dict(state["metrics"]), float(state["seconds"])


def _to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().cpu())
    return float(value)


#: The clock of time budgets and of ``History.seconds`` (a test replaces it with a fake one).
_now = time.perf_counter


def _state_of(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, torch.Tensor):  # a parameter kept as a plain tensor (e.g. a flat theta)
        return obj.detach().clone()
    if not hasattr(obj, "state_dict"):
        raise TypeError(f"cannot checkpoint a {type(obj).__name__}: state holds modules, optimisers, schedulers, "
                        "tensors, torch.Generators or objects with state_dict()/load_state_dict()")
    return obj.state_dict()


def _restore(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif isinstance(obj, torch.Tensor):
        with torch.no_grad():
            obj.copy_(state)
    else:
        obj.load_state_dict(state)


def save_checkpoint(path: Path, step: int, state: dict[str, Any], history: History) -> None:
    """Write atomically, so an interruption never leaves a half-written checkpoint.

    Under ``torchrun`` (:mod:`metaedu.distributed`) every rank calls this at the same step: the
    generators' states of all ranks are gathered (each rank draws its own tasks), rank 0 writes
    the file, and the ranks wait for it before going on.
    """
    path = Path(path)
    payload = {"step": step, "state": {}, "history": history.state_dict()}
    for key, obj in state.items():
        value = _state_of(obj)
        payload["state"][key] = {"per_rank": distributed.gather(value)} if isinstance(obj, torch.Generator) else value
    if distributed.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
    distributed.barrier()


def load_checkpoint(path: Path, state: dict[str, Any], history: History) -> int:
    """Restore ``state`` and ``history`` in place; return the number of steps already done."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    missing = set(state) - set(payload["state"])
    if missing:
        raise ValueError(f"checkpoint {path} lacks {sorted(missing)}; it was written by a different training setup")
    rank, size = distributed.world().rank, distributed.world().size
    for key, obj in state.items():
        saved = payload["state"][key]
        if isinstance(obj, torch.Generator):
            per_rank = saved["per_rank"] if isinstance(saved, dict) and "per_rank" in saved else [saved]
            if len(per_rank) != size:
                raise ValueError(f"checkpoint {path} was written by {len(per_rank)} process(es), this run has {size}; "
                                 "resume it with the same number of processes (torchrun --nproc-per-node)")
            saved = per_rank[rank]
        _restore(obj, saved)
    history.load_state_dict(payload["history"])
    return int(payload["step"])


def train(
    step: Callable[[int], dict[str, Any]],
    n_steps: int,
    state: dict[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    log_every: int = 1,
    progress: bool = True,
    desc: str = "meta-training",
    max_seconds: float | None = None,
) -> History:
    """Run ``step(i)`` for ``i`` in ``0 .. n_steps - 1`` and return the :class:`History`.

    Args:
        step: does one meta-update and returns metrics (tensors or numbers); ``"loss"`` is shown
            on the progress bar.
        n_steps: total number of steps (including those already done when resuming).
        state: objects to checkpoint: modules, optimisers, schedulers, tensors, ``torch.Generator``s
            (every generator a step draws from: that is the random state a resumed run needs).
        checkpoint: file to save to every ``checkpoint_every`` steps and at the end; if it
            exists, training resumes from it (:func:`metaedu.checkpoints.resolve` names it).
        log_every: record metrics every this many steps.
        max_seconds: stop after the step that uses up this much wall time (a time budget, e.g.
            for a benchmark); ``history.steps_done`` says how far training got.
    Raises:
        FloatingPointError: a metric became NaN or infinite (naming the step and the metric);
            the last checkpoint is left untouched.
    """
    from tqdm.auto import tqdm

    if int(n_steps) != n_steps or n_steps < 0:
        raise ValueError(f"n_steps must be a whole number >= 0, got {n_steps!r}")
    if checkpoint_every < 1 or log_every < 1:
        raise ValueError(f"checkpoint_every and log_every must be >= 1, got {checkpoint_every} and {log_every}")
    state = state or {}
    history = History()
    start_step = 0
    if checkpoint is not None and Path(checkpoint).exists():
        start_step = load_checkpoint(Path(checkpoint), state, history)
    began = _now() - history.seconds
    bar = tqdm(range(start_step, n_steps), desc=desc, disable=not (progress and progress_bars() and distributed.is_main()), leave=False,
               initial=start_step, total=n_steps)
    for i in bar:
        metrics = step(i)
        values = {k: _to_float(v) for k, v in metrics.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"{desc}: {', '.join(bad)} became {values[bad[0]]} at step {i}; "
                "lower the learning rate or check the inputs (the last checkpoint was kept)"
            )
        out_of_time = max_seconds is not None and _now() - began >= max_seconds
        last = i == n_steps - 1 or out_of_time
        if i % log_every == 0 or last:
            history.log(i, values)
        if "loss" in values and i % 10 == 0:
            bar.set_postfix(loss=f"{values['loss']:.3f}")
        if checkpoint is not None and ((i + 1) % checkpoint_every == 0 or last):
            history.seconds = _now() - began
            save_checkpoint(Path(checkpoint), i + 1, state, history)
        if out_of_time:
            break
    history.seconds = _now() - began
    return history


class ValidationKeeper:
    """Model selection on validation data (held-out training classes, never the evaluation split).

    Called after every training step with the number of steps done: every ``every`` steps (and
    after the last) it scores ``model`` with ``score()`` (higher is better, computed without
    gradients) and keeps a copy of the best weights so far; :meth:`restore` puts them back.
    Put it in ``train``'s ``state``: its scores and best weights are checkpointed with the rest.
    """

    def __init__(self, model: torch.nn.Module, score: Callable[[], float], every: int) -> None:
        if every < 1:
            raise ValueError(f"the validation interval must be >= 1 steps, got {every}")
        self.model, self.score, self.every = model, score, every
        self.steps: list[int] = []  # steps done at each score
        self.accs: list[float] = []  # the scores
        self.best_state: dict | None = None

    @torch.no_grad()
    def __call__(self, done: int, last: bool) -> None:
        if done % self.every and not last:
            return
        value = float(self.score())
        if not self.accs or value > max(self.accs):
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.steps.append(done)
        self.accs.append(value)

    @property
    def best(self) -> tuple[int, float]:
        """(steps done, score) of the kept weights (the earliest of equal scores)."""
        j = max(range(len(self.accs)), key=lambda k: (self.accs[k], -k))
        return self.steps[j], self.accs[j]

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "accs": self.accs, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.accs, self.best_state = list(state["steps"]), list(state["accs"]), state["best_state"]

