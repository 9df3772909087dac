"""``metaedu grade``: score a folder of submitted notebooks, untrusted, into a gradebook.

For each submission (one row of ``gradebook.csv`` and one ``<name>/result.json`` whatever happens):

1. **Rebuild, don't trust.** Read it as JSON (size-capped), take only the sources of its answer
   cells (found by their stable ids ``answer-<exercise>``) and put them into the instructor's
   template (the student version of the solution notebook). Its metadata, tags, kernelspec,
   outputs and every other cell are ignored.
2. **Stage A.** Execute the rebuilt notebook with papermill in the sandbox
   (:mod:`metaedu.grading.sandbox`): our kernel, our parameters, limits, no network, a per-cell
   timeout and a wall-clock bound.
3. **Stage B.** In a fresh sandbox, run the setup cells (those before the first answer cell) and
   the answer cells, call the student's functions on inputs drawn here from the grader's seed,
   and read back plain arrays (``.npz``, no pickle). The tests' expected values and all
   comparisons are computed here, in the grader's process.

Statuses: ok, cell_error, timeout, kernel_died, oom, invalid_notebook, missing_answer, harness_error.
Stage B runs (and scores) when stage A ended ok, with a cell error or with a missing answer; after
a timeout, a dead kernel or running out of memory the submission scores zero. When stage B itself
runs out of time the submission is a timeout and scores zero: partial results of a stopped run
are never scored, since how far it got would depend on the machine's load.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np

from metaedu.grading import notebook as nbtools
from metaedu.grading import sandbox
from metaedu.grading.spec import Assignment, draw_args, load

STATUSES = ("ok", "cell_error", "timeout", "kernel_died", "oom", "invalid_notebook", "missing_answer", "harness_error")
MAX_NOTEBOOK_BYTES = 2 * 2**20
MAX_ANSWER_CHARS = 50_000


@dataclass
class Settings:
    """Limits of one grading run (one place for them)."""

    jobs: int = 1  # submissions graded at once (each in its own sandbox uid)
    stage_a_cpu_s: float | None = None  # CPU seconds for the whole notebook, all its processes (None: the assignment's)
    stage_b_cpu_s: float = 60.0  # CPU seconds for loading the definitions and calling every test
    stage_a_wall_s: float = 600.0  # wall-clock backstop of stage A, for code that sleeps or waits
    stage_b_wall_s: float = 300.0  # wall-clock backstop of stage B
    memory_mb: int = 3072
    progress: bool = True

    def __post_init__(self):
        for name in ("stage_a_cpu_s", "stage_b_cpu_s", "stage_a_wall_s", "stage_b_wall_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {self.jobs}")


class Rejected(Exception):
    """The submission cannot be graded; ``status`` says why."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


# ------------------------------------------------------------------ rebuilding


def template(assignment: Assignment):
    """The instructor's template: the student version of the solution notebook."""
    return nbtools.student_version(nbtools.read(assignment.solution))


