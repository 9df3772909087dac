"""Run one untrusted command in isolation: the grader's only way to execute students' code.

Used by the grader (parent side, :func:`run`) and started as ``python -m
metaedu.grading.sandbox CONFIG`` (jail side, :func:`_jail`). Standard library only.

**Namespaces mode** (Linux, grader running as root -- checked by :func:`mode`):

1. the jail calls ``unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)`` and forks a supervisor,
   pid 1 of a new pid namespace: when it dies the kernel kills every process left in the
   namespace, so nothing a submission starts (double forks, ``setsid`` included) outlives it;
2. the supervisor (still root) makes all mounts private, brings up the loopback interface
   of the empty network namespace (the kernel and papermill talk over 127.0.0.1; nothing
   else is reachable), mounts small private ``tmpfs`` on ``/tmp``, ``/var/tmp``, ``/dev/shm``
   and ``/run/lock``, hides the home folder (keeping the Python installation) and the
   ``hide`` folders (the assignments' solutions and hidden tests, the submissions, the
   grader's output) under empty ``tmpfs``, and copies the inputs into ``/tmp/work``;
3. the command runs in a child with ``setrlimit`` limits (CPU time, address space,
   processes, file size, open files), a new session, no supplementary groups and an
   unprivileged uid of its own (``61000 + slot``), so it cannot write the grader's files or
   undo the mounts, and ``RLIMIT_NPROC`` counts only its processes;
4. the supervisor enforces the stage's limits -- a budget of CPU seconds used by all the
   sandbox's processes together, and a wall-clock backstop for code that sleeps or waits --
   then kills everything in the namespace, copies regular files from ``/tmp/work/out`` back
   (size-capped) and exits.

Time limits are counted in CPU seconds so that a verdict does not depend on how loaded the
machine is: a notebook that needs 5 CPU seconds uses 5 whether it gets a whole core or a
tenth of one. The wall-clock bound only catches code that does not use the CPU (sleeping,
waiting on a lock) and is set well above the CPU budget.

The parent adds a wall-clock bound that kills the jail's process group, and afterwards kills
any process still running under the sandbox uid (there should be none).

**Basic mode** (not root, or no namespaces): the same limits, a new session and process
group, a temporary working folder, a ``sitecustomize`` that refuses non-loopback socket
connections; processes are found afterwards by a token in their environment.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MS_MOVE = 8192
PR_SET_PDEATHSIG = 1
UID_BASE = 61000
TIMEOUT_CODE = 124  # the supervisor's exit code when the stage ran past its wall-clock backstop
CPU_CODE = 125  # the supervisor's exit code when the stage used up its CPU budget
PR_SET_CHILD_SUBREAPER = 36
MAX_OUTPUT_BYTES = 32 * 2**20  # what is copied back from a sandbox, in all


@dataclass
class Limits:
    """Resource limits of one sandboxed command (each applies to every process it starts)."""

    cpu_s: int = 120  # RLIMIT_CPU per process (a backstop: the stage's budget below decides)
    memory_mb: int = 3072  # RLIMIT_AS per process (torch maps ~1 GB of address space)
    nproc: int = 64  # RLIMIT_NPROC: processes and threads of the sandbox uid (a kernel has about 10 threads)
    fsize_mb: int = 64  # RLIMIT_FSIZE: largest file written
    nofile: int = 512  # RLIMIT_NOFILE
    cpu_budget_s: float = 60.0  # CPU seconds of all the sandbox's processes together, enforced by the supervisor
    timeout_s: float = 300.0  # wall-clock backstop for code that does not use the CPU, enforced by the supervisor
    tmp_mb: int = 256  # size of the private /tmp


@dataclass
class Outcome:
    returncode: int  # the command's exit code, 128 + signal when killed, TIMEOUT_CODE / CPU_CODE past a limit
    timed_out: bool  # the stage used up its CPU budget or ran past its wall-clock backstop
    seconds: float
    out_dir: Path  # files the command left in ./out
    log: str  # the tail of the command's stdout and stderr
    mode: str


def mode() -> str:
    """``"namespaces"`` where the full isolation is available, else ``"basic"``."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "basic"
    probe = subprocess.run(
        [sys.executable, "-c", "import ctypes,sys; sys.exit(ctypes.CDLL(None, use_errno=True).unshare(0x40020000) != 0)"],
        capture_output=True,
    )
    return "namespaces" if probe.returncode == 0 else "basic"


