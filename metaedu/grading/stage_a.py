"""Stage A, run inside the sandbox: execute ``submission.ipynb`` with papermill.

Reports ``{"status", "reason"}`` as one JSON line on the report descriptor the sandbox passed
(``METAEDU_REPORT_FD``). The grader takes the notebook's status from that report alone (finding
10 of issue 17), so the student's kernel must not be able to write it: this runner makes itself
non-dumpable before the kernel starts (other processes of the sandbox, which all run as the same
user, can then neither open its ``/proc/<pid>/fd`` nor trace it), and the descriptor is not
inherited by the kernel. A kernel that kills this runner leaves no report: the grader then
records a dead kernel.

The kernel starts with :data:`KERNEL_GUARD` as an IPython startup file: when the student's code
forks the kernel (``os.fork()``), a copy that finishes or fails its cell stops itself there
(SIGSTOP; it is killed with the sandbox), before it formats a traceback or answers on the
kernel's channels. Copies that went on would all format tracebacks and answer the frontend at
once, and copies that exited would free process slots for the others to refill: either way the
notebook's outcome would depend on how the machine scheduled them.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

PR_SET_DUMPABLE = 4

KERNEL_GUARD = """\
import os as _os
import signal as _signal


def _metaedu_forked_copies_stop():
    shell = get_ipython()
    kernel_pid = _os.getpid()

    def stop_if_copy(*_args, **_kwargs):
        while _os.getpid() != kernel_pid:
            _os.kill(_os.getpid(), _signal.SIGSTOP)

    def on_error(self, etype, value, tb, tb_offset=None):
        stop_if_copy()
        self.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)

    shell.set_custom_exc((Exception,), on_error)
    shell.events.register("post_execute", stop_if_copy)


_metaedu_forked_copies_stop()
del _metaedu_forked_copies_stop
"""


def _install_kernel_guard() -> None:
    """A private IPython folder whose startup file is :data:`KERNEL_GUARD` (the kernel inherits it)."""
    folder = os.path.abspath(".ipython")
    startup = os.path.join(folder, "profile_default", "startup")
    os.makedirs(startup, exist_ok=True)
    with open(os.path.join(startup, "00-metaedu-grading.py"), "w") as fh:
        fh.write(KERNEL_GUARD)
    os.environ["IPYTHONDIR"] = folder


def _private_report() -> int:
    """The report descriptor, kept from the kernel: not inherited, and this process not dumpable."""
    fd = int(os.environ.pop("METAEDU_REPORT_FD"))
    os.set_inheritable(fd, False)
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "cannot make the notebook's runner non-dumpable")
    return fd


def run(params: dict) -> tuple[str, str]:
    """Execute the notebook; (status, reason)."""
    _install_kernel_guard()
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            "submission.ipynb",
            os.devnull,  # outputs are not kept: the grader never trusts them
            parameters=params["parameters"],
            kernel_name=params["kernel"],
            execution_timeout=int(params["wall_s"]),
            progress_bar=False,
            request_save_on_cell_execute=False,
            start_timeout=120,
            cwd=".",
        )
    except PapermillExecutionError as err:
        status = "oom" if err.ename == "MemoryError" else "cell_error"
        return status, f"cell {err.cell_index}: {err.ename}: {err.evalue}"
    except CellTimeoutError:
        return "timeout", f"a cell ran longer than {params['wall_s']:.0f} s (wall clock)"
    except DeadKernelError as err:
        return "kernel_died", f"the kernel died: {err}"
    return "ok", ""


def main() -> int:
    report = _private_report()
    try:
        status, reason = run(json.load(open("params.json")))
    except MemoryError:
        status, reason = "oom", "out of memory while running the notebook"
    except BaseException as err:  # noqa: BLE001 - reported, never raised past the sandbox
        status, reason = "harness_error", f"{err.__class__.__name__}: {err}"
    os.write(report, (json.dumps({"status": status, "reason": reason[:1000]}) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
