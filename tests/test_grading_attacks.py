"""The grader's attack suite (issue 17): hostile and edge-case submissions, graded as root and unprivileged.

Each variant grades the fixtures of ``tests/grading_fixtures.py`` with two grader processes at
once (two runs must not disturb each other, finding 3), plus the memory homework answered by the
course library. The unprivileged variant drops to ``nobody`` in a mount namespace where only the
interpreter is made reachable (``/root`` is not readable by others here), exactly what a
teaching assistant without root has. Both variants must give every fixture the same verdict.
Slow: every graded notebook starts a kernel.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import grading_fixtures as gf
from metaedu.grading import gradebook, grader
from metaedu.grading.spec import draw_args, load

pytestmark = pytest.mark.slow
NOBODY = 65534
CANARY_UID = 61000  # the old grader killed every process of uids 61000 + slot
# small CPU budgets keep the suite short (the infinite loop uses all of stage A's); generous
# wall-clock backstops, which only code that sleeps or waits should reach; 2 GB per submission
SETTINGS = {
    "jobs": 1,
    "stage_a_cpu_s": 20,
    "stage_b_cpu_s": 20,
    "stage_a_wall_s": 240,
    "stage_b_wall_s": 120,
    "memory_mb": 2048,
    "progress": False,
}
GRADE = """
import json, resource, sys
from metaedu.grading import grader
job = json.loads(sys.argv[1])
results = grader.grade_folder(job["submissions"], job["assignment"], job["out"], grader.Settings(**job["settings"]))
for r in results:
    r["feedback_text"] = grader.feedback(r)
