"""Stage A, run inside the sandbox: execute ``submission.ipynb`` with papermill.

Writes ``out/stage_a.json`` ({"status", "reason"}). That file comes from the student's
sandbox, so the grader uses it only to explain what happened, never to score.

The kernel starts with :data:`KERNEL_GUARD` as an IPython startup file: when the student's code
forks the kernel (``os.fork()``), a copy that finishes or fails its cell stops itself there
(SIGSTOP; it is killed with the sandbox), before it formats a traceback or answers on the
kernel's channels. Copies that went on would all format tracebacks and answer the frontend at
once, and copies that exited would free process slots for the others to refill: either way the
notebook's outcome would depend on how the machine scheduled them.
"""

from __future__ import annotations

import errno
import json
import os
import sys


REPORT, REPORT_BYTES = "out/stage_a.json", 4096

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


def main() -> int:
    params = json.load(open("params.json"))
    # reserve the report's space first: a notebook that fills the disk must not silence it
    with open(REPORT, "wb") as fh:
        fh.write(b" " * REPORT_BYTES)
    status, reason = "ok", ""
    try:
        _install_kernel_guard()
        import papermill
        from nbclient.exceptions import CellTimeoutError, DeadKernelError
        from papermill.exceptions import PapermillExecutionError

        try:
            papermill.execute_notebook(
                "submission.ipynb", os.devnull,  # outputs are not kept: the grader never trusts them
                parameters=params["parameters"], kernel_name=params["kernel"],
                execution_timeout=int(params["wall_s"]), progress_bar=False, request_save_on_cell_execute=False,
                start_timeout=120, cwd=".",
            )
        except PapermillExecutionError as err:
            status = "oom" if err.ename == "MemoryError" else "cell_error"
            reason = f"cell {err.cell_index}: {err.ename}: {err.evalue}"
        except CellTimeoutError:
            status, reason = "timeout", f"a cell ran longer than {params['wall_s']:.0f} s (wall clock)"
        except DeadKernelError as err:
            status, reason = "kernel_died", f"the kernel died: {err}"
    except MemoryError:
        status, reason = "oom", "out of memory while running the notebook"
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EFBIG):
            status, reason = "harness_error", f"{err.__class__.__name__}: {err}"
        else:  # the notebook filled its disk or wrote a file over the size limit
            status, reason = "cell_error", f"the notebook filled the disk: {err}"
    except BaseException as err:  # noqa: BLE001 - reported, never raised past the sandbox
        status, reason = "harness_error", f"{err.__class__.__name__}: {err}"
    text = json.dumps({"status": status, "reason": reason[:1000]}, ensure_ascii=True).encode()
    fd = os.open(REPORT, os.O_WRONLY)  # overwrite the reserved bytes in place (no new blocks needed)
    try:
        os.pwrite(fd, text.ljust(REPORT_BYTES)[:REPORT_BYTES], 0)
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
