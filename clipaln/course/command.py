"""`clipaln course build OUT` and `clipaln course grade SUBMISSIONS`: parse, call, print."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..io import print_json, write_text
from ..parsing import COMMANDS, count
from .grading import CELL_TIMEOUT, totals

# editions and grading (nbformat, nbclient) are imported when a course command runs, not with the parser


def _notebooks(path: str) -> Path:
    root = Path(path).expanduser()
    if not (root / "quizzes.json").exists() or not (root / "solutions" / "answers.json").exists():
        raise FileNotFoundError(
            f"{root} is not the series' notebooks folder (no quizzes.json or solutions/answers.json): "
            "pass --notebooks PATH/TO/clipaln/notebooks (the notebooks are in the repository, not in the wheel)"
        )
    return root


def cmd_build(args: argparse.Namespace) -> None:
    out = Path(args.out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: choose a new folder (nothing was written)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    from .editions import build

    try:
        edition = build(_notebooks(args.notebooks), staging)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = edition.summary()
    if args.json:
        print_json(summary)
        return
    print(
        f"wrote {out}/student and {out}/instructor: {summary['exercises']} autograded exercises, "
        f"{sum(summary['quiz_questions'].values())} quiz questions"
    )
    print(
        f"hand out {out}/student with {out}/benchmarks beside it; "
        f"grade with `clipaln course grade SUBMISSIONS --key {out}/instructor`"
    )


def cmd_grade(args: argparse.Namespace) -> None:
    from .editions import build
    from .grading import GradingInterrupted, grade, gradebook

    submissions = Path(args.submissions).expanduser()
    if not submissions.is_dir():
        raise FileNotFoundError(f"no submissions folder {submissions} (SUBMISSIONS/<student>/NN_exercises.ipynb)")
    csv_path = None if args.csv is None else Path(args.csv).expanduser()
    if csv_path is not None:  # checked before an hour of grading, not after
        if csv_path.exists():
            raise FileExistsError(f"--csv {csv_path} exists: choose another path (a gradebook never replaces a file)")
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.touch(exist_ok=False)  # can be written (an OSError is one line now, not after grading)
        csv_path.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        if args.key is None:
            build(_notebooks(args.notebooks), Path(tmp))
            key = Path(tmp) / "instructor"
        else:
            key = Path(args.key).expanduser()
        autograders = key / "autograder" if (key / "autograder").is_dir() else key
        try:
            report = grade(submissions, autograders, args.strict, args.jobs, args.only, args.timeout or None)
        except GradingInterrupted as stop:  # the marks given so far, then the interrupt as always
            _print_report(stop.report, args.json)
            print(
                f"clipaln: the report above holds the {stop.graded} of {stop.total} notebooks graded", file=sys.stderr
            )
            raise
    _print_report(report, args.json)  # first: a gradebook that fails to write loses no marks
    if csv_path is not None:
        write_text(csv_path, gradebook(report))


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    for student, (points, maximum) in totals(report).items():
        print(f"{student}: {points:g} of {maximum} points ({100 * points / maximum:.0f}%)")
        missing = set()  # a notebook not handed in is one line, not one per exercise
        for ex, r in report[student].items():
            nb_id = ex.partition(".")[0]
            if r["message"].startswith("not submitted"):
                if nb_id not in missing:
                    missing.add(nb_id)
                    worth = sum(e["max"] for k, e in report[student].items() if k.startswith(f"{nb_id}."))
                    print(f"  {nb_id}: 0 of {worth}: {r['message']}")
            elif r["points"] < r["max"]:
                print(f"  {ex}: {r['points']:g} of {r['max']}: {r['message']}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("course", help=COMMANDS["course"])
    cs = c.add_subparsers(dest="course_command", required=True, parser_class=type(c))
    b = cs.add_parser("build", help="write OUT/student and OUT/instructor")
    b.add_argument("out", help="a new (or empty) folder")
    b.add_argument("--notebooks", default="notebooks", help="the series' notebooks folder (default: ./notebooks)")
    b.add_argument("--json", action="store_true", help='print {"exercises": N, "quiz_questions": {...}}')
    b.set_defaults(func=cmd_build)
    g = cs.add_parser("grade", help="grade SUBMISSIONS/<student>/NN_exercises.ipynb")
    g.add_argument("submissions")
    g.add_argument("--key", default=None, help="the instructor edition (default: built now from --notebooks)")
    g.add_argument("--notebooks", default="notebooks", help="the series' notebooks folder (default: ./notebooks)")
    g.add_argument("--json", action="store_true", help='print {student: {exercise: {"points", "max", "message"}}}')
    g.add_argument(
        "--strict",
        action="store_true",
        help="a cell that raises fails its whole notebook, with the error (to check that the instructor edition "
        "runs through; by default a raising cell costs only the exercise it did not answer)",
    )
    g.add_argument(
        "--jobs",
        type=count(1),
        default=1,
        help="grade this many notebooks at a time, each in its own process and kernel (default 1; a class of "
        "100 is 800 notebooks: about one job per core)",
    )
    g.add_argument(
        "--csv",
        default=None,
        metavar="PATH",
        help="also write the marks as CSV for a gradebook: a row per student, a column per exercise, the "
        "feedback (a new file)",
    )
    g.add_argument(
        "--timeout",
        type=count(0),
        default=CELL_TIMEOUT,
        metavar="SECONDS",
        help=f"interrupt a cell that runs longer: it costs its exercise, the notebook runs on (default "
        f"{CELL_TIMEOUT}; 0: no limit)",
    )
    g.add_argument(
        "--only",
        type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
        default=None,
        metavar="NN,NN",
        help="grade only these notebooks, e.g. --only 00,01 for the two set so far (default: all)",
    )
    g.set_defaults(func=cmd_grade)
