"""``metaedu grade``: score a folder of submitted notebooks, untrusted, into a gradebook.

For each submission (a row of ``gradebook.csv`` and a ``result.json`` whatever happens, written as
soon as it is graded -- :mod:`metaedu.grading.gradebook`):

1. **Rebuild, don't trust** (:mod:`metaedu.grading.submission`): only the sources of its answer
   cells, and of code cells the student added before them, are put into the instructor's template.
2. **Stage A** (:mod:`metaedu.grading.stages`): the rebuilt notebook runs with papermill in a
   sandbox (:mod:`metaedu.grading.sandbox`): our kernel, our parameters, no network, limits for
   the submission as a whole.
3. **Stage B**: in a fresh sandbox the setup, added and answer cells are loaded and the student's
   functions called on inputs drawn from the run's seed (fresh for every run, recorded in the
   gradebook); only their values come back, and they are compared here
   (:mod:`metaedu.grading.scoring`).

Statuses: ok, cell_error, timeout, kernel_died, oom, invalid_notebook, missing_answer, harness_error.
Stage B runs (and scores) when stage A ended ok, with a cell error or with a missing answer; after
a timeout, a dead kernel or running out of memory the submission scores zero, and so does a stage
B that reaches a limit. Time limits count CPU seconds, so that a verdict does not depend on load.
"""

from __future__ import annotations

import hashlib
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from metaedu.grading import gradebook, sandbox, scoring, shards, stages
from metaedu.grading.scoring import feedback  # noqa: F401 - part of the grader's interface
from metaedu.grading.spec import Assignment, load
from metaedu.grading.submission import Rejected, rebuild

STATUSES = ("ok", "cell_error", "timeout", "kernel_died", "oom", "invalid_notebook", "missing_answer", "harness_error")


@dataclass
class Settings:
    """Limits and options of one grading run (one place for them)."""

    jobs: int = 1  # submissions graded at once (each in its own sandboxes)
    stage_a_cpu_s: float | None = None  # CPU seconds for the whole notebook, all its processes (None: the assignment's)
    stage_b_cpu_s: float = 60.0  # CPU seconds for loading the definitions and calling every test
    stage_a_wall_s: float = 600.0  # wall-clock backstop of stage A, for code that sleeps or waits
    stage_b_wall_s: float = 300.0  # wall-clock backstop of stage B
    memory_mb: int = 3072  # memory of a whole submission (every process of its sandbox together)
    nproc: int = 64  # processes and threads of a whole submission
    seed: int | None = None  # the hidden tests' seed (None: a fresh one, or the one of the run being resumed)
    unsafe_no_sandbox: bool = False  # grade even where no sandbox can be built (no isolation at all)
    shard: tuple[int, int] | None = None  # (I, N): grade only the I-th of N shares (metaedu.grading.shards)
    progress: bool = True

    def __post_init__(self):
        for name in ("stage_a_cpu_s", "stage_b_cpu_s", "stage_a_wall_s", "stage_b_wall_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {self.jobs}")
        if self.memory_mb < 256 or self.nproc < 16:
            raise ValueError(
                f"a notebook needs at least 256 MB and 16 processes, got {self.memory_mb} MB and {self.nproc}"
            )
        if self.shard is not None:
            index, count = self.shard
            if not 1 <= index <= count:
                raise ValueError(f"shard must be (I, N) with 1 <= I <= N, got {self.shard!r}")
            if self.seed is None:
                raise ValueError(
                    "grading in shards needs a seed (--seed N, the same for every shard), "
                    "so that every student's hidden inputs come from one seed"
                )

    def limits(self, stage: str, assignment: Assignment) -> sandbox.Limits:
        cpu = (self.stage_a_cpu_s or assignment.notebook_cpu_s) if stage == "a" else self.stage_b_cpu_s
        wall = self.stage_a_wall_s if stage == "a" else self.stage_b_wall_s
        # RLIMIT_CPU of any one process only backs up the budget of the whole sandbox, which decides
        return sandbox.Limits(
            cpu_budget_s=cpu, timeout_s=wall, memory_mb=self.memory_mb, nproc=self.nproc, cpu_s=int(cpu) + 30
        )


def versions() -> dict:
    import nbclient
    import nbformat
    import papermill
    import torch

    import metaedu

    return {
        "metaedu": metaedu.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "papermill": papermill.__version__,
        "nbformat": nbformat.__version__,
        "nbclient": nbclient.__version__,
    }


