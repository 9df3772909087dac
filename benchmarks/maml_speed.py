"""MAML meta-iterations side by side: our batched learner, a per-task loop, and the `higher` and `learn2learn`
libraries where they are installed (optional; neither is a dependency).

One command prints, for each setting and thread count, wall and CPU milliseconds of the median
meta-iteration (one second-order meta-gradient of a whole meta-batch), the speed ratio against
the per-task loop on both clocks, the peak memory of each implementation, the execution plan
``MAML`` chose on this machine, and the convolution ceiling::

    python benchmarks/maml_speed.py                          # CPU, 1 and 2 threads
    python benchmarks/maml_speed.py --device cuda            # the same on a GPU (1 thread)
    python benchmarks/maml_speed.py --keep-freed-memory      # freed memory kept for the whole run: how the
                                                             # lectures, `metaedu train` and `metaedu pretrain`
                                                             # run (their set_threads() keeps it process-wide)
    python benchmarks/maml_speed.py --out results/           # also write maml_speed.json there

"ours" is what training runs: ``MAML.meta_gradient`` with ``plan="auto"``, i.e. the plan measured
fastest on this machine for these shapes (:mod:`metaedu.algorithms.maml_plan`; the per-task loop is
one of its candidates), chosen in this process before timing and printed with every candidate's
time; "ours, one pass" sends the whole meta-batch through at once; "per-task loop" is the usual
Python loop over tasks with one ``backward`` at the end.

Settings: Finn's sinusoids (MLP 1-40-40-1, 25 tasks, 10 shots, 1 inner
step, second order) and Conv4 5-way 1-shot with 15 queries per class, 32 tasks.

Before timing, every implementation's meta-gradient (and that of the chosen plan) is compared with
the per-task loop's on the same meta-batch in float64; the script stops with an error if one differs.
Each implementation is then timed in a fresh subprocess, so that its peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``, on the CPU the growth of the process's peak resident set size
over its size before the first iteration (Linux; the peak is reset first through
``/proc/self/clear_refs``). Wall time is what a user waits for (after synchronising on CUDA); CPU
time (the process's, summed over its threads) is what a shared machine cannot inflate, but with
2 threads it says nothing about speed. On the CPU the loop's share of time in convolution kernels
gives the ceiling: every implementation runs the same convolutions, so removing everything else
would make one at most 1 / share times faster than the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from metaedu import runtime
from metaedu.algorithms import maml_plan
from metaedu.algorithms.maml import MAML, per_task_meta_loss
from metaedu.nn.backbones import MLP, Conv4
from metaedu.runtime import get_device
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.tasks.regression import SinusoidTasks

IMPLEMENTATIONS = ("ours", "ours, one pass", "per-task loop", "higher", "learn2learn")
SETTINGS = ("sinusoid", "conv4")


def make_setting(name: str, device: torch.device, plan="auto"):
    """The learner and one fixed meta-batch for a setting (seeded, so every process builds the same)."""
    torch.manual_seed(0)
    if name == "sinusoid":
        learner = MAML(MLP((1, 40, 40, 1)), "mse", inner_lr=0.01, plan=plan).to(device)
        tasks = SinusoidTasks(k_shot=10, n_query=10, device=device, seed=0).sample(25)
    elif name == "conv4":
        from metaedu.data.glyphs import load_glyphs

        model = Conv4(1, 64, n_classes=5, track_running_stats=False)
        learner = MAML(model, "cross_entropy", inner_lr=0.4, plan=plan).to(device)
        tasks = EpisodeSampler(load_glyphs().split("background"), 5, 1, 15, device=device, seed=0).sample(32)
    else:
        raise ValueError(f"unknown setting {name!r}; choose from {SETTINGS}")
    return learner, tasks


def ours(learner: MAML, tasks, steps: int = 1) -> None:
    """What training uses: ``meta_gradient`` with the learner's plan (the measured one, given to the worker)."""
    learner.meta_gradient(tasks, steps)


