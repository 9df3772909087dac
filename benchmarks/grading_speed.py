"""Grading speed: 30 copies of one correct submission, graded with 1 and with 2 jobs (and in shards).

Prints, for each job count, submissions graded per minute (wall clock) and the CPU seconds per
submission of the grader and every sandboxed process together. Where the benchmark may make a
cgroup (root), it runs in a cpuacct cgroup of its own, which counts every process it starts,
however they end; otherwise it counts its own and its waited-for children's CPU time, which
misses processes that end inside a sandbox's pid namespace (the line says which). Wall-clock
figures depend on what else the machine runs: compare them only between runs made back to back
on the same machine (``PYTHONPATH=<an older checkout>`` benchmarks an older grader).
``--shards N`` adds a row for N ``metaedu grade --shard I/N`` processes run at once (one job each),
then merged, as a scheduler would run them on one machine (issue 27).

    python benchmarks/grading_speed.py [--assignment episodes_protonet] [--copies 30] [--jobs 1 2] [--shards 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from metaedu.grading import grader, shards
from metaedu.grading import notebook as nbtools
from metaedu.grading.spec import load


def correct_submission(name: str) -> bytes:
    """The student version with every answer cell filled in from the solution."""
    solution = nbtools.read(load(name).solution)
    answers = {f"answer-{nbtools.meta(c)['exercise']}": c.source for c in solution.cells if "answer" in nbtools.tags(c)}
    student = nbtools.student_version(solution)
    for cell in student.cells:
        if cell["id"] in answers:
            cell.source = answers[cell["id"]]
    return nbformat.writes(student).encode()


class CpuMeter:
    """CPU seconds of this process and everything it starts (a cpuacct cgroup where possible)."""

    def __init__(self):
        self.group = Path(f"/sys/fs/cgroup/cpuacct/metaedu-bench-{os.getpid()}")
        try:
            self.group.mkdir()
            (self.group / "cgroup.procs").write_text(str(os.getpid()))
            self.how = "cpuacct cgroup: every process"
        except OSError:
            self.group, self.how = None, "rusage: this process and its waited-for children only"

    def seconds(self) -> float:
        if self.group:
            return int((self.group / "cpuacct.usage").read_text()) / 1e9
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def close(self) -> None:
        if self.group:
            Path("/sys/fs/cgroup/cpuacct/cgroup.procs").write_text(str(os.getpid()))
            for _ in range(100):
                try:
                    self.group.rmdir()
                    return
                except OSError:  # processes of the last sandbox still leaving
                    time.sleep(0.1)


def in_shards(submissions: Path, assignment: str, work: Path, count: int) -> list[dict]:
    """Grade in ``count`` shard processes at once, merge them; the merged results."""
    outs = [work / f"out-{count}shards-{i}" for i in range(1, count + 1)]
    grade = [sys.executable, "-m", "metaedu", "grade", str(submissions), "--assignment", assignment, "--seed", "1"]
    procs = [
        subprocess.Popen(
            [*grade, "--no-progress", "--shard", f"{i}/{count}", "--out", str(out)], stdout=subprocess.DEVNULL
        )
        for i, out in enumerate(outs, 1)
    ]
    if any(p.wait() != 0 for p in procs):
        raise RuntimeError("a shard failed")
    merged = work / f"out-{count}shards"
    shards.merge(outs, merged)
    return [json.loads(p.read_text()) for p in sorted((merged / "submissions").glob("*/result.json"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="episodes_protonet")
    parser.add_argument("--copies", type=int, default=30)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shards", type=int, nargs="*", default=[], help="shard counts to run as processes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="metaedu-bench-"))
    submissions = work / "submissions"
    submissions.mkdir()
    raw = correct_submission(args.assignment)
    for i in range(args.copies):
        (submissions / f"student{i:02d}.ipynb").write_bytes(raw)
    rows, meter = [], CpuMeter()
    print(f"CPU time measured with {meter.how}", flush=True)
    for how in [f"jobs {j}" for j in args.jobs] + [f"{n} shards" for n in args.shards]:
        start, cpu0 = time.perf_counter(), meter.seconds()
        if how.startswith("jobs"):
            jobs = int(how.split()[1])
            out = work / f"out-jobs{jobs}"
            results = grader.grade_folder(submissions, args.assignment, out, grader.Settings(jobs=jobs, progress=False))
        else:
            results = in_shards(submissions, args.assignment, work, int(how.split()[0]))
        wall, cpu = time.perf_counter() - start, meter.seconds() - cpu0
        statuses = {r["status"] for r in results}
        full = len(results) == args.copies and all(r["score"] == r["max_score"] for r in results)
        rows.append(
            {
                "how": how,
                "copies": args.copies,
                "per_minute": round(60 * args.copies / wall, 2),
                "wall_s_per_submission": round(wall / args.copies, 2),
                "cpu_s_per_submission": round(cpu / args.copies, 2),
                "statuses": sorted(statuses),
                "all_full_marks": full,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    meter.close()
    shutil.rmtree(work, ignore_errors=True)
    print(f"{'how':>10}  {'submissions / min':>18}  {'wall s / submission':>20}  {'CPU s / submission':>19}")
    for row in rows:
        print(
            f"{row['how']:>10}  {row['per_minute']:>18}  {row['wall_s_per_submission']:>20}  {row['cpu_s_per_submission']:>19}"
        )
    return 0 if all(r["all_full_marks"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
