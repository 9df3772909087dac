"""Full mode on several GPUs (or CPU processes) under ``torchrun``: the meta-batch split across ranks.

A full-mode run (60,000 MAML meta-updates, 20,000 ProtoNet episodes batches) is data-parallel in
the simplest way: every meta-update averages a loss over a meta-batch of tasks, so ``R`` processes
("ranks") can each draw ``meta_batch / R`` tasks from their own generator, backpropagate their
share, and average the gradients before the optimiser step. The parameters start equal (broadcast
from rank 0) and receive the same averaged gradient, so they stay equal; the result is the
single-process meta-update on the union of the ranks' tasks (``tests/test_distributed.py``).

Launched by PyTorch's own launcher, which sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``::

    torchrun --nproc-per-node 4 -m metaedu train maml-glyphs --mode full --device cuda

Without those variables everything here is a no-op and a run is an ordinary single process.
The pieces the training code uses:

* :func:`init` / :func:`world`: the rank, the number of ranks, this rank's device;
* :func:`local_batch`: this rank's share of a meta-batch (an error when it does not divide);
* :func:`rank_seed`: a different episode stream per rank (rank 0 keeps the single-process seed);
* :func:`synchronized`: an optimiser whose ``step()`` first averages the gradients over ranks
  (an explicit all-reduce: the functional MAML core has no module call for DDP's hooks);
* :func:`broadcast_parameters`: make every rank start from rank 0's weights;
* :func:`gather` and :func:`is_main`: the checkpoint keeps every rank's generator state, and
  rank 0 alone writes files, logs and shows the progress bar (:mod:`metaedu.training`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist

#: Seeds of ranks r > 0 are the run's seed plus r times this (far from the seeds people pick).
RANK_SEED_STRIDE = 100_003


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _from_environment() -> World:
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them): {err}") from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} of a world of {size} processes is impossible")
    return World(rank, size, local)


def world() -> World:
    """The current world: the initialised process group's, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def init(device: str | torch.device = "cpu") -> World:
    """Join the process group ``torchrun`` describes (no-op for a single process); return the world.

    The backend follows the device: NCCL for CUDA, Gloo for the CPU.
    """
    here = _from_environment()
    if not here.distributed or (dist.is_available() and dist.is_initialized()):
        return world() if here.distributed else here
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run a single process")
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return world()


def shutdown() -> None:
    """Leave the process group (call at the end of a distributed run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """Whether this process writes files, logs and progress bars (rank 0, or a single process)."""
    return world().main


def device_for(device: torch.device) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when the run asks for CUDA on several ranks."""
    here = world()
    if device.type == "cuda" and here.distributed:
        return torch.device("cuda", here.local_rank)
    return device


def local_batch(global_batch: int) -> int:
    """This rank's share of a meta-batch of ``global_batch`` tasks or episodes."""
    size = world().size
    if global_batch % size:
        raise ValueError(
            f"a meta-batch of {global_batch} cannot be split evenly over {size} ranks; "
            f"use a multiple of {size} (every rank must average over the same number of tasks)"
        )
    return global_batch // size


def rank_seed(seed: int) -> int:
    """The seed of this rank's episode or task generator (rank 0: ``seed`` itself)."""
    return seed + RANK_SEED_STRIDE * world().rank


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace every gradient by its mean over the ranks (in place; no-op for one process)."""
    here = world()
    if not here.distributed:
        return
    for p in parameters:
        if p.grad is None:  # a parameter that got no gradient on this rank gets the others' mean
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(here.size)


class Synchronized:
    """An optimiser whose ``step()`` averages the gradients over the ranks first.

    Everything else (``zero_grad``, ``state_dict``, ``param_groups``, schedulers) is the
    wrapped optimiser's, so checkpoints and learning-rate schedules work unchanged.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self, closure=None):
        average_gradients(p for group in self.optimizer.param_groups for p in group["params"])
        return self.optimizer.step(closure)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


def synchronized(optimizer: torch.optim.Optimizer):
    """``optimizer`` itself for one process; a :class:`Synchronized` wrapper under torchrun."""
    return Synchronized(optimizer) if world().distributed else optimizer


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (no-op for one process)."""
    if not world().distributed:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process). A collective call."""
    here = world()
    if not here.distributed:
        return [obj]
    out: list[Any] = [None] * here.size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if world().distributed:
        dist.barrier()
