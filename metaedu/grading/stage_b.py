"""Stage B, run inside the sandbox: load the student's definitions and call them on the grader's inputs.

Inputs (written by the grader): ``cells.json`` (the setup, added and answer cells' sources) and
``probes.json`` (for each test: the function it calls and its arguments, arrays encoded as in
:mod:`metaedu.grading.transfer`). Output: one JSON line per event on the report descriptor
(``METAEDU_REPORT_FD``), written as it happens -- ``{"cell_error": k, "kind": name}``,
``{"result": i, "values": [array, ...]}`` (float64) or ``{"error": i, "kind": name}`` -- so that
what came before a crash is kept. Nothing here compares or scores: the grader does that in its
own process, and names an exception only if it is a built-in one. The student's code runs in
this process and could write on the descriptor too: it can only make up values, which is what
answering the exercise means anyway.

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

from metaedu.grading import transfer


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


def _argument(kind: str, value):
    import torch

    if kind == "tensor":
        return torch.from_numpy(transfer.decode(value))
    return {"int": int, "float": float, "bool": bool}[kind](value)


def main() -> int:
    import torch

    torch.set_num_threads(1)
    fd = int(os.environ.pop("METAEDU_REPORT_FD"))

    def say(event: dict) -> None:
        os.write(fd, (json.dumps(event) + "\n").encode())

    cells = json.load(open("cells.json"))
    probes = json.load(open("probes.json"))
    namespace: dict = {"__name__": "__main__"}
    for index, source in enumerate(cells["sources"]):
        try:
            exec(compile(source, f"<cell {index}>", "exec"), namespace)  # noqa: S102 - the student's code, sandboxed
        except BaseException as err:  # noqa: BLE001
            _only_the_runner_goes_on()
            say({"cell_error": index, "kind": err.__class__.__name__})
        _only_the_runner_goes_on()
    for probe in probes:
        i = probe["index"]
        try:
            args = [_argument(kind, value) for kind, value in zip(probe["kinds"], probe["args"])]
            function = namespace.get(probe["function"])
            if not callable(function):
                raise NameError(f"{probe['function']} is not defined")
            torch.manual_seed(probe["seed"])
            try:
                value = function(*args)
            finally:
                _only_the_runner_goes_on()
            say({"result": i, "values": [transfer.encode(a) for a in _to_arrays(value)]})
        except BaseException as err:  # noqa: BLE001
            _only_the_runner_goes_on()
            say({"error": i, "kind": err.__class__.__name__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
