"""Episodes per second of the MANN reference's training update at several batch sizes (lecture 04).

MANN runs its 50 time steps one after another, so on a GPU an update costs about the same for 16
episodes as for 128 (each step's kernels are tiny): the batch that fits the most episodes into a
time budget is the largest before the update time starts to grow. Prints updates/s and episodes/s
side by side, timing the updates after two warm-up ones:

    python benchmarks/mann_reference_batch.py --device cuda
    python benchmarks/mann_reference_batch.py --device cpu --batches 16 64 --updates 3
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch


def time_updates(batch: int, updates: int, device: torch.device) -> float:
    from metaedu.algorithms import mann
    from metaedu.data.glyphs import load_glyphs

    settings = dataclasses.replace(mann.MANNSettings.reference(), batch=batch, checkpoint=False)
    sampler = mann.make_sampler(settings, load_glyphs().split("background"), device=device, seed=0, training=True)
    model = mann.build_model("mann", settings, sampler, device)
    mann.train_model(model, sampler, settings, 2, checkpoint=False, progress=False)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    mann.train_model(model, sampler, settings, updates, checkpoint=False, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / updates


def main() -> None:
    from metaedu.runtime import get_device, set_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--updates", type=int, default=20)
    args = parser.parse_args()
    set_threads()
    device = get_device(args.device)
    print(f"device: {device}; {args.updates} timed updates per batch size")
    print(f"{'batch':>6} {'s/update':>9} {'updates/s':>10} {'episodes/s':>11} {'episodes in 5 min':>18}")
    for batch in args.batches:
        seconds = time_updates(batch, args.updates, device)
        print(f"{batch:>6} {seconds:>9.3f} {1 / seconds:>10.1f} {batch / seconds:>11.0f} {300 * batch / seconds:>18,.0f}")


if __name__ == "__main__":
    main()