def grade_one(
    assignment: Assignment, path: Path, settings: Settings, seed: int, raw: bytes | None, unread: str = ""
) -> dict:
    """Grade one submission (``raw``: its bytes, None when it could not be read, ``unread`` saying why).

    Always returns a result (status harness_error when the grader itself fails).
    """
    start = time.monotonic()
    result = {
        "submission": gradebook.shown(path.name),
        "assignment": assignment.name,
        "status": "harness_error",
        "reason": "",
        "score": 0.0,
        "max_score": assignment.max_points(),
        "tests": [],
        "warnings": [],
        "sha256": hashlib.sha256(raw).hexdigest() if raw is not None else "",
        "seed": seed,
        "assignment_hash": assignment.fingerprint(),
        "sandbox": sandbox.require_isolation(settings.unsafe_no_sandbox),
    }
    try:
        if raw is None:
            raise Rejected("invalid_notebook", unread)
        nb, missing, warnings = rebuild(assignment, raw)
        result["warnings"] = warnings
        status, reason, cpu = stages.stage_a(
            assignment, nb, seed, settings.limits("a", assignment), settings.unsafe_no_sandbox
        )
        result["cpu_s"] = {"stage_a": round(cpu, 2)}
        if missing and status in ("ok", "cell_error"):
            status = "missing_answer"
            reason = f"no answer cell for: {', '.join(missing)}" + (f"; then {reason}" if reason else "")
        rows = scoring.zero(assignment, f"not run ({status})")
        if status in ("ok", "cell_error", "missing_answer"):
            found = stages.stage_b(assignment, nb, seed, settings.limits("b", assignment), settings.unsafe_no_sandbox)
            result["definition_errors"] = found.cell_errors
            result["cpu_s"]["stage_b"] = round(found.cpu_seconds, 2)
            if found.over:
                status, reason = (
                    found.status,
                    (reason + "; " if reason else "") + f"the tests were stopped: {found.over}",
                )
                rows = scoring.zero(assignment, f"not scored ({status})")
            else:
                rows = scoring.score(assignment, seed, found.results, found.errors)
        result.update(status=status, reason=reason, tests=rows, score=float(sum(r["score"] for r in rows)))
    except Rejected as rejected:
        result.update(status=rejected.status, reason=rejected.reason, tests=scoring.zero(assignment, "not graded"))
    except Exception as err:  # noqa: BLE001 - the grader's own failure must not lose the submission
        result.update(
            status="harness_error",
            reason=f"{err.__class__.__name__}: {err}",
            tests=scoring.zero(assignment, "not graded"),
        )
    result["duration_s"] = round(time.monotonic() - start, 2)
    result["versions"] = versions()
    return result


def _read(path: Path, limit: int) -> tuple[bytes | None, str]:
    """(the bytes of a regular file of at most ``limit`` bytes, or None and why not)."""
    try:
        if path.is_symlink() or not path.is_file():
            return None, "not a regular file"
        size = path.stat().st_size
        if size > limit:
            return None, f"the file is {size / 2**20:.1f} MiB, over the {limit / 2**20:.0f} MiB limit"
        return path.read_bytes(), ""
    except OSError as err:
        return None, f"cannot be read: {err.strerror}"


def grade_folder(
    submissions: str | Path,
    assignment_name: str,
    out: str | Path,
    settings: Settings | None = None,
    on_result: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Grade every ``*.ipynb`` in ``submissions`` into ``out``; results in file-name order.

    Each result is written (and the gradebook rewritten) as soon as it is graded, then passed to
    ``on_result``. A rerun on the same ``out`` resumes where the last one stopped. With
    ``settings.shard`` only that share of the submissions is graded (:mod:`metaedu.grading.shards`).
    """
    from metaedu.grading.submission import MAX_FILE_BYTES

    settings = settings or Settings()
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise FileNotFoundError(f"no folder of submissions at {submissions}")
    assignment = load(assignment_name)
    sandbox.require_isolation(settings.unsafe_no_sandbox)  # refuse before writing anything
    paths = sorted((p for p in submissions.iterdir() if p.name.endswith(".ipynb")), key=lambda p: p.name)
    extra = {}
    if settings.shard:  # the share and every name are recorded before grading, for the merge
        extra["shard"] = shards.record([p.name for p in paths], *settings.shard)
        share = set(shards.pick([p.name for p in paths], *settings.shard))
        paths = [p for p in paths if p.name in share]
    run = gradebook.Run(out, assignment, settings.seed, extra=extra)
    lock = threading.Lock()
    results: dict[str, dict] = {}

    def work(path: Path) -> dict:
        raw, unread = _read(path, MAX_FILE_BYTES)
        previous = run.previous(path.name, hashlib.sha256(raw).hexdigest()) if raw is not None else None
        return previous or grade_one(assignment, path, settings, run.seed, raw, unread)

    from tqdm.auto import tqdm

    with (
        ThreadPoolExecutor(max_workers=settings.jobs) as pool,
        tqdm(
            total=len(paths),
            desc=f"grading {assignment.name}",
            unit="notebook",
            disable=not settings.progress,
            file=sys.stderr,
        ) as bar,
    ):
        futures = {pool.submit(work, path): path for path in paths}
        for future in as_completed(futures):
            path, result = futures[future], future.result()
            with lock:
                run.record(path.name, result)
                results[path.name] = result
            if on_result:
                on_result(result)
            bar.update()
    return [results[p.name] for p in paths]


def summary(results: list[dict]) -> str:
    """A table: one line per submission, then counts per status."""
    width = max([len(r["submission"]) for r in results] + [10])
    lines = [f"{'submission':<{width}}  {'status':<16} {'score':>11}  seconds"]
    for r in results:
        lines.append(
            f"{r['submission']:<{width}}  {r['status']:<16} {r['score']:>5g} / {r['max_score']:<4g}  {r['duration_s']:>6.1f}"
        )
    counts = {s: sum(r["status"] == s for r in results) for s in STATUSES}
    lines.append("statuses: " + ", ".join(f"{s} {n}" for s, n in counts.items() if n))
    return "\n".join(lines)