# ---------------------------------------------------------------- parent side


def run(command: list[str], inputs: dict[str, bytes], limits: Limits, slot: int = 0,
        hide: tuple[Path, ...] = (), env: dict[str, str] | None = None, grace_s: float = 30.0) -> Outcome:
    """Run ``command`` in a sandbox whose working folder holds ``inputs`` (name -> bytes).

    Returns when the command and everything it started are gone.
    """
    how = _MODE if _MODE else _set_mode()
    base = Path(tempfile.mkdtemp(prefix="metaedu-sandbox-"))
    os.chmod(base, 0o700)
    (base / "in").mkdir()
    (base / "out").mkdir()
    for name, data in inputs.items():
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad input file name {name!r}")
        (base / "in" / name).write_bytes(data)
    token = os.urandom(8).hex()
    uid = UID_BASE + slot
    config = {
        "command": command, "limits": asdict(limits), "uid": uid, "base": str(base), "token": token,
        "hide": [str(p) for p in hide], "env": _child_env(env or {}, token, how), "mode": how,
    }
    (base / "config.json").write_text(json.dumps(config))
    log_path = base / "log.txt"
    start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "metaedu.grading.sandbox", str(base / "config.json")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=str(base), env=_jail_env(),
        )
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout_s + grace_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _killpg(proc.pid)
            proc.wait()
    _killpg(proc.pid)
    kill_strays(uid if how == "namespaces" else None, token)
    seconds = time.monotonic() - start
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    timed_out = timed_out or code in (TIMEOUT_CODE, CPU_CODE)
    with open(log_path, "rb") as fh:
        fh.seek(max(0, log_path.stat().st_size - 4000))
        tail = fh.read().decode("utf-8", "replace")
    out = Path(tempfile.mkdtemp(prefix="metaedu-out-"))
    for item in (base / "out").iterdir():
        if item.is_file() and not item.is_symlink():
            shutil.copyfile(item, out / item.name)
    shutil.rmtree(base, ignore_errors=True)
    return Outcome(code, timed_out, seconds, out, tail, how)


_MODE: str | None = None


def _set_mode() -> str:
    global _MODE
    _MODE = mode()
    return _MODE