def ours_one_pass(learner: MAML, tasks, steps: int = 1) -> None:
    """The whole meta-batch through the network in one batched pass, one ``backward`` (default layout)."""
    loss, _ = learner.meta_loss(tasks, steps)
    loss.backward()


def per_task_loop(learner: MAML, tasks, steps: int = 1) -> None:
    per_task_meta_loss(learner, tasks, steps).backward()


def with_higher(learner: MAML, tasks, steps: int = 1) -> None:
    """The same computation with `higher`: a differentiable SGD inner optimiser, one task at a time."""
    import higher

    from metaedu.algorithms.maml import task_loss

    model = learner.model
    inner_opt = torch.optim.SGD(model.parameters(), lr=learner.inner_lr)
    n = tasks.x_support.shape[0]
    for i in range(n):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(task_loss(fmodel(tasks.x_support[i])[None], tasks.y_support[i][None], learner.loss)[0])
            query = task_loss(fmodel(tasks.x_query[i])[None], tasks.y_query[i][None], learner.loss)[0]
            (query / n).backward()


def with_learn2learn(learner: MAML, tasks, steps: int = 1) -> None:
    """The same computation with learn2learn's MAML wrapper: a differentiable clone per task, one task at a time.

    learn2learn 0.2.0's released C sources do not compile on Python 3.11; regenerate them from its ``.pyx``
    files with Cython 0.29 (``cython -3``) before ``pip install``. Importing it imports ``torchvision`` (and
    ``gym``, ``qpth``), which must be built for the installed torch; its MAML itself uses neither."""
    import learn2learn

    from metaedu.algorithms.maml import task_loss

    wrapped = learn2learn.algorithms.MAML(learner.model, lr=learner.inner_lr, first_order=False)
    n = tasks.x_support.shape[0]
    for i in range(n):
        clone = wrapped.clone()
        for _ in range(steps):
            clone.adapt(task_loss(clone(tasks.x_support[i])[None], tasks.y_support[i][None], learner.loss)[0])
        query = task_loss(clone(tasks.x_query[i])[None], tasks.y_query[i][None], learner.loss)[0]
        (query / n).backward()


RUNNERS = dict(zip(IMPLEMENTATIONS, (ours, ours_one_pass, per_task_loop, with_higher, with_learn2learn)))


def meta_gradient(run, learner, tasks) -> list[torch.Tensor]:
    learner.zero_grad(set_to_none=True)
    run(learner, tasks)
    return [p.grad.detach().clone() for p in learner.parameters()]


@contextlib.contextmanager
def full_precision():
    """Turn off TensorFloat-32 for the check: on recent GPUs cuDNN convolutions and matrix products
    round to 10-bit mantissas by default, and two correct implementations then differ by ~1e-3."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def in_double(learner: MAML, tasks):
    """The same learner and meta-batch in float64, where two correct implementations agree to ~1e-12
    (in float32 the second-order terms through batch norm over a 5-image support set amplify rounding
    to ~1e-3 of the largest entry, which would hide nothing but also prove nothing)."""
    as64 = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in vars(tasks).items()}
    return learner.double(), type(tasks)(**as64)


def check_gradients(setting: str, device: torch.device, plan: str) -> dict[str, str]:
    """Compare each implementation's meta-gradient with the per-task loop's in float64; raise if one differs."""
    with full_precision():
        return _check_gradients(setting, device, plan)


def _check_gradients(setting: str, device: torch.device, plan: str) -> dict[str, str]:
    learner, tasks = in_double(*make_setting(setting, device, plan))
    reference = meta_gradient(per_task_loop, learner, tasks)
    scale = max(float(g.abs().max()) for g in reference)
    status = {}
    for name in IMPLEMENTATIONS:
        if name == "per-task loop":
            continue
        try:
            grads = meta_gradient(RUNNERS[name], learner, tasks)
        except ImportError as err:
            status[name] = f"not installed ({err})"
            continue
        worst = max(float((a - b).abs().max()) for a, b in zip(grads, reference)) / scale
        label = f"{name} (plan {plan})" if name == "ours" else name
        if worst > 1e-8:
            raise AssertionError(f"{setting}: {label}'s meta-gradient differs from the per-task loop's "
                                 f"(max relative difference {worst:.2e})")
        status[name] = f"same meta-gradient as the per-task loop (max diff {worst:.1e} of the largest entry)"
    return status


def _rss_bytes(field: str = "VmRSS") -> int:
    """Current (``VmRSS``) or peak (``VmHWM``) resident set size of this process (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}; peak memory on the CPU needs Linux")


