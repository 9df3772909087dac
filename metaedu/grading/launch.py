"""Start a sandboxed command: its limits, its working folder, then the command itself.

Run as ``python -I -S launch.py CONFIG`` (standard library only, no site packages) as the first
process inside the sandbox; ``CONFIG`` is JSON with ``limits`` (see ``sandbox.Limits``),
``inputs`` (a read-only folder), ``work`` (the working folder to make), ``command`` and ``env``.
The limits are set here, inside the sandbox's user namespace, where the kernel counts
``RLIMIT_NPROC`` for this sandbox alone; they are inherited by everything the command starts.
"""

import json
import os
import resource
import shutil
import sys

MB = 2**20


def main(config: dict) -> None:
    limits = config["limits"]
    for kind, value in (
        (resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 5)),
        (resource.RLIMIT_AS, (limits["memory_mb"] * MB,) * 2),
        (resource.RLIMIT_NPROC, (limits["nproc"],) * 2),
        (resource.RLIMIT_FSIZE, (limits["fsize_mb"] * MB,) * 2),
        (resource.RLIMIT_NOFILE, (limits["nofile"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(kind, value)
    work = config["work"]
    os.makedirs(work, mode=0o700, exist_ok=True)
    for name in os.listdir(config["inputs"]):
        shutil.copyfile(os.path.join(config["inputs"], name), os.path.join(work, name))
    os.chdir(work)
    os.execvpe(config["command"][0], config["command"], config["env"])  # PATH of the command's environment


if __name__ == "__main__":
    try:
        main(json.loads(sys.argv[1]))
    except BaseException as err:  # noqa: BLE001 - reported on the sandbox's log
        sys.stderr.write(f"sandbox: could not start the command: {err!r}\n")
    os._exit(127)
