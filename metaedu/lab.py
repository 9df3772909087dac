"""``metaedu lab``: open the lecture notebooks in JupyterLab, with this Python as the kernel.

The one thing that goes wrong when a course is opened live is the kernel: the
lecture notebooks name the standard ``python3`` kernel (so do papermill and
``metaedu run``), and a ``python3`` kernel spec found first on Jupyter's search
path may start some *other* interpreter, one without ``metaedu`` or torch.
The installed spec often says just ``python``, which means whatever ``PATH`` or
pyenv picks at that moment.

So the server started here gets a private Jupyter data folder (under
``cache_dir()/jupyter``) placed first on ``JUPYTER_PATH``, holding a ``python3``
kernel spec whose command is the absolute path of the interpreter running
``metaedu lab``. The notebooks open without a "select kernel" dialog and their
kernel imports the same ``metaedu`` as the command line. Nothing in the
user's own Jupyter folders is written or changed.

The browser tests start their server through :func:`server_command` too, so
what they check is what the instructor gets.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

#: The kernel name the lecture notebooks carry in their metadata.
KERNEL_NAME = "python3"
#: Shown in JupyterLab's kernel indicator, so the instructor sees which kernel runs.
KERNEL_DISPLAY_NAME = "Python 3 (metaedu)"


def find_lectures(folder: str | os.PathLike | None = None) -> Path:
    """Return the lectures folder: ``folder`` if given, else ``./lectures``, else the checkout's.

    Raises ``FileNotFoundError`` naming every place looked at when none exists.
    """
    if folder is not None:
        candidates = [Path(folder).expanduser()]
    else:
        candidates = [Path.cwd() / "lectures", Path(__file__).resolve().parents[1] / "lectures"]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"no lectures folder found (looked at {looked}); run from the metaedu checkout or pass --dir FOLDER"
    )


def kernel_spec(python: str | os.PathLike = sys.executable) -> dict:
    """The ``kernel.json`` content that starts an IPython kernel with ``python``."""
    python = str(python)
    if not os.path.isabs(python):
        raise ValueError(f"the kernel's interpreter must be an absolute path, got {python!r}")
    return {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNEL_DISPLAY_NAME,
        "language": "python",
        "metadata": {"debugger": True},
    }


def write_kernel_spec(jupyter_dir: str | os.PathLike, python: str | os.PathLike = sys.executable) -> Path:
    """Write ``<jupyter_dir>/kernels/python3/kernel.json`` for ``python``; return that file.

    Rewritten only when its content differs, so a running server is not disturbed.
    """
    path = Path(jupyter_dir) / "kernels" / KERNEL_NAME / "kernel.json"
    text = json.dumps(kernel_spec(python), indent=1) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def server_env(jupyter_dir: str | os.PathLike, base: dict | None = None) -> dict:
    """A copy of ``base`` (default: this process's environment) with ``jupyter_dir`` first on ``JUPYTER_PATH``.

    ``JUPYTER_PATH`` has the highest priority on Jupyter's search path, so the
    ``python3`` spec written there wins over the user's and the system's.
    """
    env = dict(os.environ if base is None else base)
    rest = env.get("JUPYTER_PATH")
    env["JUPYTER_PATH"] = str(jupyter_dir) + (os.pathsep + rest if rest else "")
    return env


def server_command(
    root: str | os.PathLike,
    port: int | None = None,
    token: str | None = None,
    open_browser: bool = True,
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """The command line that serves ``root`` with JupyterLab from this Python.

    ``token=None`` keeps JupyterLab's own random token (printed in its log);
    ``port=None`` lets it pick (8888, or the next free one).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"JupyterLab root folder {root} does not exist")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={root.resolve()}",
        f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}",
        f"--ServerApp.open_browser={open_browser}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # containers often run as root; JupyterLab refuses that without being told
        argv.append("--ServerApp.allow_root=True")
    if port is not None:
        argv.append(f"--ServerApp.port={int(port)}")
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    return argv + list(extra)


def default_jupyter_dir() -> Path:
    """Where ``metaedu lab`` keeps its private kernel spec."""
    from metaedu.runtime import cache_dir

    return cache_dir() / "jupyter"


def missing_frontend_pieces() -> list[str]:
    """Python packages whose absence would leave the lectures' widgets unrendered."""
    needed = {"jupyterlab": "jupyterlab", "ipykernel": "ipykernel", "ipywidgets": "ipywidgets",
              "jupyterlab_widgets": "jupyterlab_widgets (the widget renderer for JupyterLab)"}
    return [label for module, label in needed.items() if importlib.util.find_spec(module) is None]


def _lab(args: argparse.Namespace) -> int:
    missing = missing_frontend_pieces()
    if missing:
        print(f"metaedu lab: missing {', '.join(missing)}; install with  pip install -e .", file=sys.stderr)
        return 2
    try:
        root = find_lectures(args.dir)
    except FileNotFoundError as err:
        print(f"metaedu lab: {err}", file=sys.stderr)
        return 2
    jupyter_dir = default_jupyter_dir()
    spec = write_kernel_spec(jupyter_dir)
    argv = server_command(root, port=args.port, token=args.token, open_browser=not args.no_browser)
    env = server_env(jupyter_dir)
    print(f"lectures: {root}")
    print(f"kernel:   {KERNEL_NAME} -> {sys.executable}  (spec {spec})")
    print("command:  " + " ".join(argv))
    if args.print_command:
        return 0
    sys.stdout.flush()
    if os.name == "posix":
        os.execve(argv[0], argv, env)  # JupyterLab takes over this process: Ctrl+C stops it as usual
    import subprocess

    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:
        return 130


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``metaedu lab`` on the command line's sub-commands."""
    lab = sub.add_parser("lab", help="open the lecture notebooks in JupyterLab (kernel = this Python)")
    lab.add_argument("--dir", metavar="FOLDER", help="folder to serve (default: ./lectures or the checkout's)")
    lab.add_argument("--port", type=int, help="port (default: JupyterLab's choice, 8888 or the next free one)")
    lab.add_argument("--token", help="access token (default: a random one, printed by JupyterLab)")
    lab.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    lab.add_argument("--print-command", action="store_true", help="show the command and kernel, start nothing")
    lab.set_defaults(func=_lab)