def answers_of(raw: bytes) -> dict[str, str]:
    """The answer cells' sources of a submission, by cell id; rejects what is not a notebook."""
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise Rejected("invalid_notebook", f"the file is {len(raw) / 2**20:.1f} MiB, over the {MAX_NOTEBOOK_BYTES / 2**20:.0f} MiB limit")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Rejected("invalid_notebook", f"not a JSON notebook: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list) or data.get("nbformat") != 4:
        raise Rejected("invalid_notebook", "not a version-4 Jupyter notebook (no nbformat 4 or no list of cells)")
    found: dict[str, str] = {}
    for cell in data["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not cell_id.startswith("answer-"):
            continue
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise Rejected("invalid_notebook", f"cell {cell_id!r} has a source that is not text")
        if cell_id in found:
            raise Rejected("invalid_notebook", f"two cells have the id {cell_id!r}")
        if len(source) > MAX_ANSWER_CHARS:
            raise Rejected("invalid_notebook", f"answer cell {cell_id!r} is longer than {MAX_ANSWER_CHARS} characters")
        found[cell_id] = source
    return found


def rebuild(assignment: Assignment, raw: bytes):
    """(rebuilt notebook, exercises whose answer cell is missing) from a submission's bytes."""
    answers = answers_of(raw)
    nb = copy.deepcopy(template(assignment))
    missing = []
    for cell in nb.cells:
        if nbtools.ANSWER in nbtools.tags(cell):
            if cell["id"] in answers:
                cell.source = answers[cell["id"]]
            else:
                missing.append(nbtools.meta(cell)["exercise"])
    return nb, missing


def stage_b_cells(nb) -> list[str]:
    """Setup cells (code before the first answer cell, parameters included) and answer cells."""
    sources, seen_answer = [], False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        is_answer = nbtools.ANSWER in nbtools.tags(cell)
        seen_answer = seen_answer or is_answer
        if is_answer or not seen_answer:
            sources.append(cell.source)
    return sources


def _parameters(nb, seed: int) -> dict:
    ours = {"MODE": "quick", "DEVICE": "cpu", "SEED": seed}
    cell = next((c for c in nb.cells if "parameters" in nbtools.tags(c)), None)
    if cell is None:
        return {}
    return {k: v for k, v in ours.items() if f"{k} =" in cell.source or f"{k}=" in cell.source}


# ------------------------------------------------------------------ stages


def _limits(settings: Settings, cpu_budget: float, wall: float) -> sandbox.Limits:
    # RLIMIT_CPU per process only backs up the budget of the whole sandbox, which decides
    return sandbox.Limits(cpu_s=int(cpu_budget) + 30, memory_mb=settings.memory_mb, cpu_budget_s=cpu_budget, timeout_s=wall)


def _stage_a_cpu(assignment: Assignment, settings: Settings) -> float:
    return settings.stage_a_cpu_s or assignment.notebook_cpu_s


def _over_time(outcome: sandbox.Outcome, cpu_budget: float, wall: float) -> str:
    if outcome.returncode == sandbox.CPU_CODE:
        return f"it used more than {cpu_budget:.0f} CPU seconds"
    return f"it did not finish within {wall:.0f} s of wall-clock time"


def _hide(assignment: Assignment, extra: tuple[Path, ...]) -> tuple[Path, ...]:
    return (assignment.folder.parent, *extra)


def run_stage_a(assignment, nb, settings, slot, hide) -> tuple[str, str]:
    cpu_budget, wall = _stage_a_cpu(assignment, settings), settings.stage_a_wall_s
    params = {"parameters": _parameters(nb, assignment.seed), "kernel": "python3", "wall_s": wall}
    # the stored parameters cell holds the template's literals; papermill injects ours after it
    inputs = {"submission.ipynb": nbformat.writes(nb).encode(), "params.json": json.dumps(params).encode()}
    outcome = sandbox.run([sys.executable, "-m", "metaedu.grading.stage_a"], inputs,
                          _limits(settings, cpu_budget, wall), slot=slot, hide=hide)
    report = _read_json(outcome.out_dir / "stage_a.json")
    if outcome.timed_out:
        return "timeout", f"the notebook did not finish: {_over_time(outcome, cpu_budget, wall)}"
    if report.get("status") in STATUSES:
        status, reason = report["status"], str(report.get("reason", ""))[:2000]
        if status == "kernel_died" and "MemoryError" in outcome.log:
            status = "oom"
        return status, reason
    if outcome.returncode != 0:
        return "kernel_died", f"the notebook's runner stopped with code {outcome.returncode} before reporting"
    return "kernel_died", "the notebook's runner ended without a report"


def run_stage_b(assignment, nb, settings, slot, hide) -> tuple[dict[int, list[np.ndarray]], dict[str, str], list[str], str]:
    probes, inputs = [], {}
    inputs["cells.json"] = json.dumps({"sources": stage_b_cells(nb)}).encode()
    for i, test in enumerate(assignment.tests):
        args = draw_args(assignment, i)
        kinds, arrays = [], {}
        for k, arg in enumerate(args):
            if isinstance(arg, np.ndarray):
                kinds.append("tensor")
                arrays[f"a{k}"] = arg
            else:
                kinds.append({bool: "bool", int: "int", float: "float"}[type(arg)])
                arrays[f"a{k}"] = np.array(arg)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        inputs[f"args_{i}.npz"] = buffer.getvalue()
        probes.append({"index": i, "function": test.function, "kinds": kinds, "seed": assignment.seed + i})
    inputs["probes.json"] = json.dumps(probes).encode()
    outcome = sandbox.run([sys.executable, "-m", "metaedu.grading.stage_b"], inputs,
                          _limits(settings, settings.stage_b_cpu_s, settings.stage_b_wall_s), slot=slot, hide=hide)
    results: dict[int, list[np.ndarray]] = {}
    for i in range(len(assignment.tests)):
        path = outcome.out_dir / f"result_{i}.npz"
        if path.is_file() and path.stat().st_size < 64 * 2**20:
            try:
                with np.load(path, allow_pickle=False) as data:
                    keys = sorted(data.files, key=lambda n: int(n[1:]) if n[1:].isdigit() else 10**6)
                    results[i] = [np.asarray(data[k]) for k in keys]
            except Exception:  # noqa: BLE001 - a forged or broken file counts as no answer
                pass
    report = _read_json(outcome.out_dir / "stage_b.json")
    errors = report.get("errors", {}) if isinstance(report.get("errors"), dict) else {}
    cell_errors = report.get("cell_errors", []) if isinstance(report.get("cell_errors"), list) else []
    over = _over_time(outcome, settings.stage_b_cpu_s, settings.stage_b_wall_s) if outcome.timed_out else ""
    return results, {str(k): str(v)[:400] for k, v in errors.items()}, [str(c)[:400] for c in cell_errors][:20], over


def _read_json(path: Path) -> dict:
    try:
        if path.stat().st_size > 2**20:
            return {}
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------ scoring (trusted)


def compare(test, got: list[np.ndarray] | None, expected) -> tuple[bool, str]:
    """Whether the returned arrays match the reference, with a short reason when they do not."""
    want = [np.asarray(e, dtype=np.float64) for e in (expected if isinstance(expected, tuple) else (expected,))]
    if got is None:
        return False, "no value came back"
    if len(got) != len(want):
        return False, f"returned {len(got)} value(s), expected {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        if g.dtype.kind not in "fiub" or g.shape != w.shape:
            return False, f"value {k}: shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        g = g.astype(np.float64)
        if not np.all(np.isfinite(g)):
            return False, f"value {k}: not finite"
        if not np.allclose(g, w, rtol=test.rtol, atol=test.atol):
            return False, f"value {k}: wrong values (largest difference {np.max(np.abs(g - w)):.3g})"
    return True, ""


def score(assignment: Assignment, results, errors) -> list[dict]:
    rows = []
    for i, test in enumerate(assignment.tests):
        expected = test.reference(*draw_args(assignment, i))
        passed, reason = compare(test, results.get(i), expected)
        if not passed and str(i) in errors:
            reason = f"raised {errors[str(i)]}"
        rows.append({"test": test.name, "exercise": test.exercise, "visible": test.visible,
                     "points": float(test.points), "score": float(test.points) if passed else 0.0, "reason": reason})
    return rows


# ------------------------------------------------------------------ one submission


def versions() -> dict:
    import nbclient
    import papermill
    import torch

    import metaedu

    return {"metaedu": metaedu.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "papermill": papermill.__version__, "nbformat": nbformat.__version__, "nbclient": nbclient.__version__}


def grade_one(assignment: Assignment, path: Path, settings: Settings, slot: int = 0, hide: tuple[Path, ...] = ()) -> dict:
    """Grade one submission; always returns a result (status harness_error when the grader itself fails)."""
    start = time.monotonic()
    result = {"submission": path.name, "assignment": assignment.name, "status": "harness_error", "reason": "",
              "score": 0.0, "max_score": assignment.max_points(), "tests": [], "sha256": "",
              "seed": assignment.seed, "assignment_hash": assignment.fingerprint(), "sandbox": sandbox.mode()}
    try:
        if path.is_symlink() or not path.is_file():
            raise Rejected("invalid_notebook", "not a regular file")
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            raise Rejected("invalid_notebook", f"the file is {path.stat().st_size / 2**20:.1f} MiB, over the {MAX_NOTEBOOK_BYTES / 2**20:.0f} MiB limit")
        raw = path.read_bytes()
        result["sha256"] = hashlib.sha256(raw).hexdigest()
        nb, missing = rebuild(assignment, raw)
        hidden = _hide(assignment, hide)
        status, reason = run_stage_a(assignment, nb, settings, slot, hidden)
        if missing and status in ("ok", "cell_error"):
            status, reason = "missing_answer", f"no answer cell for: {', '.join(missing)} (answer cells are found by their cell id)" + (f"; then {reason}" if reason else "")
        rows = []
        if status in ("ok", "cell_error", "missing_answer"):
            results, errors, cell_errors, over_time = run_stage_b(assignment, nb, settings, slot, hidden)
            result["definition_errors"] = cell_errors
            if over_time:  # all or nothing: how far a stopped run got would depend on the machine's load
                status = "timeout"
                reason = (reason + "; " if reason else "") + f"the tests did not finish: {over_time}"
            else:
                rows = score(assignment, results, errors)
        if not rows:
            rows = [{"test": t.name, "exercise": t.exercise, "visible": t.visible, "points": float(t.points),
                     "score": 0.0, "reason": f"not run ({status})"} for t in assignment.tests]
        result.update(status=status, reason=reason, tests=rows, score=float(sum(r["score"] for r in rows)))
    except Rejected as rejected:
        result.update(status=rejected.status, reason=rejected.reason,
                      tests=[{"test": t.name, "exercise": t.exercise, "visible": t.visible, "points": float(t.points),
                              "score": 0.0, "reason": "not graded"} for t in assignment.tests])
    except Exception as err:  # noqa: BLE001 - the grader's own failure must not lose the submission
        result.update(status="harness_error", reason=f"{err.__class__.__name__}: {err}")
    result["duration_s"] = round(time.monotonic() - start, 2)
    result["versions"] = versions()
    return result


# ------------------------------------------------------------------ a folder


def feedback(result: dict) -> str:
    """What the student is told: status, reason, each test's name and score (no hidden tests' source)."""
    lines = [f"# {result['assignment']}: {result['submission']}", "",
             f"Score: {result['score']:g} / {result['max_score']:g}", f"Status: {result['status']}"]
    if result["reason"]:
        lines.append(f"Reason: {result['reason']}")
    lines.append("")
    for row in result["tests"]:
        mark = "✓" if row["score"] == row["points"] else "✗"
        kind = "visible" if row["visible"] else "hidden"
        lines.append(f"- {mark} {row['test']} ({kind}): {row['score']:g}/{row['points']:g}" + (f" — {row['reason']}" if row["reason"] else ""))
    return "\n".join(lines) + "\n"


def _safe_name(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return keep.lstrip(".")[:100] or "submission"


def grade_folder(submissions: str | Path, assignment_name: str, out: str | Path, settings: Settings | None = None) -> list[dict]:
    """Grade every ``*.ipynb`` in ``submissions``; write ``gradebook.csv`` and one folder per submission."""
    settings = settings or Settings()
    submissions, out = Path(submissions), Path(out)
    if not submissions.is_dir():
        raise FileNotFoundError(f"no folder of submissions at {submissions}")
    assignment = load(assignment_name)
    paths = sorted(p for p in submissions.iterdir() if p.name.endswith(".ipynb"))
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    hide = (submissions.resolve(), out.resolve())
    slots = list(range(settings.jobs))
    lock = threading.Lock()

    def work(path: Path) -> dict:
        with lock:
            slot = slots.pop()
        try:
            return grade_one(assignment, path, settings, slot, hide)
        finally:
            with lock:
                slots.append(slot)

    results: list[dict] = []
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=settings.jobs) as pool:
        for result in tqdm(pool.map(work, paths), total=len(paths), desc=f"grading {assignment.name}",
                           unit="notebook", disable=not settings.progress, file=sys.stderr):
            results.append(result)
    names = set()
    for result in results:
        name = _safe_name(Path(result["submission"]).stem)
        while name in names:
            name += "_"
        names.add(name)
        folder = out / name
        folder.mkdir(exist_ok=True)
        (folder / "result.json").write_text(json.dumps(result, indent=1) + "\n")
        (folder / "feedback.md").write_text(feedback(result))
    write_gradebook(out / "gradebook.csv", assignment, results)
    return results


def write_gradebook(path: Path, assignment: Assignment, results: list[dict]) -> None:
    tests = [t.name for t in assignment.tests]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["submission", "status", "score", "max_score", *tests, "duration_s", "sha256", "reason"])
        for r in results:
            per_test = {row["test"]: row["score"] for row in r["tests"]}
            writer.writerow([r["submission"], r["status"], r["score"], r["max_score"],
                             *[per_test.get(t, 0.0) for t in tests], r["duration_s"], r["sha256"], r["reason"][:300]])


def summary(results: list[dict]) -> str:
    """A table: one line per submission, then counts per status."""
    width = max([len(r["submission"]) for r in results] + [10])
    lines = [f"{'submission':<{width}}  {'status':<16} {'score':>11}  seconds"]
    for r in results:
        lines.append(f"{r['submission']:<{width}}  {r['status']:<16} {r['score']:>5g} / {r['max_score']:<4g}  {r['duration_s']:>6.1f}")
    counts = {s: sum(r["status"] == s for r in results) for s in STATUSES}
    lines.append("statuses: " + ", ".join(f"{s} {n}" for s, n in counts.items() if n))
    return "\n".join(lines)


def temp_dir(prefix: str = "metaedu-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