def _reset_peak_rss() -> None:
    """Let the peak resident size restart from the current size (Linux's clear_refs, value 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(setting: str, name: str, device: torch.device, iters: int, plan: str) -> dict:
    """Time one implementation in this (fresh) process: warm-up, then ``iters`` meta-iterations, each timed
    on its own; the median iteration is reported (a shared machine's hiccups move the mean of a 1 ms
    iteration by tens of percent, not the median), with the mean beside it in the JSON."""
    learner, tasks = make_setting(setting, device, plan)
    run = RUNNERS[name]
    if name == "higher":
        import higher  # noqa: F401  (imported before memory is measured, like torch)
    if name == "learn2learn":
        import learn2learn  # noqa: F401
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        _reset_peak_rss()
        base = _rss_bytes()
    learner.zero_grad(set_to_none=True)
    run(learner, tasks)  # warm-up (allocator, kernels, `higher`'s first patching)
    if cuda:
        torch.cuda.synchronize(device)
    walls, cpus = [], []
    for _ in range(iters):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        learner.zero_grad(set_to_none=True)
        run(learner, tasks)
        if cuda:
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _rss_bytes("VmHWM") - base
    result = {"wall_ms": 1000 * statistics.median(walls), "cpu_ms": 1000 * statistics.median(cpus),
              "wall_ms_mean": 1000 * statistics.mean(walls), "peak_mb": peak / 2**20}
    if not cuda and name == "per-task loop":
        result["conv_share"] = convolution_share(run, learner, tasks)
    return result


def convolution_share(run, learner: MAML, tasks) -> float:
    """Fraction of one meta-iteration's CPU time spent inside convolution kernels (forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    learner.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(learner, tasks)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_KERNELS)
    return conv / total if total else 0.0


#: the ATen operators that do the arithmetic of a convolution on the CPU
CONV_KERNELS = {"aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
                "aten::_slow_conv2d_backward", "aten::thnn_conv2d"}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({maml_plan.machine()})"


def choose_plan(setting: str, device: torch.device) -> tuple[str, dict, float]:
    """The plan ``MAML(plan="auto")`` takes here (read from the cache or measured now), every candidate's
    ms per task when measured now, and the seconds the choice took."""
    learner, tasks = make_setting(setting, device)
    key = maml_plan.plan_key(learner, tasks, 1)
    cached = maml_plan.cached_plan(key) is not None
    start = time.perf_counter()
    plan = learner.plan_for(tasks, 1)
    took = time.perf_counter() - start
    entry = [e for e in maml_plan._read_entries() if e["key"] == key]
    return str(plan), (entry[0]["ms_per_task"] if entry else {}), None if cached else took


def run_setting(setting: str, device: torch.device, threads: int, iters: int, keep: bool) -> dict:
    """Choose the plan, check every meta-gradient in float64, then time each implementation in its own process."""
    torch.set_num_threads(threads)
    plan, candidates, took = choose_plan(setting, device)
    status = check_gradients(setting, device, plan)
    results = {}
    one_pass = maml_plan.Plan(layout="channels_last" if setting == "conv4" and device.type == "cpu" else "contiguous")
    for name in IMPLEMENTATIONS:
        if status.get(name, "").startswith("not installed"):
            continue
        if name == "ours, one pass" and (plan == str(one_pass) or (setting == "sinusoid" and plan.startswith("all"))):
            status[name] = "the same computation as ours (its plan is one pass in this layout): not timed again"
            continue
        cmd = [sys.executable, __file__, "--device", str(device), "--threads", str(threads), "--iters", str(iters),
               "--plan", plan, "--worker", setting, name] + (["--keep-freed-memory"] if keep else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{setting} / {name} failed:\n{done.stderr}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"setting": setting, "threads": threads, "iters": iters, "plan": plan, "plan_candidates_ms_per_task":
            candidates, "plan_seconds": took, "checks": status, "results": results}


