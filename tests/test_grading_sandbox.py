"""The grader's sandbox on small commands (no kernel): what it shows, its limits, what it leaves.

Each test runs a few short commands in real bubblewrap sandboxes. The limits are checked with
the cgroups the grader makes where it may (root here) and with the watchdog it falls back to.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from metaedu.grading import isolation, limits, sandbox
from metaedu.grading.spec import load

REPO = Path(__file__).resolve().parents[1]
PY = [sys.executable, "-c"]


def _report(code: str) -> str:
    """Python source that runs ``code`` (which fills the dict ``seen``) and reports ``seen``."""
    return (
        "import json, os\nseen = {}\n"
        + textwrap.dedent(code)
        + "\nos.write(int(os.environ['METAEDU_REPORT_FD']), json.dumps(seen).encode())\n"
    )


def _seen(outcome: sandbox.Outcome) -> dict:
    assert outcome.limit is None and outcome.returncode == 0, outcome.log
    return json.loads(outcome.report)


@pytest.fixture(params=["cgroup", "watchdog"])
def mechanism(request, monkeypatch):
    """Per-submission limits through a cgroup, then through the watchdog (no cgroup)."""
    if request.param == "watchdog":
        monkeypatch.setattr(limits.Cgroup, "create", classmethod(lambda cls, *a: None))
        return request.param
    probe = limits.Cgroup.create(f"metaedu-test-{os.getpid()}", 2**30, 64)
    if probe is None:
        pytest.skip("this user may not make cgroups here")
    probe.remove()
    return request.param


def test_the_sandbox_sees_only_what_it_needs():
    """No checkout, .git, hidden tests or home; its own /proc, hostname, loopback-only network (findings 1, 2, 12)."""
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen(1)

    def answer():
        try:
            server.accept()[0].sendall(b"hello")
        except OSError:  # closed at the end of the test: nobody connected
            pass

    threading.Thread(target=answer, daemon=True).start()
    assignment = load("episodes_protonet")
    hidden = [
        str(REPO / ".git"),
        str(REPO / "README.md"),
        str(assignment.folder / "grader_tests.py"),
        str(assignment.solution),
    ]
    roots = [str(REPO), os.path.expanduser("~"), "/"]
    code = _report(f"""
        import socket, _socket, subprocess
        seen["visible"] = [p for p in {hidden!r} if os.path.exists(p)]
        seen["entries"] = [os.path.join(r, e) for r in {roots!r} if os.path.isdir(r) for e in os.listdir(r)]
        seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        seen["host"] = socket.gethostname()
        seen["uid"] = os.getuid()
        seen["git"] = subprocess.run(["git", "-C", {str(REPO)!r}, "log", "-1"], capture_output=True).returncode
        seen["net"] = []
        for module in (socket, _socket):
            try:
                s = module.socket(module.AF_INET, module.SOCK_STREAM)
                s.settimeout(2)
                s.connect(("127.0.0.1", {server.getsockname()[1]}))
                seen["net"].append(module.__name__)
            except OSError:
                pass
        import metaedu.grading.checks  # the package itself is there
        seen["dev"] = os.access("/dev", os.W_OK)
    """)
    seen = _seen(sandbox.run(PY + [code], {}, sandbox.Limits(cpu_budget_s=30)))
    server.close()
    assert seen["visible"] == [] and seen["git"] != 0
    # the checkout and the home folder hold only the way to the bound folders
    allowed = isolation.python_folders() + [isolation.PACKAGE]
    for entry in seen["entries"]:
        if not entry.startswith(("/usr", "/bin", "/sbin", "/lib", "/etc", "/proc", "/dev", "/tmp", "/run")):
            assert any(a == entry or a.startswith(entry.rstrip("/") + "/") for a in allowed), (
                f"the sandbox shows {entry}"
            )
    assert len(seen["pids"]) <= 4 and seen["host"] == "sandbox" and seen["uid"] == isolation.SANDBOX_UID
    assert seen["net"] == [] and seen["dev"] is False


def test_hidden_library_modules_are_stubs():
    """The memory homework cannot be answered by importing the library's LRUA code (finding 12)."""
    hidden = load("lrua_memory").hidden_modules
    assert hidden == ("metaedu.algorithms.mann",)
    path = isolation.module_path(hidden[0])  # a package folder, or a module file
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    code = _report(f"""
        import glob
        try:
            from metaedu.algorithms.mann import least_used_weights
            seen["import"] = "imported"
        except ImportError as err:
            seen["import"] = str(err)
        seen["left"] = [p for p in glob.glob({folder!r} + "/**", recursive=True)
                        if "mann" in p and (p.endswith((".py", ".pyc")) and "least_used" in open(p, "rb").read().decode("latin-1"))]
    """)
    seen = _seen(sandbox.run(PY + [code], {}, sandbox.Limits(cpu_budget_s=30), hide_modules=hidden))
    assert "not available while this homework is graded" in seen["import"]
    assert seen["left"] == []


