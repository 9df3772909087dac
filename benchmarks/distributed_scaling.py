"""Data-parallel scaling of one full-mode training step: 1 process against N under torchrun.

Runs ``metaedu train METHOD --mode full`` for a few steps with 1 and with N processes (Gloo on the
CPU, NCCL on GPUs), times the training loop alone (``result.json``'s seconds: no start-up, no
evaluation) and prints throughput and scaling efficiency side by side:

    python benchmarks/distributed_scaling.py --method maml-glyphs --steps 4 --procs 2
    python benchmarks/distributed_scaling.py --device cuda --procs 4        # a node with 4 GPUs

Efficiency = (tasks per second with N processes / N) / (tasks per second with one process).
On a CPU the N processes share the machine's cores: give each one thread and at least N cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path


def time_run(method: str, procs: int, steps: int, meta_batch: int, device: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="metaedu-scaling-") as tmp:
        out = Path(tmp) / "out"
        command = ["-m", "metaedu", "train", method, "--mode", "full", "--steps", str(steps), "--meta-batch",
                   str(meta_batch), "--device", device, "--checkpoint", str(Path(tmp) / "ckpt.pt"), "--no-eval",
                   "--out", str(out)]
        launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                        f"--nproc-per-node={procs}"]
        env = {**os.environ, "METAEDU_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "METAEDU_PROGRESS": "0"}
        proc = subprocess.run(launcher + command, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"{procs} process(es) failed:\n{proc.stderr[-2000:]}")
        return json.loads((out / "result.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="maml-glyphs")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--meta-batch", type=int, default=32, help="tasks per step over all processes")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    args = parser.parse_args()
    rows = []
    for procs in (1, args.procs):
        record = time_run(args.method, procs, args.steps, args.meta_batch, args.device, args.threads)
        rows.append((procs, record["seconds"], args.steps * args.meta_batch / record["seconds"]))
    base = rows[0][2]
    print(f"{args.method}, full preset, meta-batch {args.meta_batch}, {args.steps} steps, device {args.device}, "
          f"{args.threads} thread(s) per process, {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'processes':>9} {'seconds':>9} {'tasks/s':>9} {'speed-up':>9} {'efficiency':>11}")
    for procs, seconds, rate in rows:
        print(f"{procs:>9} {seconds:>9.2f} {rate:>9.2f} {rate / base:>8.2f}x {rate / base / procs:>10.0%}")


if __name__ == "__main__":
    main()
