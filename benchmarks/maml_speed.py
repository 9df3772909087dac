"""MAML meta-iterations side by side: our batched learner, a per-task loop, and the `higher` library.

One command prints, for each setting, milliseconds per meta-iteration (one
second-order meta-gradient of a whole meta-batch), the speed ratio against
the per-task loop, and the peak memory of each implementation::

    python benchmarks/maml_speed.py                 # CPU, 1 thread
    python benchmarks/maml_speed.py --device cuda   # the same on a GPU

"ours" is what training runs (``MAML.meta_gradient``: all tasks batched; for
Conv4 on the CPU, 4 tasks per pass with each chunk's graph freed after its
backward pass); "ours, one pass" sends the whole meta-batch through at once.
On the CPU the table also gives the share of time spent in convolution kernels.

Settings: Finn's sinusoids (MLP 1-40-40-1, 25 tasks, 10 shots, 1 inner
step, second order) and Conv4 5-way 1-shot with 15 queries per class, 32 tasks.

Before timing, every implementation's meta-gradient is compared with ours on
the same meta-batch; the script stops with an error if one differs. Each
implementation is then timed in a fresh subprocess, so that its peak memory
is its own: on CUDA ``torch.cuda.max_memory_allocated``, on the CPU the growth of
the process's peak resident set size over its size before the first
iteration (Linux; the peak is reset first through ``/proc/self/clear_refs``). Times are wall-clock on CUDA (after synchronising) and
process CPU time on the CPU, where a shared machine inflates wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time

import torch

from metaedu.algorithms.maml import MAML, per_task_meta_loss
from metaedu.nn.backbones import MLP, Conv4
from metaedu.runtime import get_device
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.tasks.regression import SinusoidTasks

IMPLEMENTATIONS = ("ours", "ours, one pass", "per-task loop", "higher")
SETTINGS = ("sinusoid", "conv4")


def make_setting(name: str, device: torch.device):
    """The learner and one fixed meta-batch for a setting (seeded, so every process builds the same)."""
    torch.manual_seed(0)
    if name == "sinusoid":
        learner = MAML(MLP((1, 40, 40, 1)), "mse", inner_lr=0.01).to(device)
        tasks = SinusoidTasks(k_shot=10, n_query=10, device=device, seed=0).sample(25)
    elif name == "conv4":
        from metaedu.data.glyphs import load_glyphs

        model = Conv4(1, 64, n_classes=5, track_running_stats=False)
        learner = MAML(model, "cross_entropy", inner_lr=0.4).to(device)
        tasks = EpisodeSampler(load_glyphs().split("background"), 5, 1, 15, device=device, seed=0).sample(32)
    else:
        raise ValueError(f"unknown setting {name!r}; choose from {SETTINGS}")
    return learner, tasks


def ours(learner: MAML, tasks, steps: int = 1) -> None:
    """What training uses: ``meta_gradient``, all tasks batched, in chunks where that is faster (Conv4 on the CPU)."""
    learner.meta_gradient(tasks, steps)


def ours_one_pass(learner: MAML, tasks, steps: int = 1) -> None:
    """The whole meta-batch through the network in one batched pass, one ``backward``."""
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


RUNNERS = dict(zip(IMPLEMENTATIONS, (ours, ours_one_pass, per_task_loop, with_higher)))


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


def check_gradients(setting: str, device: torch.device) -> dict[str, str]:
    """Compare each implementation's meta-gradient with ours in float64; raise if one differs."""
    with full_precision():
        return _check_gradients(setting, device)


def _check_gradients(setting: str, device: torch.device) -> dict[str, str]:
    learner, tasks = in_double(*make_setting(setting, device))
    reference = meta_gradient(ours, learner, tasks)
    scale = max(float(g.abs().max()) for g in reference)
    status = {}
    for name in IMPLEMENTATIONS[1:]:
        try:
            grads = meta_gradient(RUNNERS[name], learner, tasks)
        except ImportError as err:
            status[name] = f"not installed ({err})"
            continue
        worst = max(float((a - b).abs().max()) for a, b in zip(grads, reference)) / scale
        if worst > 1e-8:
            raise AssertionError(f"{setting}: {name}'s meta-gradient differs from ours (max relative difference {worst:.2e})")
        status[name] = f"same meta-gradient (max diff {worst:.1e} of the largest entry)"
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


def worker(setting: str, name: str, device: torch.device, iters: int) -> dict:
    """Time one implementation in this (fresh) process: warm-up, then ``iters`` meta-iterations."""
    learner, tasks = make_setting(setting, device)
    run = RUNNERS[name]
    if name == "higher":
        import higher  # noqa: F401  (imported before memory is measured, like torch)
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
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        learner.zero_grad(set_to_none=True)
        run(learner, tasks)
    if cuda:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _rss_bytes("VmHWM") - base
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    result = {"ms": 1000 * (wall if cuda else cpu) / iters, "wall_ms": 1000 * wall / iters, "peak_mb": peak / 2**20}
    if not cuda:
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
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s))"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (fixed for a fair comparison)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--iters", type=int, default=None, help="timed meta-iterations (default: per setting and device)")
    parser.add_argument("--worker", nargs=2, metavar=("SETTING", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = get_device(args.device)

    if args.worker:
        setting, name = args.worker
        print(json.dumps(worker(setting, name, device, args.iters)))
        return 0

    print(f"device: {device_name(device)}; torch {torch.__version__}; threads {args.threads}")
    for setting in args.settings:
        iters = args.iters or {"sinusoid": 30, "conv4": 10 if device.type == "cuda" else 2}[setting]
        status = check_gradients(setting, device)
        results = {}
        for name in IMPLEMENTATIONS:
            if status.get(name, "").startswith("not installed"):
                continue
            cmd = [sys.executable, __file__, "--device", str(device), "--threads", str(args.threads),
                   "--iters", str(iters), "--worker", setting, name]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{setting} / {name} failed:\n{done.stderr}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        clock = "wall" if device.type == "cuda" else "CPU"
        print(f"\n{setting}: {iters} timed meta-iterations, ms of {clock} time per meta-iteration")
        for name, text in status.items():
            print(f"  check: {name}: {text}")
        loop = results["per-task loop"]["ms"]
        cpu = device.type == "cpu"
        print(f"  {'implementation':<16} {'ms/iter':>10} {'speed-up vs loop':>17} {'peak MB':>9}"
              + (f" {'in conv kernels':>16}" if cpu else ""))
        for name, r in results.items():
            print(f"  {name:<16} {r['ms']:>10.1f} {loop / r['ms']:>16.2f}x {r['peak_mb']:>9.1f}"
                  + (f" {100 * r['conv_share']:>15.0f}%" if cpu else ""))
        share = results["per-task loop"].get("conv_share", 0.0)
        if cpu and share > 0.05:
            # batching removes per-task overhead, not arithmetic: an implementation that ran the same
            # convolutions no faster than the loop's, and nothing else, would still need share * loop
            print(f"  the loop spends {100 * share:.0f}% of its time in convolution kernels that every implementation "
                  f"runs alike; removing all else would give at most {1 / share:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
