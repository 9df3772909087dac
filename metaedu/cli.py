"""The ``metaedu`` command: ``metaedu data glyphs``, ``metaedu run``, and the course's other tools."""

from __future__ import annotations

import argparse
import sys
import time


def _data(args: argparse.Namespace) -> int:
    if args.what == "glyphs":
        from metaedu.data.glyphs import load_glyphs

        start = time.perf_counter()
        data = load_glyphs(seed=args.seed, size=args.size)
        took = time.perf_counter() - start
        built = data.load_seconds == 0.0
        print(data.summary())
        print(f"{'built in' if built else 'loaded from cache in'} {took:.2f} s" + ("" if built else f" (first build took {data.build_seconds:.1f} s)"))
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
    parser = argparse.ArgumentParser(prog="metaedu", description="An interactive course on meta-learning.")
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
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