def test_cpu_budget_and_wall_clock_backstop():
    busy = sandbox.run(PY + ["while True: pass"], {}, sandbox.Limits(cpu_budget_s=1, timeout_s=120))
    assert busy.limit == "cpu" and busy.timed_out and 1 <= busy.cpu_seconds < 5
    idle = sandbox.run(["sleep", "100"], {}, sandbox.Limits(cpu_budget_s=30, timeout_s=1))
    assert idle.limit == "wall" and idle.seconds < 30


def test_memory_is_limited_per_submission(mechanism):
    """Three children of 150 MB each, every one under the per-process limit of 300 MB (finding 4)."""
    child = "import time; b = b'x' * (150 * 2**20); print('ready', flush=True); time.sleep(100)"
    code = f"""
import subprocess, sys
kids = [subprocess.Popen([sys.executable, "-c", {child!r}], stdout=subprocess.PIPE) for _ in range(3)]
for k in kids:
    k.stdout.readline()
for k in kids:
    k.wait()
"""
    outcome = sandbox.run(PY + [code], {}, sandbox.Limits(cpu_budget_s=60, timeout_s=120, memory_mb=300))
    assert outcome.limit == "memory", (outcome.limit, outcome.log)


def test_processes_are_limited_per_submission(mechanism):
    code = _report("""
        import time
        children = 0
        try:
            for _ in range(200):
                if os.fork() == 0:
                    time.sleep(100)
                    os._exit(0)
                children += 1
        except OSError as err:
            seen["error"] = err.errno
        seen["children"] = children
        time.sleep(3)  # long enough for a watchdog to see them all
    """)
    outcome = sandbox.run(PY + [code], {}, sandbox.Limits(cpu_budget_s=60, timeout_s=60, nproc=20))
    if outcome.limit is None:  # the kernel refused the fork: cgroup, or RLIMIT_NPROC for a user other than root
        seen = json.loads(outcome.report)
        assert seen["error"] == 11 and seen["children"] < 20
    else:  # the watchdog (root is exempt from RLIMIT_NPROC)
        assert mechanism == "watchdog" and os.geteuid() == 0 and outcome.limit == "processes"


def test_nothing_outlives_the_sandbox_and_nothing_is_shared(tmp_path, monkeypatch):
    """Daemons die with it, System V segments do not reach the next one, its staging folder goes (findings 2, 6, 12)."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    mark = f"metaedu-test-{os.getpid()}"
    code = f"""
import ctypes, os, subprocess
subprocess.Popen(["setsid", "sh", "-c", "sleep 1000; echo {mark}"])
if os.fork() == 0:
    os.setsid()
    os.execvp("sleep", ["sleep", "1001", "{mark}"])
libc = ctypes.CDLL(None)
print("segment", libc.shmget(4242, 4096, 0o1666))
"""
    first = sandbox.run(PY + [code], {}, sandbox.Limits(cpu_budget_s=30))
    assert "segment" in first.log and "segment -1" not in first.log, first.log
    second = sandbox.run(
        PY + ["import ctypes; print('found', ctypes.CDLL(None).shmget(4242, 0, 0))"],
        {},
        sandbox.Limits(cpu_budget_s=30),
    )
    assert "found -1" in second.log
    left = [p for p in os.listdir("/proc") if p.isdigit() and mark.encode() in _cmdline(p)]
    assert left == [] and list(tmp_path.iterdir()) == []
    host_keys = [line.split()[0] for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
    assert "4242" not in host_keys


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_report_is_bounded_and_inputs_arrive():
    code = textwrap.dedent("""
        import json, os
        fd = int(os.environ["METAEDU_REPORT_FD"])
        os.write(fd, json.dumps({"input": open("in.txt").read(), "cwd": os.getcwd()}).encode())
        os.write(fd, b"x" * (3 * 2**20))
    """)
    outcome = sandbox.run(PY + [code], {"in.txt": b"hello"}, sandbox.Limits(cpu_budget_s=30, report_mb=1))
    assert len(outcome.report) == 2**20 and outcome.report.startswith(b'{"input": "hello", "cwd": "/tmp/work"}')


def test_without_bubblewrap_grading_is_refused_unless_unsafe(tmp_path, monkeypatch, capsys):
    """No isolation available: the grader refuses, and runs unisolated only when told to (finding 2)."""
    from metaedu.cli import main as cli_main

    monkeypatch.setenv("METAEDU_BWRAP", str(tmp_path / "no-bwrap"))
    isolation.probe.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="unsafe-no-sandbox"):
            sandbox.run(PY + ["pass"], {}, sandbox.Limits())
        (tmp_path / "subs").mkdir()
        (tmp_path / "subs" / "a.ipynb").write_text("{}")
        assert (
            cli_main(
                ["grade", str(tmp_path / "subs"), "--assignment", "episodes_protonet", "--out", str(tmp_path / "out")]
            )
            == 2
        )
        assert "bubblewrap" in capsys.readouterr().err and not (tmp_path / "out").exists()
        unsafe = sandbox.run(PY + [_report("seen['ok'] = True")], {}, sandbox.Limits(cpu_budget_s=30), unsafe=True)
        assert unsafe.isolation == "none" and _seen(unsafe) == {"ok": True}
    finally:
        isolation.probe.cache_clear()
