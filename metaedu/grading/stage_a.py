"""Stage A, run inside the sandbox: execute ``submission.ipynb`` with papermill.

Writes ``out/stage_a.json`` ({"status", "reason"}). That file comes from the student's
sandbox, so the grader uses it only to explain what happened, never to score.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    params = json.load(open("params.json"))
    status, reason = "ok", ""
    try:
        import papermill
        from nbclient.exceptions import CellTimeoutError, DeadKernelError
        from papermill.exceptions import PapermillExecutionError

        try:
            papermill.execute_notebook(
                "submission.ipynb", "executed.ipynb", parameters=params["parameters"], kernel_name=params["kernel"],
                execution_timeout=params["cell_timeout_s"], progress_bar=False, request_save_on_cell_execute=False,
                start_timeout=120, cwd=".",
            )
        except PapermillExecutionError as err:
            status = "oom" if err.ename == "MemoryError" else "cell_error"
            reason = f"cell {err.cell_index}: {err.ename}: {err.evalue}"
        except CellTimeoutError:
            status, reason = "timeout", f"a cell ran longer than {params['cell_timeout_s']} s"
        except DeadKernelError as err:
            status, reason = "kernel_died", f"the kernel died: {err}"
    except MemoryError:
        status, reason = "oom", "out of memory while running the notebook"
    except BaseException as err:  # noqa: BLE001 - reported, never raised past the sandbox
        status, reason = "harness_error", f"{err.__class__.__name__}: {err}"
    with open("out/stage_a.json", "w") as fh:
        json.dump({"status": status, "reason": reason[:2000]}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
