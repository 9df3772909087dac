"""Per-submission limits: a cgroup where the grader may make one, else a watchdog over /proc.

A sandbox's memory and process count are limited for the submission as a whole, not per
process (finding 4 of issue 17: three children of 2 GB each passed a per-process limit).

* **cgroups** (where writable: root on most machines, or a delegated cgroup): a child of the
  grader's own cgroup per sandbox, with ``memory`` and ``pids`` limits -- cgroup v1 (separate
  ``memory`` and ``pids`` hierarchies, as on hybrid machines) or v2 (one unified hierarchy, where
  the grader's cgroup must have both controllers enabled for its children). The kernel charges
  everything the submission holds (tmpfs files, shared memory) and fails its forks at the limit;
  the grader ends the sandbox as soon as the kernel reports an out-of-memory kill.
* **watchdog** (otherwise): the grader sums the proportional set size (PSS: shared pages counted
  once) and the threads of the sandbox's process tree a few times a second and ends the sandbox
  above the limit. Forks are then limited by ``RLIMIT_NPROC``, which the kernel counts per user
  namespace, so per sandbox -- except for root, whom the kernel exempts: a root grader without
  cgroups has only the watchdog's count, which sees processes a few times a second. Memory not
  mapped by any process (a System V segment nobody has attached, a file on the sandbox's tmpfs)
  is not seen by the watchdog; the tmpfs is small.

CPU time is counted the same way in both: ``utime + stime`` of every live process of the sandbox
plus ``cutime + cstime`` (what each has reaped), which covers every finished process because the
sandbox's pid 1 reaps all orphans.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------ cgroups


def _own_cgroup(controller: str | None) -> str | None:
    """This process's cgroup path in the hierarchy of ``controller`` (None: the v2 unified one)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        number, controllers, path = line.split(":", 2)
        if (controller is None and number == "0") or (controller is not None and controller in controllers.split(",")):
            return path
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


class Cgroup:
    """The cgroup(s) of one sandbox; :meth:`create` returns None where none can be made."""

    def __init__(self, folders: list[Path], version: int):
        self.folders, self.version = folders, version

    @classmethod
    def create(cls, name: str, memory_bytes: int, nproc: int) -> "Cgroup | None":
        unified = CGROUP_ROOT / "cgroup.controllers"
        if unified.is_file():  # a v2-only machine
            own = _own_cgroup(None)
            return cls._make([(CGROUP_ROOT, own)], name, 2, memory_bytes, nproc) if own is not None else None
        places = [(CGROUP_ROOT / c, _own_cgroup(c)) for c in ("memory", "pids")]
        if any(p is None or not root.is_dir() for root, p in places):
            return None
        return cls._make(places, name, 1, memory_bytes, nproc)

    @classmethod
    def _make(cls, places, name: str, version: int, memory_bytes: int, nproc: int) -> "Cgroup | None":
        made: list[Path] = []
        try:
            for root, own in places:
                folder = root / own.lstrip("/") / name
                folder.mkdir()
                made.append(folder)
            group = cls(made, version)
            if version == 2:
                (folder,) = made
                if not (folder / "memory.max").exists() or not (folder / "pids.max").exists():
                    raise OSError("the memory and pids controllers are not enabled for the grader's cgroup")
                _write(folder / "memory.max", str(memory_bytes))
                if (folder / "memory.swap.max").exists():
                    _write(folder / "memory.swap.max", "0")
                _write(folder / "pids.max", str(nproc))
            else:
                memory, pids = made
                _write(memory / "memory.limit_in_bytes", str(memory_bytes))
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
                _write(pids / "pids.max", str(nproc))
            return group
        except OSError:
            for folder in reversed(made):
                try:
                    folder.rmdir()
                except OSError:
                    pass
            return None

    def enter_prefix(self) -> list[str]:
        """A command prefix that moves the command into the cgroup(s) before it starts."""
        script = (
            'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || { echo "sandbox: cannot enter $f" >&2; exit 126; }; '
            'shift; done; shift; exec "$@"'
        )
        return ["/bin/sh", "-c", script, "sh", *[str(f / "cgroup.procs") for f in self.folders], "--"]

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.folders[0] / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def oom_killed(self) -> bool:
        """Whether the kernel has killed a process of this cgroup for going over its memory limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            fields = dict(line.split() for line in (self.folders[0] / name).read_text().splitlines() if line.strip())
        except (OSError, ValueError):
            return False
        return int(fields.get("oom_kill", 0)) > 0

    def remove(self) -> None:
        """Kill whatever is left in the cgroup(s) and remove them."""
        for _ in range(200):
            left = [p for f in self.folders for p in _read_pids(f / "cgroup.procs")]
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                for folder in reversed(self.folders):
                    if folder.exists():
                        folder.rmdir()
                return
            except OSError:
                time.sleep(0.05)


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


# ------------------------------------------------------------------ the process tree (watchdog)


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from the parent pids in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of these processes and of everything they have reaped."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            continue
    return total / TICK


def threads(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                total += int(fh.read().rsplit(b")", 1)[1].split()[17])  # num_threads
        except (OSError, IndexError, ValueError):
            continue
    return total


def resident_bytes(pids: list[int]) -> int:
    """Resident memory of these processes (cheap, from ``statm``; pages they share count once per process)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def proportional_bytes(pids: list[int]) -> int:
    """Proportional set size of these processes: a page shared by n of them counts 1/n in each."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, IndexError, ValueError):
            continue
    return total


def mechanism() -> str:
    """How per-submission limits are kept on this machine, in words (for the grader's banner)."""
    group = Cgroup.create(f"metaedu-probe-{os.getpid()}", 2**30, 64)
    if group is None:
        return "a watchdog over each sandbox's processes (memory), RLIMIT_NPROC per sandbox (processes)"
    group.remove()
    return f"cgroup v{group.version} (memory and pids)"
