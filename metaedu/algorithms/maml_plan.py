"""How MAML's meta-gradient is run on this machine: chosen by measuring, remembered in the cache.

The arithmetic of a second-order meta-gradient is fixed; how it is laid out is not. The tasks of a
meta-batch can go through the network all at once, a few per pass (each pass's graph freed after its
backward pass), or one at a time in the usual per-task loop; Conv4's activations can be stored
contiguously or channels-last; its first layer (one input channel, far from the kernels' peak) can run
as a grouped convolution or as unfolded patches times weights; an MLP's inner-loop gradients of the MSE
can come from autograd or be written out as tensor expressions (``analytic``). Which is fastest depends on the CPU
(its vector width, caches, and the C allocator's treatment of large buffers) or GPU, the thread count
and the shapes: a choice tuned on one machine lost to the plain loop on another (issue 25). So
:func:`choose` times a few candidate :class:`Plan` s on the first meta-batch of a given shape, keeps
the fastest, and stores it as JSON under :func:`metaedu.runtime.cache_dir` keyed by
:func:`plan_key` (machine, torch version, threads, allocator setting, network, variant and shapes);
later calls, and later processes, read it back. The per-task loop is always a candidate, so the plan
is never slower than the loop by more than the timing noise. ``MAML(plan=...)`` (and the settings'
``plan`` field) names a plan instead, e.g. ``"loop"``, ``"all"``, ``"2/contiguous/unfold"``. The
environment variable ``METAEDU_MAML_PLAN`` replaces ``"auto"`` for a whole process: ``"fixed"`` (the
rule used before plans were measured: Conv4 on the CPU 4 tasks per pass channels-last, otherwise all
at once; the test suite sets it, so float32 results there do not depend on timings) or a plan's text.

On the CPU a plan of several passes (the loop included) runs inside :func:`metaedu.runtime.freed_memory_kept`
for the duration of the call, so that each pass reuses the buffers the previous one freed instead of faulting
fresh pages in (without it, 2-thread Conv4 ran at 0.86x the per-task loop on an AMD EPYC); candidates are timed
inside one such block, i.e. in that steady state.

Every plan computes the same meta-gradient (the tests check each against the per-task loop in float64).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from metaedu import runtime

LAYOUTS = ("contiguous", "channels_last")  # Conv4 activations' memory order
FIRST_LAYERS = ("grouped", "unfold")  # Conv4's first convolution: grouped convolution or patches x weights
INNER_GRADIENTS = ("autograd", "analytic")  # the inner loop's gradients: autograd, or written out (MLP + MSE)
CACHE_FILE = "maml_plans.json"
TUNE_SECONDS = 15.0  # stop trying further candidates once tuning has taken this long
REPEATS = 2  # timed runs per candidate after one warm-up run (the fastest counts)
SUBSET = 4  # candidates of up to this many tasks per pass are timed on this many tasks
MIN_TIMED = 0.05  # seconds of timed runs per candidate at least (up to MAX_REPEATS runs)
MAX_REPEATS = 20
MIN_CANDIDATES = 3  # measured whatever the budget says (the loop and two batched plans, where they exist)


@dataclass(frozen=True)
class Plan:
    """One way to run :meth:`MAML.meta_gradient`; ``str(plan)`` and :meth:`parse` convert to and from text."""

    tasks_per_pass: int | None = None  # tasks sent through the network together; None: the whole meta-batch
    loop: bool = False  # the per-task loop (the unbatched module, one task at a time); other fields unused
    layout: str = "contiguous"  # Conv4's memory order: "contiguous" or "channels_last"
    first_layer: str = "grouped"  # Conv4's first convolution: "grouped" or "unfold"
    inner_gradient: str = "autograd"  # "analytic": an MLP's MSE gradients written out (analytic_allowed)

    def __post_init__(self) -> None:
        if self.tasks_per_pass is not None and (isinstance(self.tasks_per_pass, bool)
                                                or not isinstance(self.tasks_per_pass, int) or self.tasks_per_pass < 1):
            raise ValueError(f"tasks_per_pass must be a positive number of tasks or None, got {self.tasks_per_pass!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.first_layer not in FIRST_LAYERS:
            raise ValueError(f"first_layer must be one of {FIRST_LAYERS}, got {self.first_layer!r}")
        if self.inner_gradient not in INNER_GRADIENTS:
            raise ValueError(f"inner_gradient must be one of {INNER_GRADIENTS}, got {self.inner_gradient!r}")

    def __str__(self) -> str:
        if self.loop:
            return "loop"
        text = f"{self.tasks_per_pass or 'all'}/{self.layout}/{self.first_layer}"
        return text + "/analytic" if self.inner_gradient == "analytic" else text

    @classmethod
    def parse(cls, text: str) -> "Plan":
        """``"loop"``, or tasks per pass (a number or ``"all"``) optionally followed by ``/layout``,
        ``/first_layer`` and ``/inner_gradient`` in any order, e.g. ``"2"``, ``"all/channels_last"``,
        ``"4/contiguous/unfold"``, ``"all/analytic"``."""
        parts = [p.strip() for p in str(text).split("/")]
        if parts == ["loop"]:
            return cls(loop=True)
        head, options = parts[0], parts[1:]
        if head != "all" and not head.isdigit():
            raise ValueError(f"plan {text!r} must start with 'loop', 'all' or a number of tasks per pass")
        fields = {"tasks_per_pass": None if head == "all" else int(head)}
        for option in options:
            name = ("layout" if option in LAYOUTS else "first_layer" if option in FIRST_LAYERS
                    else "inner_gradient" if option in INNER_GRADIENTS else None)
            if name is None or name in fields:
                raise ValueError(f"plan {text!r}: {option!r} is not one of {LAYOUTS + FIRST_LAYERS + INNER_GRADIENTS} "
                                 "(or is given twice)")
            fields[name] = option
        return cls(**fields)

    def size(self, tasks: int) -> int:
        """Tasks per pass for a meta-batch of ``tasks``."""
        return 1 if self.loop else min(self.tasks_per_pass or tasks, tasks)

    def forward_options(self) -> dict:
        """Keyword arguments of :func:`metaedu.nn.functional.batched_forward` for this plan."""
        return {"channels_last": self.layout == "channels_last", "unfold_first": self.first_layer == "unfold"}


def analytic_allowed(learner) -> bool:
    """Whether a plan may write the inner gradients out (:func:`metaedu.nn.functional.mlp_mse_gradients`):
    an MLP it knows, the MSE loss, and MAML's own inner loop and objective (not a subclass's)."""
    from metaedu.nn.functional import mlp_mse_supported

    return learner.loss == "mse" and mlp_mse_supported(learner.model) and learner.loop_allowed()


ENV = "METAEDU_MAML_PLAN"


def fixed_plan(learner, device) -> Plan:
    """The plan without measuring (the rule before issue 25): Conv4 on the CPU 4 tasks per pass in
    channels-last order, anything else all tasks in one pass."""
    if type(learner.model).__name__ == "Conv4" and torch.device(device).type == "cpu":
        return Plan(4, layout="channels_last")
    return Plan()


def environment_plan(learner, device) -> Plan | None:
    """The plan ``METAEDU_MAML_PLAN`` imposes on ``plan="auto"`` learners, or None (unset or ``"measure"``)."""
    text = os.environ.get(ENV, "").strip()
    if text in ("", "measure"):
        return None
    if text == "fixed":
        return fixed_plan(learner, device)
    try:
        return Plan.parse(text)
    except ValueError as err:
        raise ValueError(f"{ENV}={text!r} is not 'measure', 'fixed' or a plan: {err}") from None


def parse_plan(value) -> "Plan | str":
    """``"auto"`` (measure), a :class:`Plan`, or its text; anything else is a ``ValueError``."""
    if isinstance(value, Plan) or value == "auto":
        return value
    if isinstance(value, str):
        return Plan.parse(value)
    raise ValueError(f"plan must be 'auto', a Plan or a plan's text such as '2/contiguous/grouped', got {value!r}")


# ----------------------------------------------------------------------------- the cache


def machine() -> str:
    """The processor the plan was measured on: the GPU's name, or the CPU's model name."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def plan_key(learner, tasks, steps: int) -> dict:
    """What a measured plan depends on; a plan is reused only where all of it is the same."""
    device = tasks.x_support.device
    return {
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else machine(),
        "device": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "freed_memory_kept": runtime.freed_memory_limit(),
        "learner": type(learner).__name__,
        "model": type(learner.model).__name__,
        "parameters": [[n, list(p.shape)] for n, p in learner.model.named_parameters()],
        "variant": [str(learner.loss), learner.first_order, learner.meta_sgd, learner.anil, steps],
        "dtype": str(tasks.x_support.dtype).replace("torch.", ""),
        "support": list(tasks.x_support.shape),
        "query": list(tasks.x_query.shape),
    }