print("RESULTS " + json.dumps({"results": results, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""
GRADED: dict[str, dict[str, dict]] = {}  # variant -> fixture name -> result, to compare the variants


# ------------------------------------------------------------------ the host side of the attacks


def _listener(token: bytes) -> tuple[int, socket.socket]:
    """A TCP server on every host address that answers each connection with ``token``."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("0.0.0.0", 0))
    server.listen(16)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(token)

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], server


def _host_ip() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            address = probe.getsockname()[0]
    except OSError:
        return ""
    return "" if address.startswith("127.") else address


def _leftovers(marks: list[str]) -> list[str]:
    """Command lines of live processes that carry one of ``marks``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(mark in cmd for mark in marks):
                found.append(f"{entry}: {cmd[:160]}")
    return found


# ------------------------------------------------------------------ running the grader


def _view(paths: list[str]) -> list[str]:
    """bwrap arguments that make ``paths`` reachable for others: a folder others cannot enter
    (``/root`` here) becomes an empty tmpfs holding only the needed folder bound back."""
    covered: dict[str, set[str]] = {}
    for path in paths:
        parts = Path(path).resolve().parts
        for i in range(2, len(parts)):
            folder = str(Path(*parts[:i]))
            if not os.stat(folder).st_mode & 0o001:
                covered.setdefault(folder, set()).add(str(Path(*parts[: i + 1])))
                break
    args = []
    for folder, keep in sorted(covered.items()):
        args += ["--tmpfs", folder]
        for path in sorted(keep):
            args += ["--ro-bind", path, path]
    return args


def _grader(job: dict, user: str) -> subprocess.Popen:
    command = [sys.executable, "-c", GRADE, json.dumps(job)]
    if user == "unprivileged" and os.geteuid() == 0:
        import metaedu

        needed = [sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(metaedu.__file__))]
        command = [
            "bwrap",
            "--dev-bind",
            "/",
            "/",
            *_view(needed),
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--",
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
            *command,
        ]
    env = {**os.environ, "TMPDIR": job["tmp"], "HOME": job["tmp"], "METAEDU_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, errors="replace"
    )


def _finish(proc: subprocess.Popen) -> tuple[list[dict], int]:
    out, err = proc.communicate()
    line = next((x for x in out.splitlines() if x.startswith("RESULTS ")), None)
    assert proc.returncode == 0 and line, f"the grader failed (code {proc.returncode}):\n{err[-4000:]}"
    report = json.loads(line[len("RESULTS ") :])
    return report["results"], report["maxrss_kb"]


def _write(folder: Path, name: str, content) -> None:
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    (folder / f"{name}.ipynb").write_bytes(raw)


def _hidden_values(assignment, result, decimals: int) -> list[str]:
    """Hidden inputs of the run that graded ``result``, as text a leak would show."""
    texts = []
    for i, test in enumerate(assignment.tests):
        if test.visible:
            continue
        for arg in draw_args(assignment, i, result["seed"]):
            if isinstance(arg, np.ndarray) and arg.dtype.kind == "f":
                texts += [f"{v:.{decimals}f}" for v in arg.ravel()[:8]]
    return texts


# ------------------------------------------------------------------ the suite


@pytest.mark.parametrize("user", ["root", "unprivileged"])
def test_attack_suite(tmp_path, user):
    if user == "root" and os.geteuid() != 0:
        pytest.skip("the root variant needs a grader running as root")
    base = Path(tempfile.mkdtemp(prefix="metaedu-attacks-", dir="/tmp")) if user == "unprivileged" else tmp_path
    runs = {"a": base / "graded-a", "b": base / "graded-b", "lib": base / "graded-lib"}
    folders = {key: base / f"submissions-{key}" for key in runs}
    secret = f"metaedu-secret-{os.urandom(4).hex()}"
    token = os.urandom(8).hex().encode()
    port, server = _listener(token)
    ctx = gf.Context(folders["a"], tuple(runs.values()), secret, port, token.decode(), _host_ip())
    fixtures = gf.fixtures(ctx)
    for folder in [*folders.values(), *runs.values(), base / "tmp"]:
        folder.mkdir()
        folder.chmod(0o755)  # the grader must leave an existing output folder's mode alone
    sequential = sorted(name for name, f in fixtures.items() if f.sequential)
    rest = sorted(name for name, f in fixtures.items() if not f.sequential)
    group_a = set(sequential + rest[: len(rest) // 2 - len(sequential)])
    for name, fixture in fixtures.items():
        _write(folders["a"] if name in group_a else folders["b"], name, fixture.content)
    _write(folders["lib"], "library_answers", gf.library_answers())
    if user == "unprivileged" and os.geteuid() == 0:
        for path in [base, *base.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
    helpers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", secret])]
    if os.geteuid() == 0:  # an account in the uid range the old grader killed
        helpers.append(
            subprocess.Popen(
                ["setpriv", f"--reuid={CANARY_UID}", f"--regid={CANARY_UID}", "--clear-groups", "sleep", "3600"]
            )
        )
    try:
        jobs = {
            key: {
                "submissions": str(folders[key]),
                "out": str(runs[key]),
                "tmp": str(base / "tmp"),
                "settings": SETTINGS,
                "assignment": gf.NAME if key != "lib" else "lrua_memory",
            }
            for key in runs
        }
        procs = {key: _grader(job, user) for key, job in jobs.items()}
        finished = {key: _finish(proc) for key, proc in procs.items()}
        time.sleep(6)  # a writer left behind would have written by now (it waits 5 s)
        left = _leftovers([gf.MARK, str(base / "tmp")])
        canary_alive = [h.poll() is None for h in helpers]
    finally:
        for helper in helpers:
            helper.kill()
            helper.wait()
        server.close()
    by_shown = {r["submission"]: r for key in ("a", "b") for r in finished[key][0]}
    results = {name: by_shown[gradebook.shown(f"{name}.ipynb")] for name in fixtures}
    problems = []
    for name, f in fixtures.items():
        r = results[name]
        if r["status"] not in f.statuses or not f.low <= r["score"] <= f.high:
            by_exercise = {t["exercise"]: 0.0 for t in r["tests"]}
            for t in r["tests"]:
                by_exercise[t["exercise"]] += t["score"]
            problems.append(
                f"{name}: {r['status']} {r['score']} (expected {sorted(f.statuses)}, {f.low}..{f.high}) "
                f"by exercise {by_exercise}: {r['reason'][:300]}"
            )
    (library,) = finished["lib"][0]
    if library["status"] not in ("ok", "cell_error") or library["score"] != 0:
        problems.append(
            f"library_answers: {library['status']} {library['score']} (expected 0): {library['reason'][:300]}"
        )
    assert not problems, "\n".join(problems)
    assert not left, f"processes outlived the grading: {left}"
    assert all(canary_alive), "the grader killed a process that was not its own"
    # the gradebooks: a row per submission, one seed per run, no formulas, nothing forged
    seeds = {}
    for key, out in runs.items():
        graded = finished[key][0]
        text = (out / "gradebook.csv").read_text(errors="replace")
        rows = list(csv.reader(text.splitlines()))
        assert len(rows) == len(graded) + 1, f"{key}: {len(rows) - 1} rows for {len(graded)} submissions"
        assert not any(c[:1] in ("=", "+", "-", "@") for row in rows for c in row), "a gradebook cell starts a formula"
        assert "correct.ipynb,ok,13,13" not in text
        seeds[key] = {r["seed"] for r in graded}
        assert len(seeds[key]) == 1
        assert out.stat().st_mode & 0o777 == 0o755, "the grader changed the mode of an existing output folder"
        assert finished[key][1] < 1_000_000, f"{key}: the grader's memory peaked at {finished[key][1] / 1e6:.1f} GB"
    assert seeds["a"] != seeds["b"], "two runs drew their hidden inputs from the same seed"
    assert not list((base / "tmp").iterdir()), f"temporary folders were left behind: {list((base / 'tmp').iterdir())}"
    # the tests' lines say nothing the student's code wrote; nowhere is a hidden input spelled out
    leak = results["leak_inputs"]
    rows_text = "\n".join(line for line in leak["feedback_text"].splitlines() if line.startswith("- "))
    shown = [v for v in _hidden_values(load(gf.NAME), leak, 4) if v in rows_text]
    shown += [v for v in _hidden_values(load(gf.NAME), leak, 6) if v in leak["feedback_text"]]
    assert not shown, f"the feedback shows hidden inputs: {shown[:5]}"
    assert results["honest_duplicated_answer"]["warnings"], "the duplicated answer cell went unmentioned"
    GRADED[user] = results
    other = GRADED.get("root" if user == "unprivileged" else "unprivileged")
    if other is not None:
        differ = [
            name
            for name in fixtures
            if (results[name]["status"], [t["score"] for t in results[name]["tests"]])
            != (other[name]["status"], [t["score"] for t in other[name]["tests"]])
        ]
        assert not differ, f"root and unprivileged grading disagree on {differ}"
    if user == "unprivileged":
        shutil.rmtree(base, ignore_errors=True)


def test_fork_bomb_verdict_does_not_depend_on_load(tmp_path):
    """The fork bomb's verdict with a CPU hog per core running beside the grader (finding 11).

    The verdict must be the one the suite expects on a quiet machine: the hogs take most of the
    CPU, which stretches wall-clock time but not the CPU seconds the limits count.
    """
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    (submissions / "fork_bomb.ipynb").write_text(json.dumps(gf.fork_bomb()))
    expected = gf.points("distances")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        (result,) = grader.grade_folder(submissions, gf.NAME, tmp_path / "graded", grader.Settings(**SETTINGS))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert (result["status"], result["score"]) == ("cell_error", expected), result["reason"]