def _jail_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "TZ")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _child_env(extra: dict[str, str], token: str, how: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "USER": "student", "LOGNAME": "student",
        "HOME": "/tmp/work", "TMPDIR": "/tmp", "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime", "IPYTHONDIR": "/tmp/ipython",
        "MPLCONFIGDIR": "/tmp/matplotlib", "MPLBACKEND": "Agg", "METAEDU_CACHE": "/tmp/metaedu-cache",
        "METAEDU_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1", "JUPYTER_PLATFORM_DIRS": "1", "METAEDU_SANDBOX_TOKEN": token,
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra)
    return env


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def processes(uid: int | None = None, token: str | None = None) -> list[int]:
    """Pids of live processes run by ``uid`` or carrying ``token`` in their environment (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if uid is not None:
                with open(f"/proc/{entry}/status") as fh:
                    for line in fh:
                        if line.startswith("Uid:") and int(line.split()[1]) == uid:
                            found.append(int(entry))
                            break
                    else:
                        pass
                if found and found[-1] == int(entry):
                    continue
            if token is not None:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if f"METAEDU_SANDBOX_TOKEN={token}".encode() in fh.read():
                        found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def kill_strays(uid: int | None, token: str | None) -> int:
    """Kill (SIGKILL) every process of the sandbox that is still alive; return how many there were."""
    killed = 0
    for _ in range(20):
        pids = processes(uid, token)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.05)
    return killed


# ---------------------------------------------------------------- jail side


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, 0x8913, request))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 0x1, b""))  # SIOCSIFFLAGS, IFF_UP


def _set_limits(limits: dict) -> None:
    import resource

    mb = 2**20
    for kind, value in (
        (resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 5)),
        (resource.RLIMIT_AS, (limits["memory_mb"] * mb,) * 2),
        (resource.RLIMIT_NPROC, (limits["nproc"],) * 2),
        (resource.RLIMIT_FSIZE, (limits["fsize_mb"] * mb,) * 2),
        (resource.RLIMIT_NOFILE, (limits["nofile"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(kind, value)


def _prepare_mounts(cfg: dict) -> None:
    """Private /tmp, home and scratch folders; the Python installation and the course package stay visible.

    The interpreter (a virtual environment, pyenv) and an editable checkout of the package may live
    under /tmp or the home folder (CI clones anywhere). Such folders are bind-mounted to a staging
    area first, the private tmpfs's are mounted over /tmp and home, and the kept folders are moved
    back to their old paths; the ``hide`` folders are covered last.
    """
    libc = _libc()
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _loopback_up()
    home = os.path.expanduser("~")
    covered = ["/tmp"] + ([home] if home not in ("/", "") and os.path.isdir(home) else [])
    needed = (sys.prefix, sys.base_prefix, sys.exec_prefix, _package_root())
    keep = sorted({top for root in covered for top in (_top_under(p, root) for p in needed) if top})
    staging = "/mnt/.metaedu-keep"
    if keep:
        os.makedirs(staging, exist_ok=True)
        _mount(libc, "tmpfs", staging, "tmpfs", 0, "size=1m,mode=0755")
    staged = []
    for i, path in enumerate(keep):
        stage = os.path.join(staging, str(i))
        os.mkdir(stage)
        _mount(libc, path, stage, None, MS_BIND | MS_REC)
        staged.append((stage, path))
    _mount(libc, "tmpfs", "/tmp", "tmpfs", 0, f"size={cfg['limits']['tmp_mb']}m,mode=1777")
    if len(covered) > 1:
        _mount(libc, "tmpfs", home, "tmpfs", 0, "size=1m,mode=0755")
    for stage, path in staged:
        os.makedirs(path, exist_ok=True)
        _mount(libc, stage, path, None, MS_MOVE)
    for path in ("/var/tmp", "/dev/shm", "/run/lock"):
        if os.path.isdir(path):
            _mount(libc, "tmpfs", path, "tmpfs", 0, "size=16m,mode=1777")
    for path in cfg["hide"]:
        if os.path.isdir(path):
            _mount(libc, "tmpfs", path, "tmpfs", 0, "size=1m,mode=0755")


def _package_root() -> str:
    """The folder that holds the ``metaedu`` package (a checkout, for an editable install)."""
    import metaedu

    return os.path.dirname(os.path.dirname(os.path.abspath(metaedu.__file__)))


def _top_under(path: str, home: str) -> str | None:
    path, home = os.path.realpath(path), os.path.realpath(home)
    if not path.startswith(home.rstrip("/") + "/"):
        return None
    return os.path.join(home, os.path.relpath(path, home).split(os.sep)[0])


def _copy_out(src_dir: str, dst_fd: int) -> None:
    """Copy regular files (no links, no folders) from the sandbox's ./out, within a size budget."""
    budget = MAX_OUTPUT_BYTES
    try:
        names = os.listdir(src_dir)
    except OSError:
        return
    for name in sorted(names)[:1000]:
        try:
            fd = os.open(os.path.join(src_dir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as src:
            info = os.fstat(src.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > budget:
                continue
            data = src.read(budget)
        budget -= len(data)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dst_fd)
        with os.fdopen(out, "wb") as dst:
            dst.write(data)


def _supervise(cfg: dict, namespaced: bool) -> int:
    """Start the command, wait for it within the time limit, kill what is left, copy the outputs."""
    base = cfg["base"]
    inputs = {name: Path(base, "in", name).read_bytes() for name in os.listdir(os.path.join(base, "in"))}
    out_fd = os.open(os.path.join(base, "out"), os.O_RDONLY | os.O_DIRECTORY)
    if namespaced:
        _prepare_mounts(cfg)
        work = "/tmp/work"
    else:
        work = os.path.join(base, "work")
        _write_socket_guard(os.path.join(base, "guard"))
        cfg["env"]["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(base, "guard"), cfg["env"].get("PYTHONPATH")]))
    os.makedirs(os.path.join(work, "out"), exist_ok=True)
    for name, data in inputs.items():
        Path(work, name).write_bytes(data)
    uid = cfg["uid"]
    if namespaced:
        for root, dirs, files in os.walk(work):
            for name in dirs + files + [""]:
                os.chown(os.path.join(root, name), uid, uid)
        os.chmod(work, 0o700)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.chdir(work)
            _set_limits(cfg["limits"])
            if namespaced:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            os.execve(cfg["command"][0], cfg["command"], cfg["env"])
        except BaseException as err:  # noqa: BLE001
            sys.stderr.write(f"sandbox: could not start the command: {err}\n")
        finally:
            os._exit(127)
    deadline = time.monotonic() + cfg["limits"]["timeout_s"]
    budget, next_count = cfg["limits"]["cpu_budget_s"], 0.0
    code = None
    while code is None:
        try:
            done, status = os.waitpid(-1, os.WNOHANG)  # orphans come to this process too: reap them all
        except ChildProcessError:
            break
        if done == pid:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
        elif done == 0:
            now = time.monotonic()
            if now > deadline:
                code = TIMEOUT_CODE
                break
            if now >= next_count:  # counting reads /proc: a few times a second is enough
                next_count = now + 0.2
                if cpu_seconds(uid if namespaced else None, None if namespaced else cfg["token"]) > budget:
                    code = CPU_CODE
                    break
            time.sleep(0.05)
    if namespaced:
        try:
            os.kill(-1, signal.SIGKILL)  # pid 1 of the namespace: everything but itself
        except ProcessLookupError:
            pass
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        kill_strays(None, cfg["token"])
    _copy_out(os.path.join(work, "out"), out_fd)
    if not namespaced:
        shutil.rmtree(work, ignore_errors=True)
    return TIMEOUT_CODE if code is None else code


def _write_socket_guard(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    Path(folder, "sitecustomize.py").write_text(
        "import socket as _s\n"
        "_orig = _s.socket.connect\n"
        "def _guard(self, address, _orig=_orig):\n"
        "    host = address[0] if isinstance(address, tuple) else ''\n"
        "    if self.family in (_s.AF_INET, _s.AF_INET6) and host not in ('127.0.0.1', '::1', 'localhost'):\n"
        "        raise PermissionError('network access is blocked while grading')\n"
        "    return _orig(self, address)\n"
        "_s.socket.connect = _guard\n"
        "_s.socket.connect_ex = _guard\n"
    )


def cpu_seconds(uid: int | None, token: str | None) -> float:
    """CPU seconds used so far by this supervisor's sandbox: its reaped descendants and the live ones.

    Every process the command starts ends up reaped by the supervisor (pid 1 of the namespace, or
    a child subreaper), so its own children's usage holds every finished process; live processes
    are added from /proc (``utime + stime`` and what they reaped themselves, ``cutime + cstime``).
    """
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in processes(uid, token):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def _jail(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # if the grader dies, so does the sandbox
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of the command are reaped here (and counted)
    if cfg["mode"] != "namespaces":
        return _supervise(cfg, namespaced=False)
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
    pid = os.fork()  # the child is pid 1 of the new pid namespace
    if pid == 0:
        code = 70
        try:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            code = _supervise(cfg, namespaced=True)
        except BaseException as err:  # noqa: BLE001
            sys.stderr.write(f"sandbox: supervisor failed: {err!r}\n")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(_jail(sys.argv[1]))