def report(r: dict, device: torch.device) -> None:
    print(f"\n{r['setting']}, {r['threads']} thread(s): {r['iters']} timed meta-iterations, ms per meta-iteration (median)")
    tuned = ", ".join(f"{k} {v:.2f}" for k, v in r["plan_candidates_ms_per_task"].items())
    when = "read from the cache, measured earlier" if r["plan_seconds"] is None else \
        f"measured now in {r['plan_seconds']:.1f} s wall"
    print(f"  plan chosen by MAML(plan='auto'): {r['plan']} ({when}; candidates, ms per task: {tuned})")
    for name, text in r["checks"].items():
        print(f"  check: {name}: {text}")
    results = r["results"]
    loop = results["per-task loop"]
    print(f"  {'implementation':<16} {'wall ms':>9} {'CPU ms':>9} {'loop/x wall':>12} {'loop/x CPU':>11} {'peak MB':>9}")
    for name, x in results.items():
        print(f"  {name:<16} {x['wall_ms']:>9.1f} {x['cpu_ms']:>9.1f} {loop['wall_ms'] / x['wall_ms']:>11.2f}x "
              f"{loop['cpu_ms'] / x['cpu_ms']:>10.2f}x {x['peak_mb']:>9.1f}")
    share = loop.get("conv_share", 0.0)
    if device.type == "cpu" and share > 0.05:
        # batching removes per-task overhead, not arithmetic: an implementation that ran the same
        # convolutions no faster than the loop's, and nothing else, would still need share * loop
        print(f"  convolution ceiling: the loop spends {100 * share:.0f}% of its CPU time in convolution kernels "
              f"that every implementation runs alike; removing all else would give at most {1 / share:.2f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="PyTorch CPU thread counts to run with (default: 1 2 on the CPU, 1 on a GPU)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--iters", type=int, default=None, help="timed meta-iterations (default: per setting and device)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="run inside metaedu.runtime.freed_memory_kept() (glibc's mallopt; opt-in)")
    parser.add_argument("--out", default=None, help="folder to write maml_speed.json to")
    parser.add_argument("--plan", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("SETTING", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = get_device(args.device)
    imposed = os.environ.pop(maml_plan.ENV, None)  # "ours" is the measured plan (workers get it explicitly)
    if imposed and not args.worker:
        print(f"note: {maml_plan.ENV}={imposed!r} is ignored here; the benchmark shows the plan measured on this machine")
    threads = args.threads or ([1, 2] if device.type == "cpu" else [1])
    if any(t < 1 for t in threads):
        raise ValueError(f"thread counts must be positive, got {threads}")
    scope = runtime.freed_memory_kept() if args.keep_freed_memory else contextlib.nullcontext()
    with scope:
        if args.worker:
            torch.set_num_threads(threads[0])
            print(json.dumps(worker(*args.worker, device, args.iters, args.plan)))
            return 0
        print(f"device: {device_name(device)}; torch {torch.__version__}; threads {threads}; "
              f"freed memory kept: {runtime.freed_memory_limit() is not None}")
        runs = []
        for n_threads in threads:
            for setting in args.settings:
                iters = args.iters or {"sinusoid": 300, "conv4": 10 if device.type == "cuda" else 3}[setting]
                runs.append(run_setting(setting, device, n_threads, iters, args.keep_freed_memory))
                report(runs[-1], device)
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"device": device_name(device), "torch": torch.__version__, "keep_freed_memory": args.keep_freed_memory}
        (folder / "maml_speed.json").write_text(json.dumps({**meta, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
