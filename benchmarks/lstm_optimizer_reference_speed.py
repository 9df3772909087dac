"""Seconds per meta-update of lecture 01's references (full preset), on the CPU and, where there is one, the GPU.

Which device should train ``lstm-opt-quadratics`` and ``lstm-opt-mlp``? The models are tiny (a 2-layer LSTM
of 20 units applied to 1,280 or ~24,000 coordinates), so a GPU may be launch-bound. Prints, per reference
and device, the wall and CPU seconds per meta-update (after one warm-up run) and the runs of the full preset
that fit in five minutes. Run: ``python benchmarks/lstm_optimizer_reference_speed.py [--runs 2]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from metaedu.algorithms import learned_optimizer as lo
from metaedu.reference import lstm_optimizer as ref
from metaedu.runtime import set_threads


def seconds_per_update(kind: str, device: torch.device, runs: int) -> tuple[float, float]:
    s = ref._settings()
    model = ref._build(s, device)
    problem = ref._quadratics(s, device, 0) if kind == "quad" else ref.digits_problem(s, "train", 0, device)
    batch = s.quad_meta_batch if kind == "quad" else s.mlp_meta_batch
    lo.meta_train(model, problem, s, 1, batch, progress=False)  # warm-up
    ref._sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    history = lo.meta_train(model, problem, s, runs, batch, progress=False)
    ref._sync(device)
    return (time.perf_counter() - wall) / history.steps_done, (time.process_time() - cpu) / history.steps_done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="timed runs of 5 meta-updates each")
    args = parser.parse_args()
    set_threads()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    segments = ref._settings().horizon // ref._settings().unroll
    for kind in ("quad", "mlp"):
        times = {}
        for device in devices:
            wall, cpu = seconds_per_update(kind, device, args.runs)
            times[device.type] = wall
            print(f"{kind:<5} {device.type:<5} {1000 * wall:8.1f} ms wall, {1000 * cpu:8.1f} ms CPU per meta-update; "
                  f"runs in 5 min: {int(300 / (wall * segments))}")
        if "cuda" in times:
            print(f"{kind:<5} cpu/cuda wall ratio: {times['cpu'] / times['cuda']:.2f}")


if __name__ == "__main__":
    main()
