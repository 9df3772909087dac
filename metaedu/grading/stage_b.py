"""Stage B, run inside the sandbox: load the student's definitions and call them on the grader's inputs.

Inputs (written by the grader): ``cells.json`` (the setup and answer cells' sources),
``probes.json`` (which function each test calls and the kinds of its arguments) and
``args_<i>.npz`` (the argument arrays). Outputs: ``out/result_<i>.npz`` (the returned
values as float64 arrays) and ``out/stage_b.json`` (errors, for feedback). Nothing here
compares or scores: the grader does that in its own process with what comes back.

Forked copies: the student's code runs in this process, so ``os.fork()`` in a cell or a
function makes copies of the runner. A copy that comes back into the runner's code (its cell
or call returned or raised) stops itself there (SIGSTOP) and is killed with the sandbox, so
only the original process goes on to the next cell and writes results. A stopped copy keeps
its process slot: a fork bomb fills the sandbox's process limit once, every copy's next fork
fails and each copy stops, instead of copies exiting and others refilling the freed slots for
as long as the machine's scheduling lets them. What comes back, and the CPU time it costs,
therefore do not depend on how the copies were scheduled.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np


def _to_arrays(value) -> list[np.ndarray]:
    import torch

    items = value if isinstance(value, (tuple, list)) else [value]
    if len(items) > 16:
        raise ValueError("returned more than 16 values")
    out = []
    for item in items:
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().to(torch.float64).numpy()
        array = np.array(item, dtype=np.float64)  # anything that is not numeric fails here
        if array.size > 1_000_000:
            raise ValueError("returned an array of more than a million values")
        out.append(array)  # 0-d stays 0-d
    return out


RUNNER_PID = os.getpid()


def _only_the_runner_goes_on() -> None:
    """Stop a forked copy of this runner (the student forked) for good; the runner itself goes on."""
    while os.getpid() != RUNNER_PID:
        os.kill(os.getpid(), signal.SIGSTOP)


def main() -> int:
    import torch

    torch.set_num_threads(1)
    cells = json.load(open("cells.json"))
    probes = json.load(open("probes.json"))
    report = {"cell_errors": [], "errors": {}}
    namespace: dict = {"__name__": "__main__"}
    for index, source in enumerate(cells["sources"]):
        try:
            exec(compile(source, f"<cell {index}>", "exec"), namespace)  # noqa: S102 - the student's code, sandboxed
        except BaseException as err:  # noqa: BLE001
            report["cell_errors"].append(f"cell {index}: {err.__class__.__name__}: {str(err)[:300]}")
        _only_the_runner_goes_on()
    for probe in probes:
        i = probe["index"]
        try:
            with np.load(f"args_{i}.npz", allow_pickle=False) as data:
                arrays = [data[f"a{k}"] for k in range(len(probe["kinds"]))]
            args = []
            for kind, array in zip(probe["kinds"], arrays):
                if kind == "tensor":
                    args.append(torch.from_numpy(array.copy()))
                else:
                    args.append({"int": int, "float": float, "bool": bool}[kind](array.item()))
            function = namespace.get(probe["function"])
            if not callable(function):
                raise NameError(f"{probe['function']} is not defined")
            torch.manual_seed(probe["seed"])
            try:
                value = function(*args)
            finally:
                _only_the_runner_goes_on()
            arrays_out = _to_arrays(value)
            np.savez(f"out/result_{i}.npz", **{f"r{k}": a for k, a in enumerate(arrays_out)})
        except BaseException as err:  # noqa: BLE001
            text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            report["errors"][str(i)] = f"{err.__class__.__name__}: {text}" if text else err.__class__.__name__
    with open("out/stage_b.json", "w") as fh:
        json.dump(report, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
