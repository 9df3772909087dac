"""Full mode under torchrun on the CPU (Gloo, 2 processes): the same step as one process, resumable.

* One distributed MAML step equals the single-process step on the union of the ranks' tasks
  (the reference: the meta-gradient computed in this process on all tasks at once).
* A run interrupted and resumed under torchrun ends with the same weights as an uninterrupted
  one (bit for bit), and resuming with another number of processes is a clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metaedu import distributed
from metaedu.algorithms import maml
from metaedu.runtime import preset, seeded
from metaedu.tasks.regression import RegressionTasks

HERE = Path(__file__).resolve().parent


def _torchrun(args: list[str], tmp_path: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "METAEDU_THREADS": "1", "OMP_NUM_THREADS": "1", "METAEDU_PROGRESS": "0",
           "METAEDU_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def test_single_process_world_changes_nothing(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    here = distributed.init("cpu")
    assert (here.rank, here.size, here.main, here.distributed) == (0, 1, True, False)
    assert distributed.rank_seed(7) == 7 and distributed.local_batch(25) == 25
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    assert distributed.synchronized(opt) is opt
    assert distributed.gather({"a": 1}) == [{"a": 1}]


def test_impossible_worlds_are_clear_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="rank 2 of a world of 2"):
        distributed.init("cpu")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="must be integers"):
        distributed.init("cpu")


@pytest.mark.slow
def test_one_distributed_step_equals_the_single_process_step_on_all_tasks(tmp_path):
    out = tmp_path / "step.pt"
    proc = _torchrun([str(HERE / "distributed_step.py"), str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(out)
    assert saved["world"] == 2
    union = RegressionTasks(**{k: torch.cat([part[k] for part in saved["tasks"]]) for k in saved["tasks"][0]})
    assert union.x_support.shape[0] == 8  # each rank drew 4 tasks, and they differ
    assert not torch.equal(saved["tasks"][0]["x_support"], saved["tasks"][1]["x_support"])
    settings = preset(maml.SinusoidSettings, "quick", meta_batch=8)
    with seeded(0):
        learner = maml.sinusoid_learner(settings)
    for key, value in learner.state_dict().items():  # rank 0's weights were broadcast
        torch.testing.assert_close(value, saved["before"][key])
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    opt.zero_grad()
    learner.meta_gradient(union, settings.inner_steps)
    opt.step()
    for key, value in learner.state_dict().items():
        torch.testing.assert_close(saved["after"][key], value, rtol=1e-5, atol=1e-6)
    moved = max(float((saved["after"][k] - saved["before"][k]).abs().max()) for k in saved["after"])
    assert moved > 1e-4  # the step did something


@pytest.mark.slow
def test_an_interrupted_run_resumed_under_torchrun_ends_like_an_uninterrupted_one(tmp_path):
    common = ["-m", "metaedu", "train", "maml-sinusoid", "--mode", "quick", "--meta-batch", "4"]
    whole = _torchrun([*common, "--steps", "6", "--checkpoint", "a.pt", "--out", "a"], tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = _torchrun([*common, "--steps", "3", "--checkpoint", "b.pt", "--out", "b1"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _torchrun([*common, "--steps", "6", "--checkpoint", "b.pt", "--out", "b2"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = torch.load(tmp_path / "a" / "model.pt"), torch.load(tmp_path / "b2" / "model.pt")
    interrupted = torch.load(tmp_path / "b1" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), "resuming did not end where the uninterrupted run did"
    assert not all(torch.equal(a[k], interrupted[k]) for k in a)  # the resumed run did train on
    record = json.loads((tmp_path / "b2" / "result.json").read_text())
    assert record["world_size"] == 2 and record["steps_done"] == 6
    # the checkpoint holds two ranks' generators: one process cannot resume it
    alone = subprocess.run([sys.executable, *common, "--steps", "6", "--checkpoint", "b.pt", "--out", "c"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path,
                           env={**os.environ, "METAEDU_CACHE": str(tmp_path / "cache"), "METAEDU_PROGRESS": "0"})
    assert alone.returncode == 2 and "written by 2 process(es)" in alone.stderr
