"""``metaedu assign`` and ``metaedu grade`` (registered by :mod:`metaedu.commands`)."""

from __future__ import annotations

import argparse
import sys


def _assign(args: argparse.Namespace) -> int:
    from metaedu.grading.notebook import assign

    for notebook in args.notebooks:
        target = assign(notebook, args.out)
        print(f"student version written to {target}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from metaedu.grading import shards

    if args.submissions or args.shard:
        raise ValueError("--merge joins graded shard folders: give no folder of submissions and no --shard")
    done = shards.merge(args.merge, args.out)
    print(f"merged {len(args.merge)} shard folder(s) of {done['count']}: {done['graded']} submissions graded")
    print(f"gradebook written to {args.out}/gradebook.csv")
    if done["missing"]:
        print(
            f"metaedu grade: {len(done['missing'])} submission(s) have no result (rows with status not_graded); "
            f"shards to run again: {sorted({index for _, index in done['missing']})}",
            file=sys.stderr,
        )
        for name, index in done["missing"]:
            print(f"  {name} (shard {index}/{done['count']})", file=sys.stderr)
        return 1
    return 0


def _grade(args: argparse.Namespace) -> int:
    from metaedu.grading import limits, sandbox, shards
    from metaedu.grading.grader import Settings, grade_folder, summary

    if args.merge:
        return _merge(args)
    if not args.submissions or not args.assignment:
        raise ValueError("give the folder of submissions and --assignment (or --merge SHARD_FOLDER...)")
    settings = Settings(
        jobs=args.jobs,
        stage_a_cpu_s=args.cpu_limit,
        memory_mb=args.memory_mb,
        seed=args.seed,
        unsafe_no_sandbox=args.unsafe_no_sandbox,
        shard=shards.parse(args.shard) if args.shard else None,
        progress=not args.no_progress,
    )
    try:
        how = sandbox.require_isolation(args.unsafe_no_sandbox)
    except sandbox.SandboxUnavailable as err:
        print(f"metaedu grade: {err}", file=sys.stderr)
        return 2
    if how == "none":
        print("sandbox: NONE -- students' code runs with no isolation (--unsafe-no-sandbox)", file=sys.stderr)
    else:
        print(f"sandbox: bubblewrap; per-submission limits: {limits.mechanism()}")
    results = grade_folder(args.submissions, args.assignment, args.out, settings)  # bad input: metaedu.cli's one line
    print(summary(results))
    print(f"gradebook written to {args.out}/gradebook.csv")
    if settings.shard:
        print(f"shard {args.shard}: join the shards with metaedu grade --merge SHARD_FOLDER... --out FOLDER")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from metaedu.grading.spec import available

    assign = sub.add_parser(
        "assign", help="write the student version of notebooks (solutions stubbed, hidden tests removed)"
    )
    assign.add_argument("notebooks", nargs="+", help="solution or lecture notebook(s) with exercise markers")
    assign.add_argument("--out", required=True, help="folder for the student versions")
    assign.set_defaults(func=_assign)

    grade = sub.add_parser("grade", help="grade a folder of submitted notebooks in isolation into a gradebook")
    grade.add_argument("submissions", nargs="?", help="folder holding the submitted .ipynb files")
    grade.add_argument("--assignment", choices=available(), help="which assignment they answer")
    grade.add_argument("--out", required=True, help="folder for gradebook.csv and per-submission results")
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    grade.add_argument(
        "--cpu-limit",
        type=float,
        default=None,
        help="CPU seconds a whole notebook may use, all its processes together (default: the assignment's)",
    )
    grade.add_argument(
        "--memory-mb", type=int, default=3072, help="memory of one submission, all its processes together"
    )
    grade.add_argument(
        "--seed", type=int, default=None, help="seed of the hidden tests' inputs (default: a fresh one per run)"
    )
    grade.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="grade even where bubblewrap cannot isolate students' code (no isolation at all)",
    )
    grade.add_argument(
        "--shard",
        metavar="I/N",
        help="grade only the I-th of N shares of the submissions, by sorted name (needs --seed)",
    )
    grade.add_argument(
        "--merge",
        nargs="+",
        metavar="SHARD_FOLDER",
        help="merge the --out folders of shards into one gradebook at --out",
    )
    grade.add_argument("--no-progress", action="store_true", help="no progress bar")
    grade.set_defaults(func=_grade)