def _cache_path():
    return runtime.cache_dir() / CACHE_FILE


def _read_entries() -> list[dict]:
    path = _cache_path()
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text()).get("plans", [])
    except (ValueError, AttributeError):
        return []  # a damaged file is measured again and rewritten
    return [e for e in entries if isinstance(e, dict) and "key" in e and "plan" in e]


def cached_plan(key: dict) -> Plan | None:
    """The plan stored for exactly ``key``, or None."""
    for entry in _read_entries():
        if entry["key"] == key:
            try:
                return Plan.parse(entry["plan"])
            except ValueError:
                return None
    return None


def store_plan(key: dict, plan: Plan, timings: dict[str, float]) -> None:
    """Write (or replace) the entry for ``key``, with the per-task milliseconds each candidate took."""
    entries = [e for e in _read_entries() if e["key"] != key]
    entries.append({"key": key, "plan": str(plan), "ms_per_task": {k: round(v, 4) for k, v in timings.items()}})
    path = _cache_path()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"plans": entries}, indent=1))
    os.replace(tmp, path)  # whole-file replace: a concurrent reader sees the old or the new file


# ----------------------------------------------------------------------------- measuring


def choose(learner, tasks, steps: int, budget: float = TUNE_SECONDS) -> Plan:
    """The cached plan for this key, or the fastest candidate measured now (and cached)."""
    key = plan_key(learner, tasks, steps)
    plan = cached_plan(key)
    if plan is None:
        plan, timings = autotune(learner, tasks, steps, budget)
        store_plan(key, plan, timings)
    return plan


