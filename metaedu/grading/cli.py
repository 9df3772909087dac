"""``metaedu assign`` and ``metaedu grade`` (registered by :mod:`metaedu.commands`)."""

from __future__ import annotations

import argparse


def _assign(args: argparse.Namespace) -> int:
    from metaedu.grading.notebook import assign

    for notebook in args.notebooks:
        target = assign(notebook, args.out)
        print(f"student version written to {target}")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from metaedu.grading.grader import Settings, grade_folder, summary
    from metaedu.grading.sandbox import mode

    settings = Settings(jobs=args.jobs, stage_a_cpu_s=args.cpu_limit, progress=not args.no_progress)
    print(f"sandbox: {mode()}")
    results = grade_folder(args.submissions, args.assignment, args.out, settings)
    print(summary(results))
    print(f"gradebook written to {args.out}/gradebook.csv")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from metaedu.grading.spec import available

    assign = sub.add_parser("assign", help="write the student version of notebooks (solutions stubbed, hidden tests removed)")
    assign.add_argument("notebooks", nargs="+", help="solution or lecture notebook(s) with exercise markers")
    assign.add_argument("--out", required=True, help="folder for the student versions")
    assign.set_defaults(func=_assign)

    grade = sub.add_parser("grade", help="grade a folder of submitted notebooks in isolation into a gradebook")
    grade.add_argument("submissions", help="folder holding the submitted .ipynb files")
    grade.add_argument("--assignment", required=True, choices=available(), help="which assignment they answer")
    grade.add_argument("--out", required=True, help="folder for gradebook.csv and per-submission results")
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    grade.add_argument("--cpu-limit", type=float, default=None,
                       help="CPU seconds a whole notebook may use, all its processes together (default: the assignment's)")
    grade.add_argument("--no-progress", action="store_true", help="no progress bar")
    grade.set_defaults(func=_grade)
