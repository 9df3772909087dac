"""Run one untrusted command in isolation: the grader's only way to execute students' code.

:func:`run` starts the command in a bubblewrap sandbox (:mod:`metaedu.grading.isolation` says what
it sees) with limits for the submission as a whole (:mod:`metaedu.grading.limits`), watches it,
and returns when it and everything it started are gone:

1. a private staging folder (mode 0700) holds the inputs, the files the sandbox binds, the
   command's log and its **report**: a file the command writes through an inherited file
   descriptor (number in ``METAEDU_REPORT_FD``); the sandbox cannot name that file, so only a
   process that inherited the descriptor can write it. The staging folder is deleted afterwards;
2. :mod:`metaedu.grading.launch` sets the per-process limits inside the sandbox (CPU, address
   space, processes -- counted per user namespace --, file size, open files) and starts the command;
3. the grader watches a few times a second: the **CPU seconds** of all the sandbox's processes
   together against the budget, a **wall-clock** backstop (only code that sleeps or waits
   reaches it), and the memory and process count of the whole sandbox (a cgroup's limits where
   the grader may make one, else the watchdog's). The first limit reached ends the sandbox;
4. ending it kills the sandbox's pid 1, and with it every process of its pid namespace: double
   forks and new sessions included, nothing outlives the run. Nothing is found or killed by uid.

Time limits are CPU seconds so that a verdict does not depend on the machine's load: a notebook
that needs 5 CPU seconds uses 5 whether it gets a whole core or a tenth of one.

Without bubblewrap the grader refuses to run students' code unless told ``unsafe=True``
(``metaedu grade --unsafe-no-sandbox``): then the command runs with the same limits in a
temporary folder, with no isolation at all.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from metaedu.grading import isolation
from metaedu.grading import limits as limits_

POLL_S = 0.2
MB = 2**20


class SandboxUnavailable(RuntimeError):
    """No isolation is available here, and running without it was not asked for."""


@dataclass
class Limits:
    """Limits of one sandboxed command."""

    cpu_budget_s: float = 60.0  # CPU seconds of all its processes together (what decides a timeout)
    timeout_s: float = 300.0  # wall-clock backstop, for code that sleeps or waits
    memory_mb: int = 3072  # memory of the whole sandbox (cgroup or watchdog); also each process's address space
    nproc: int = 64  # processes and threads of the whole sandbox (a kernel has about 10 threads)
    cpu_s: int = 120  # CPU seconds of any one process (RLIMIT_CPU, a backstop)
    fsize_mb: int = 64  # largest file written (RLIMIT_FSIZE), the report and the log included
    nofile: int = 256  # open files per process
    tmp_mb: int = 256  # its private /tmp, where the working folder is
    shm_mb: int = 64  # its private /dev/shm
    report_mb: int = 32  # most of the report read back

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"sandbox limit {name} must be positive, got {value!r}")


@dataclass
class Outcome:
    returncode: int  # the command's exit code (128 + signal when killed); -1 when a limit ended it
    limit: str | None  # the limit that ended it: "cpu", "wall", "memory", "processes"; None if it finished
    seconds: float  # wall-clock seconds
    cpu_seconds: float  # CPU seconds of all its processes, as last measured
    report: bytes  # what the command wrote on its report descriptor (at most ``report_mb``)
    log: str  # the tail of its stdout and stderr
    isolation: str  # "bubblewrap" or "none"

    @property
    def timed_out(self) -> bool:
        return self.limit in ("cpu", "wall")


def isolation_available() -> str:
    """``"bubblewrap"`` when sandboxes can be built here, else ``"none"``."""
    return "none" if isolation.probe() else "bubblewrap"


def require_isolation(unsafe: bool = False) -> str:
    """The isolation runs will use; raises :class:`SandboxUnavailable` when there is none and not ``unsafe``."""
    problem = isolation.probe()
    if not problem:
        return "bubblewrap"
    if unsafe:
        return "none"
    raise SandboxUnavailable(
        f"cannot grade safely: {problem}. Install bubblewrap, or pass --unsafe-no-sandbox to "
        "run students' code with no isolation at all (they could read the hidden tests and "
        "other submissions, and change the grades)"
    )


def _env(extra: dict[str, str], work: str, report_fd: int) -> dict[str, str]:
    venv_bin = os.path.join(sys.prefix, "bin")
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "USER": "student",
        "LOGNAME": "student",
        "HOME": work,
        "TMPDIR": "/tmp",
        "JUPYTER_RUNTIME_DIR": os.path.join(work, ".jupyter-runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": os.path.join(work, ".ipython"),
        "MPLCONFIGDIR": os.path.join(work, ".matplotlib"),
        "MPLBACKEND": "Agg",
        "METAEDU_CACHE": os.path.join(work, ".metaedu-cache"),
        "METAEDU_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": os.path.dirname(isolation.PACKAGE),
        "METAEDU_REPORT_FD": str(report_fd),
    }
    env.update(extra)
    return env


def run(
    command: list[str],
    inputs: dict[str, bytes],
    limits: Limits,
    hide_modules: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    unsafe: bool = False,
) -> Outcome:
    """Run ``command`` in a sandbox whose working folder holds ``inputs`` (name -> bytes)."""
    how = require_isolation(unsafe)
    staging = Path(tempfile.mkdtemp(prefix="metaedu-sandbox-"))
    try:
        return _run(staging, how, command, inputs, limits, hide_modules, env or {})
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run(staging: Path, how: str, command, inputs, limits: Limits, hide_modules, extra_env) -> Outcome:
    (staging / "in").mkdir()
    for name, data in inputs.items():
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"bad input file name {name!r}")
        (staging / "in" / name).write_bytes(data)
    work = isolation.WORK if how == "bubblewrap" else str(staging / "work")
    report = os.open(staging / "report", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    group = None
    try:
        config = {
            "limits": asdict(limits),
            "inputs": isolation.INPUTS if how == "bubblewrap" else str(staging / "in"),
            "work": work,
            "command": command,
            "env": _env(extra_env, work, report),
        }
        argv = [sys.executable, "-I", "-S", isolation.LAUNCHER, json.dumps(config)]
        if how == "bubblewrap":
            isolation.prepare(staging)
            argv = isolation.command(staging, argv, limits.tmp_mb * MB, limits.shm_mb * MB, hide_modules)
        group = limits_.Cgroup.create(f"metaedu-{os.urandom(6).hex()}", limits.memory_mb * MB, limits.nproc)
        argv = (group.enter_prefix() if group else []) + argv
        start = time.monotonic()
        with open(staging / "log", "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(report,),
                start_new_session=True,
            )
        os.close(report)
        report = -1
        limit, cpu = _watch(proc, group, limits, start, how)
    finally:
        if report >= 0:
            os.close(report)
        if group:
            group.remove()
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    with open(staging / "report", "rb") as fh:
        data = fh.read(limits.report_mb * MB)
    with open(staging / "log", "rb") as fh:
        fh.seek(max(0, os.fstat(fh.fileno()).st_size - 4000))
        tail = fh.read().decode("utf-8", "replace")
    return Outcome(-1 if limit else code, limit, time.monotonic() - start, cpu, data, tail, how)


def _watch(proc: subprocess.Popen, group, limits: Limits, start: float, how: str) -> tuple[str | None, float]:
    """Wait for the sandbox to end or reach a limit (then end it); return (limit reached, CPU seconds)."""
    cpu, limit, pids = 0.0, None, [proc.pid]
    while not _reaped(proc):
        pids = group.pids() if group else limits_.descendants(proc.pid)
        cpu = max(cpu, limits_.cpu_seconds(pids))
        if cpu > limits.cpu_budget_s:
            limit = "cpu"
        elif time.monotonic() - start > limits.timeout_s:
            limit = "wall"
        elif group and group.oom_killed():
            limit = "memory"
        elif not group and _over_memory(pids, limits.memory_mb * MB):
            limit = "memory"
        elif not group and limits_.threads(pids) > limits.nproc + 8:  # RLIMIT_NPROC should stop it first
            limit = "processes"
        if limit:
            break
        time.sleep(POLL_S)
    if group and group.oom_killed():  # the kernel killed a process for memory just before the end
        limit = limit or "memory"
    _end(proc, pids if how == "none" else [])
    return limit, max(cpu, getattr(proc, "cpu_seconds", 0.0))


def _reaped(proc: subprocess.Popen, block: bool = False) -> bool:
    """Wait for ``proc`` (with ``wait4``, which also gives the CPU time of everything it reaped)."""
    if proc.returncode is not None:
        return True
    pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return False
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.cpu_seconds = usage.ru_utime + usage.ru_stime
    return True


def _over_memory(pids: list[int], limit: int) -> bool:
    return limits_.resident_bytes(pids) > limit and limits_.proportional_bytes(pids) > limit


def _end(proc: subprocess.Popen, pids: list[int]) -> None:
    """Kill what is left of the sandbox and wait for it.

    With bubblewrap, killing its first process takes the sandbox's pid 1 down (``--die-with-parent``),
    and the kernel then kills every process of the pid namespace (``pids`` is empty). Without it,
    the process tree last seen (``pids``) is killed too. ``proc`` is never waited for before
    this, so its pid cannot have been reused.
    """
    alive = not _reaped(proc)
    if alive:
        for pid in pids:
            if pid != proc.pid:
                _kill(pid)
        _kill(proc.pid)
        _reaped(proc, block=True)
    deadline = time.monotonic() + 5
    while alive and time.monotonic() < deadline and any(_running(pid) for pid in pids if pid != proc.pid):
        time.sleep(0.02)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