def _clock(device: torch.device):
    """Process CPU time with one CPU thread (robust to other jobs on a shared machine); wall time otherwise."""
    if device.type == "cuda":
        def wall_synced() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return wall_synced
    return time.process_time if torch.get_num_threads() == 1 else time.perf_counter


def _first(tasks, m: int):
    """The first ``m`` tasks of a meta-batch (the four tensors a meta-gradient reads)."""
    return SimpleNamespace(**{k: getattr(tasks, k)[:m] for k in ("x_support", "y_support", "x_query", "y_query")})


def autotune(learner, tasks, steps: int, budget: float = TUNE_SECONDS) -> tuple[Plan, dict[str, float]]:
    """Time candidate plans on ``tasks``; return the fastest and every candidate's ms per task.

    Stage 1 tries the per-task loop (where the learner allows it) and 1, 2, 4, ... tasks per pass up to
    the whole meta-batch, in the device's default layout, stopping once a larger pass is slower per task
    (and the next would take over a tenth of the budget to measure).
    Stage 2 (Conv4 only) tries the other layouts and first layers for the best pass size. Small
    passes are timed on ``SUBSET`` tasks and compared per task. Tuning stops adding candidates after
    ``budget`` seconds (of CPU time with one thread, else wall time), once ``MIN_CANDIDATES`` are measured.
    The parameters' ``.grad`` are restored afterwards.
    """
    n = tasks.x_support.shape[0]
    device = tasks.x_support.device
    clock = _clock(device)
    began = clock()  # the budget runs on the measuring clock: CPU time, not a shared machine's wall time
    saved = [(p, p.grad) for p in learner.parameters()]
    timings: dict[str, float] = {}

    def measure(plan: Plan) -> float | None:
        if str(plan) in timings:
            return timings[str(plan)]
        if len(timings) >= MIN_CANDIDATES and clock() - began > budget:
            return None
        whole = plan.tasks_per_pass is None and not plan.loop  # one pass over the whole meta-batch
        m = n if whole else min(n, max(plan.size(n), SUBSET))
        part = _first(tasks, m)
        best, spent, rep = float("inf"), 0.0, 0
        # one warm-up run, then at least REPEATS timed runs and MIN_TIMED seconds of them (short runs are noisy)
        while rep <= REPEATS or (spent < MIN_TIMED and rep <= MAX_REPEATS):
            for p, _ in saved:
                p.grad = None
            start = clock()
            learner.run_plan(plan, part, steps)
            took = clock() - start
            if rep:
                best, spent = min(best, took), spent + took
            rep += 1
        timings[str(plan)] = 1000 * best / m
        return timings[str(plan)]

    conv = type(learner.model).__name__ == "Conv4"
    base = {"layout": "channels_last" if conv and device.type == "cpu" else "contiguous", "first_layer": "grouped"}
    # On the CPU a call of several passes keeps freed buffers for its next pass (MAML.run_plan), so only its
    # first pass faults fresh pages in; tuning on a few tasks would charge that first pass to every pass.
    # Measuring inside one kept-memory block times the steady state instead, where the warm-up paid the faults.
    scope = runtime.freed_memory_kept(warn=False) if device.type == "cpu" else contextlib.nullcontext()
    try:
        with scope:
            if learner.loop_allowed():
                measure(Plan(loop=True))
            sizes, previous, c = [], None, 1
            while True:
                plan = Plan(tasks_per_pass=None if c >= n else c, **base)
                ms = measure(plan)
                if ms is None:
                    break
                sizes.append((ms, plan.tasks_per_pass))
                # larger passes stop once one was slower per task, unless the next costs little to measure anyway
                next_cost = ms / 1000 * min(2 * c, n) * (1 + REPEATS)
                if c >= n or (previous is not None and ms > previous and next_cost > budget / 10):
                    break
                previous, c = ms, 2 * c
            if analytic_allowed(learner):  # an MLP with MSE: its inner gradients written out, at the best size
                for _, size in sorted(sizes, key=lambda s: s[0])[:1]:
                    measure(Plan(tasks_per_pass=size, inner_gradient="analytic", **base))
            if conv:
                for _, size in sorted(sizes, key=lambda s: s[0])[:1]:
                    for layout in LAYOUTS:
                        for first in FIRST_LAYERS:
                            measure(Plan(tasks_per_pass=size, layout=layout, first_layer=first))
    finally:
        for p, grad in saved:
            p.grad = grad
    fastest = min(timings, key=timings.get)
    return Plan.parse(fastest), timings
