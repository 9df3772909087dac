"""``metaedu bench``: the speed and memory comparisons in ``benchmarks/``, by a short name.

Each ``benchmarks/<name>_<more>.py`` script prints its tables of ratios side by side;
``metaedu bench maml --device cuda`` runs ``benchmarks/maml_speed.py --device cuda`` in a
fresh Python (the one running this command) and prints exactly what the script prints.
``metaedu bench`` alone lists the benchmarks. The scripts ship with the checkout (like the
lectures), not inside the installed package.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import metaedu


def benchmarks_dir() -> Path:
    """The checkout's ``benchmarks/`` folder (beside the package), else ``./benchmarks``."""
    for folder in (Path(metaedu.__file__).resolve().parent.parent / "benchmarks", Path.cwd() / "benchmarks"):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        "no benchmarks/ folder: the benchmarks ship with the metaedu checkout; run this from a clone (pip install -e .)"
    )


def short_name(path: Path) -> str:
    """``maml_speed.py`` -> ``maml``: the script's name up to its first underscore."""
    return path.stem.split("_")[0]


def available() -> dict[str, Path]:
    """Every benchmark script by its short name."""
    scripts = sorted(p for p in benchmarks_dir().glob("*.py") if not p.name.startswith("_"))
    names: dict[str, Path] = {}
    for path in scripts:
        names.setdefault(short_name(path), path)
    return names


def find(name: str) -> Path:
    """The script a name stands for: its short name or its full file name (with or without ``.py``)."""
    scripts = available()
    for short, path in scripts.items():
        if name in (short, path.stem, path.name):
            return path
    raise ValueError(f"no benchmark named {name!r} (benchmarks: {', '.join(sorted(scripts)) or 'none'})")


def summary(path: Path) -> str:
    """The first line of a script's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _bench(args: argparse.Namespace) -> int:
    if not args.name:
        for short, path in available().items():
            print(f"{short:<10} {path.name:<24} {summary(path)}")
        return 0
    script = find(args.name)
    return subprocess.call([sys.executable, str(script), *args.script_args])


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run a benchmark from benchmarks/ (no name: list them)",
        description="Run a benchmark script; arguments after the name go to the script "
        "(metaedu bench maml --device cuda).",
    )
    p.add_argument("name", nargs="?", help="the benchmark's short name, e.g. maml (see metaedu bench)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=_bench)
