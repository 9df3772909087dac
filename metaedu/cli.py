"""The ``metaedu`` command: ``metaedu data``, ``run``, ``lab``, ``assign``, ``grade``, ``bench``.

**One error boundary.** Whatever the sub-command, a bad argument or a missing path ends the same
way: one line on stderr naming the problem (``metaedu grade: no folder of submissions at /x``)
and exit status 2. Three things make it so:

* the parser prints one line for a malformed command line (:class:`CommandParser`);
* options that several sub-commands share (``--device``, ``--jobs``, ``--cell-timeout``) are
  checked in :func:`check_shared_options` before a command starts any work (a kernel, a sandbox);
* :func:`main` turns the errors that mean bad input (``ValueError``, ``FileNotFoundError`` and
  the other path errors) into that line. ``METAEDU_TRACEBACK=1`` shows the traceback instead.

Sub-commands other than ``data`` live in their own modules (:mod:`metaedu.commands`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

#: Errors that mean the input was wrong (a value, a path), not that the program is.
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class CommandParser(argparse.ArgumentParser):
    """An argument parser that reports a malformed command line in one line, then exits with 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _check_device(value: str) -> None:
    from metaedu.runtime import get_device

    try:
        get_device(value)
    except RuntimeError as err:  # a device this machine lacks
        raise ValueError(str(err)) from None


def _at_least_one(name: str):
    def check(value) -> None:
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")

    return check


#: Options several sub-commands share, checked once here before any of them starts work.
SHARED_OPTIONS = {"device": _check_device, "jobs": _at_least_one("jobs"), "cell_timeout": _at_least_one("cell_timeout")}


def check_shared_options(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the first shared option whose value cannot work."""
    for name, check in SHARED_OPTIONS.items():
        value = getattr(args, name, None)
        if value is not None:
            check(value)


def _data(args: argparse.Namespace) -> int:
    if args.what == "glyphs":
        from metaedu.data.glyphs import load_glyphs

        start = time.perf_counter()
        data = load_glyphs(seed=args.seed, size=args.size)
        took = time.perf_counter() - start
        built = data.load_seconds == 0.0
        print(data.summary())
        print(
            f"{'built in' if built else 'loaded from cache in'} {took:.2f} s"
            + ("" if built else f" (first build took {data.build_seconds:.1f} s)")
        )
        if args.preview:
            import matplotlib

            matplotlib.use("Agg")
            from metaedu.viz.images import glyph_gallery

            fig = glyph_gallery(data, side=args.side)
            fig.savefig(args.preview, dpi=110, bbox_inches="tight")
            print(f"gallery written to {args.preview}")
        return 0
    if args.what == "digits":
        from metaedu.data.digits import load_digits

        print(load_digits())
        return 0
    raise AssertionError(args.what)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="metaedu", description="An interactive course on meta-learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or show a data set")
    data.add_argument("what", choices=["glyphs", "digits"])
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--size", type=int, default=28, help="image side in pixels (28, or 105 like Omniglot)")
    data.add_argument("--preview", metavar="FILE", help="write a gallery of alphabets x characters x drawers (PNG)")
    data.add_argument("--side", choices=["background", "evaluation"], default="background")
    data.set_defaults(func=_data)

    from metaedu import commands

    commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; bad input ends in one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        check_shared_options(args)
        return int(args.func(args) or 0)
    except INPUT_ERRORS as err:
        if os.environ.get("METAEDU_TRACEBACK"):
            raise
        message = str(err) or type(err).__name__
        if isinstance(err, OSError) and err.filename and str(err.filename) not in message:
            message = f"{message}: {err.filename}"
        print(f"metaedu {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
