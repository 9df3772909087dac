"""The grader's side of the two stages: what goes into each sandbox, and what is believed of what comes out.

* **Stage A** executes the rebuilt notebook with papermill (:mod:`metaedu.grading.stage_a`). Its
  status is what the grader observed: a limit the sandbox reached (CPU budget or wall-clock
  backstop: timeout; memory: oom), else the runner's report, which only the runner can write;
  no report means the runner did not live to write one (a dead kernel). Files the notebook wrote
  are never read.
* **Stage B** loads the setup, added and answer cells in a fresh sandbox and calls the student's
  functions on inputs drawn here from the run's seed (:mod:`metaedu.grading.stage_b`). Only the
  returned values (decoded with :mod:`metaedu.grading.transfer`) and the names of exceptions
  come back. A stage B that reaches a limit scores nothing: how far a stopped run got would
  depend on the machine's load.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import nbformat
import numpy as np

from metaedu.grading import notebook as nbtools
from metaedu.grading import sandbox, transfer
from metaedu.grading.scoring import exception_name
from metaedu.grading.spec import Assignment, draw_args
from metaedu.grading.submission import stage_b_cells

STATUSES_A = ("ok", "cell_error", "timeout", "kernel_died", "oom", "harness_error")


@dataclass
class StageB:
    results: dict[int, list[np.ndarray]] = field(default_factory=dict)  # test index -> returned values
    errors: dict[int, str] = field(default_factory=dict)  # test index -> exception name
    cell_errors: list[str] = field(default_factory=list)  # "cell k raised <name>"
    over: str = ""  # why it was stopped ("" when it finished)
    status: str = ""  # "timeout" or "oom" when stopped
    cpu_seconds: float = 0.0


def _over(outcome: sandbox.Outcome, limits: sandbox.Limits) -> str:
    return {
        "cpu": f"it used more than {limits.cpu_budget_s:g} CPU seconds",
        "wall": f"it did not finish within {limits.timeout_s:g} s of wall-clock time (sleeping or waiting)",
        "memory": f"its processes together used more than {limits.memory_mb} MB of memory",
        "processes": f"it ran more than {limits.nproc} processes and threads at once",
    }[outcome.limit]


def _status_of_limit(limit: str) -> str:
    return {"cpu": "timeout", "wall": "timeout", "memory": "oom", "processes": "kernel_died"}[limit]


def _parameters(nb, seed: int) -> dict:
    ours = {"MODE": "quick", "DEVICE": "cpu", "SEED": seed}
    cell = next((c for c in nb.cells if "parameters" in nbtools.tags(c)), None)
    if cell is None:
        return {}
    return {k: v for k, v in ours.items() if f"{k} =" in cell.source or f"{k}=" in cell.source}


def stage_a(assignment: Assignment, nb, seed: int, limits: sandbox.Limits, unsafe: bool) -> tuple[str, str, float]:
    """(status, reason, CPU seconds) of executing the rebuilt notebook."""
    params = {"parameters": _parameters(nb, seed), "kernel": "python3", "wall_s": limits.timeout_s}
    # the stored parameters cell holds the template's literals; papermill injects ours after it
    inputs = {"submission.ipynb": nbformat.writes(nb).encode(), "params.json": json.dumps(params).encode()}
    outcome = sandbox.run(
        [sys.executable, "-m", "metaedu.grading.stage_a"],
        inputs,
        limits,
        hide_modules=assignment.hidden_modules,
        unsafe=unsafe,
    )
    if outcome.limit:
        return (
            _status_of_limit(outcome.limit),
            f"the notebook was stopped: {_over(outcome, limits)}",
            outcome.cpu_seconds,
        )
    report = next(iter(transfer.lines(outcome.report)), {})
    status, reason = report.get("status"), report.get("reason", "")
    if status in STATUSES_A and isinstance(reason, str):
        return status, reason[:500], outcome.cpu_seconds
    return (
        "kernel_died",
        f"the notebook's runner ended (code {outcome.returncode}) before it reported",
        outcome.cpu_seconds,
    )


def stage_b(assignment: Assignment, nb, seed: int, limits: sandbox.Limits, unsafe: bool) -> StageB:
    """Call the student's functions on this run's inputs; what came back."""
    probes = []
    for i, test in enumerate(assignment.tests):
        kinds, args = [], []
        for arg in draw_args(assignment, i, seed):
            if isinstance(arg, np.ndarray):
                kinds.append("tensor")
                args.append(transfer.encode(arg))
            else:
                kinds.append({bool: "bool", int: "int", float: "float"}[type(arg)])
                args.append(arg)
        probes.append({"index": i, "function": test.function, "kinds": kinds, "args": args, "seed": seed + i})
    inputs = {
        "cells.json": json.dumps({"sources": stage_b_cells(nb)}).encode(),
        "probes.json": json.dumps(probes).encode(),
    }
    outcome = sandbox.run(
        [sys.executable, "-m", "metaedu.grading.stage_b"],
        inputs,
        limits,
        hide_modules=assignment.hidden_modules,
        unsafe=unsafe,
    )
    found = StageB(cpu_seconds=outcome.cpu_seconds)
    if outcome.limit:
        found.over, found.status = _over(outcome, limits), _status_of_limit(outcome.limit)
        return found
    for event in transfer.lines(outcome.report):
        index = event.get("result", event.get("error", event.get("cell_error")))
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < max(len(assignment.tests), 10_000):
            continue
        if "cell_error" in event and len(found.cell_errors) < 50:
            found.cell_errors.append(f"cell {index} raised {exception_name(event.get('kind'))}")
        elif "error" in event and index < len(assignment.tests):
            found.errors.setdefault(index, str(event.get("kind")))
        elif "result" in event and index < len(assignment.tests) and index not in found.results:
            values = event.get("values")
            if isinstance(values, list) and len(values) <= 16:
                try:
                    found.results[index] = [transfer.decode(v) for v in values]
                except ValueError:
                    continue
    return found
