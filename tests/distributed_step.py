"""Run by ``tests/test_distributed.py`` under ``torchrun --nproc-per-node 2``: one distributed MAML step.

Every rank draws its share of the meta-batch from its own generator, computes the meta-gradient,
and takes one SGD step through :func:`metaedu.distributed.synchronized`. Rank 0 saves every rank's
tasks and the parameters after the step, so the test can redo the step in one process on the union.
"""

import sys

import torch

from metaedu import distributed
from metaedu.algorithms import maml
from metaedu.runtime import preset, seeded
from metaedu.tasks.regression import SinusoidTasks

META_BATCH, LR, SEED = 8, 0.1, 0


def main(out: str) -> None:
    torch.set_num_threads(1)
    here = distributed.init("cpu")
    settings = preset(maml.SinusoidSettings, "quick", meta_batch=META_BATCH)
    with seeded(SEED + 1000 * here.rank):  # different weights on purpose: the broadcast must make them equal
        learner = maml.sinusoid_learner(settings)
    distributed.broadcast_parameters(learner)
    tasks = SinusoidTasks(settings.k_shot, settings.n_query, seed=distributed.rank_seed(SEED)).sample(
        distributed.local_batch(META_BATCH))
    opt = distributed.synchronized(torch.optim.SGD(learner.parameters(), lr=LR))
    before = {k: v.detach().clone() for k, v in learner.state_dict().items()}
    opt.zero_grad()
    learner.meta_gradient(tasks, settings.inner_steps)
    opt.step()
    parts = distributed.gather({k: getattr(tasks, k) for k in ("x_support", "y_support", "x_query", "y_query")})
    if here.main:
        torch.save({"before": before, "after": learner.state_dict(), "tasks": parts, "world": here.size}, out)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
