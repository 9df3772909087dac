"""What a sandbox sees: the bubblewrap (``bwrap``) command line, an allow-list.

Bubblewrap (Debian package ``bubblewrap``) builds the sandbox from nothing; it works as root and,
through user namespaces, as an unprivileged user. The sandbox gets only:

* the system's programs and libraries, read-only: ``/usr``, the ``/bin``, ``/lib``... links or
  folders, the dynamic loader's cache, and passwd/group files naming only the sandbox's user;
* the Python installation, read-only: the base interpreter (``sys.base_prefix``) and, of a
  virtual environment, its ``bin``, ``pyvenv.cfg``, ``share`` and ``site-packages`` -- never the
  environment's folder as a whole, since the README's one lives in the checkout;
* the ``metaedu`` package folder, read-only, with ``grading/assignments`` (solutions and hidden
  tests) replaced by an empty folder and each module the assignment hides replaced by a stub
  that refuses to be imported (with its compiled copies in ``__pycache__``);
* its inputs, read-only at ``/run/metaedu/in``; a private ``/tmp`` of limited size (the working
  folder is ``/tmp/work``), a private ``/dev/shm``, a read-only ``/dev`` with the usual devices,
  and its own ``/proc``, which shows only the sandbox's processes.

No home folder, checkout, ``.git``, other submission or grader output is there: a bound folder
that holds a ``.git`` is refused. Every namespace is new -- user, pid, network (loopback only),
IPC (System V shared memory), UTS, mount and cgroup -- and the sandbox may not make user
namespaces of its own. The command runs as uid 1000 of its user namespace (the grader's own
user outside it, without capabilities), in a new session, and dies with the grader.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import metaedu

SANDBOX_UID = 1000
INPUTS = "/run/metaedu/in"  # where the inputs appear inside the sandbox
WORK = "/tmp/work"  # the command's working folder inside the sandbox
PACKAGE = os.path.dirname(os.path.abspath(metaedu.__file__))
LAUNCHER = os.path.join(PACKAGE, "grading", "launch.py")


class IsolationError(RuntimeError):
    """The sandbox cannot be built on this machine (the message says why)."""


def bwrap() -> str | None:
    """The bubblewrap program (``METAEDU_BWRAP`` overrides the search of ``PATH``)."""
    return os.environ.get("METAEDU_BWRAP") or shutil.which("bwrap")


def _system() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def python_folders() -> list[str]:
    """The folders of the Python installation the sandbox needs, shortest first, none inside another."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    if sys.prefix != sys.base_prefix:  # a virtual environment: only its parts, never its folder
        for part in ("bin", "pyvenv.cfg", "share"):
            if os.path.exists(os.path.join(sys.prefix, part)):
                paths.add(os.path.abspath(os.path.join(sys.prefix, part)))
        paths.update(os.path.abspath(p) for p in site.getsitepackages() if os.path.isdir(p))
    kept: list[str] = []
    for path in sorted(paths, key=len):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    for path in kept:
        if os.path.isdir(path) and os.path.exists(os.path.join(path, ".git")):
            raise IsolationError(
                f"the Python installation folder {path} is a git repository; the sandbox would show it"
            )
    return kept


def module_path(name: str) -> str:
    """The file (or package folder) of module ``name``, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.origin:
        raise ValueError(f"the assignment hides module {name!r}, which does not exist")
    return os.path.dirname(spec.origin) if spec.submodule_search_locations else spec.origin


def _package(hide_modules: tuple[str, ...], stub: str) -> list[str]:
    args = ["--ro-bind", PACKAGE, PACKAGE]  # the package folder only, never the checkout around it
    assignments = os.path.join(PACKAGE, "grading", "assignments")
    if os.path.isdir(assignments):
        args += ["--tmpfs", assignments]
    for name in hide_modules:
        path = module_path(name)
        if os.path.isdir(path):
            args += ["--tmpfs", path, "--ro-bind", stub, os.path.join(path, "__init__.py")]
        else:
            args += ["--ro-bind", stub, path]
            cache = os.path.join(os.path.dirname(path), "__pycache__")
            if os.path.isdir(cache):
                args += ["--tmpfs", cache]
    return args


def command(
    staging: Path, argv: list[str], tmp_bytes: int, shm_bytes: int, hide_modules: tuple[str, ...] = ()
) -> list[str]:
    """The bwrap command line that runs ``argv`` in a sandbox built from ``staging``.

    ``staging`` holds ``in/`` (the inputs), ``passwd``, ``group`` and ``hidden.py`` (the stub
    that replaces hidden modules); see :func:`prepare`.
    """
    program = bwrap()
    if not program:
        raise IsolationError("bubblewrap (bwrap) is not installed")
    args = [
        program,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
    ]
    args += _system()
    for folder in python_folders():
        args += ["--ro-bind", folder, folder]
    if sys.prefix != sys.base_prefix and os.path.islink(os.path.join(sys.prefix, "lib64")):
        args += ["--symlink", os.readlink(os.path.join(sys.prefix, "lib64")), os.path.join(sys.prefix, "lib64")]
    args += _package(hide_modules, str(staging / "hidden.py"))
    args += ["--ro-bind", str(staging / "passwd"), "/etc/passwd", "--ro-bind", str(staging / "group"), "/etc/group"]
    args += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(shm_bytes),
        "--tmpfs",
        "/dev/shm",
        "--remount-ro",
        "/dev",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        "/tmp",
        "--ro-bind",
        str(staging / "in"),
        INPUTS,
    ]
    return args + ["--", *argv]


def prepare(staging: Path) -> None:
    """Write the files :func:`command` binds into the sandbox (besides the inputs)."""
    (staging / "passwd").write_text(f"student:x:{SANDBOX_UID}:{SANDBOX_UID}:student:{WORK}:/bin/sh\n")
    (staging / "group").write_text(f"student:x:{SANDBOX_UID}:\n")
    (staging / "hidden.py").write_text(
        'raise ImportError("this part of the course library is not available while this homework is graded: '
        'the exercise asks you to write it yourself")\n'
    )


@functools.lru_cache(maxsize=1)
def probe() -> str:
    """``""`` when a sandbox can be built here, else the reason it cannot (checked once)."""
    import tempfile

    if not bwrap():
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    staging = Path(tempfile.mkdtemp(prefix="metaedu-probe-"))
    try:
        (staging / "in").mkdir()
        prepare(staging)
        argv = command(
            staging, [sys.executable, "-I", "-S", "-c", "import os; os.stat('/run/metaedu/in')"], 2**20, 2**20
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, IsolationError, subprocess.TimeoutExpired) as err:
        return f"bubblewrap cannot build the sandbox: {err}"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if done.returncode != 0:
        return (
            f"bubblewrap cannot build the sandbox here: {done.stderr.strip()[-500:] or f'exit code {done.returncode}'}"
        )
    return ""
