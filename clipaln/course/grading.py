"""Grade a folder of submissions, `SUBMISSIONS/<student>/NN_exercises.ipynb`, with otter's local grading.

Each notebook runs top to bottom in a fresh kernel; otter does not stop at a cell that raises, so each
exercise scores what its checks give. With `strict` (otter's debug mode) the first cell that raises
fails the whole notebook: a check that an instructor edition runs through. A notebook that is missing,
or cannot be read, scores 0 on each of its exercises with one line saying why: a broken submission
never stops the run.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import multiprocessing
import os
import tempfile
import warnings
import zipfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path


def _exercise(test_name: str) -> str:
    """`q01_5` -> `01.5`, `q01_quiz` -> `01.quiz`."""
    nb_id, _, rest = test_name[1:].partition("_")
    return f"{nb_id}.{rest}"


def _tests_in(zip_path: Path) -> dict[str, int]:
    """Each test file of an autograder zip and its points, read without running anything."""
    out = {}
    with zipfile.ZipFile(zip_path) as z:
        for name in z.namelist():
            if name.startswith("tests/") and name.endswith(".py"):
                for line in z.read(name).decode().splitlines():
                    if line.startswith("points = "):
                        out[Path(name).stem] = int(line.split("=")[1])
    return dict(sorted(out.items(), key=lambda kv: _in_order(kv[0])))


def _in_order(test_name: str) -> tuple:
    """Exercises in the notebook's order (`q01_2` before `q01_10`), the quiz last."""
    rest = _exercise(test_name).partition(".")[2]
    return (0, int(rest), "") if rest.isdigit() else (1, 0, rest)


def _not_submitted(submission: Path) -> str:
    """ "not submitted", naming a notebook in the student's folder that looks like a misnamed copy."""
    nb_id = submission.name[:2]
    folder = submission.parent
    near = sorted(
        p.relative_to(folder).as_posix()
        for p in (folder.rglob("*.ipynb") if folder.is_dir() else [])
        if fnmatch.fnmatch(p.name.lower(), f"*{nb_id}*exercise*.ipynb") and not _hidden(p.relative_to(folder))
    )
    if not near:
        return "not submitted"
    fix = "move it to" if Path(near[0]).name == submission.name else "name it"
    return f"not submitted ({near[0]} is there: {fix} {submission.name})"


def _hidden(path: Path) -> bool:
    """A folder or file no student made: `.ipynb_checkpoints`, macOS's `__MACOSX` and `._` copies in a zip."""
    return any(part.startswith((".", "__MACOSX")) for part in path.parts)


def _message(test_file) -> str:
    for result in test_file.test_case_results:
        if not result.passed:
            lines = [ln.strip() for ln in (result.message or "").splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith(("AssertionError", "NameError", "TypeError", "Exception"))]
            return (errors[-1] if errors else (lines[-1] if lines else "failed")).removeprefix("AssertionError: ")
    return "passed"


@contextlib.contextmanager
def _kernel_quiet():
    """The kernel otter starts writes to this process's stderr itself (ipykernel's "running over TCP
    without encryption" warning, once per notebook: 800 lines for a class); what it says of a failure
    reaches the report through otter."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


#: The default time limit of one cell, in seconds: notebook 07's slowest worked cell takes about 5
#: minutes on 2 busy cores.
CELL_TIMEOUT = 900


@contextlib.contextmanager
def _cells_stop_after(seconds: int | None):
    """otter builds nbconvert's ExecutePreprocessor with its own config and no time limit: while this
    is open it builds one whose cells are interrupted after `seconds`, the cell answering TimeoutError
    (so a runaway loop costs its exercise, and the notebook runs on)."""
    import nbconvert.preprocessors as pre
    from traitlets import Bool, Dict, Integer

    if not seconds:
        yield
        return
    why = f"the cell ran past {seconds} s (course grade --timeout)"
    bounded = type(
        "ExecutePreprocessor",  # the config otter writes is addressed to this name
        (pre.ExecutePreprocessor,),
        {
            "timeout": Integer(seconds, allow_none=True).tag(config=True),
            "interrupt_on_timeout": Bool(True).tag(config=True),
            "error_on_timeout": Dict({"ename": "TimeoutError", "evalue": why, "traceback": [why]}).tag(config=True),
        },
    )
    real, pre.ExecutePreprocessor = pre.ExecutePreprocessor, bounded
    try:
        yield
    finally:
        pre.ExecutePreprocessor = real


@contextlib.contextmanager
def _in_the_graders_python(submission: Path):
    """The submission, or a copy of it that names the kernel `python3` (this Python's): a notebook saved
    under another kernel's name (a course kernel, a VS Code venv) scored 0 with NoSuchKernel."""
    import nbformat

    try:
        nb = nbformat.read(submission, as_version=4)
    except Exception:  # not a notebook: otter says so, and it costs this notebook only
        yield submission
        return
    spec = nb.metadata.get("kernelspec", {})
    if spec.get("name", "python3") == "python3":
        yield submission
        return
    nb.metadata["kernelspec"] = {**spec, "name": "python3", "display_name": "Python 3", "language": "python"}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / submission.name
        nbformat.write(nb, copy)
        yield copy


def grade_notebook(
    submission: Path, zip_path: Path, strict: bool = False, timeout: int | None = CELL_TIMEOUT
) -> dict[str, dict]:
    """{exercise: {"points", "max", "message"}} for one submitted notebook; `strict`: a cell that
    raises scores 0 on every exercise of the notebook, with the error; `timeout`: seconds one cell
    may run before it is interrupted and answers TimeoutError (None or 0: no limit)."""
    expected = _tests_in(zip_path)
    if not submission.exists():
        why = _not_submitted(submission)
        return {_exercise(t): {"points": 0, "max": m, "message": why} for t, m in expected.items()}
    with warnings.catch_warnings():  # traitlets' DeprecationWarning as otter's classes are made, on every run
        warnings.simplefilter("ignore", DeprecationWarning)
        from otter.api import grade_submission

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), _kernel_quiet():
            with _cells_stop_after(timeout), _in_the_graders_python(submission) as graded:
                results = grade_submission(str(graded), str(zip_path), quiet=True, debug=strict)
        error = results.catastrophic_error
    except Exception as e:  # otter's own failure on a broken file: this notebook scores 0, the run goes on
        results, error = None, e
    if error is not None and getattr(error, "ename", None):  # strict: nbclient's error in a cell
        why = f"a cell raised {error.ename}: {error.evalue}"
        return {_exercise(t): {"points": 0, "max": m, "message": why} for t, m in expected.items()}
    if error is not None:
        first = str(error).splitlines()[0] if str(error) else ""
        why = f"the notebook could not be graded: {type(error).__name__}: {first}"
        return {_exercise(t): {"points": 0, "max": m, "message": why} for t, m in expected.items()}
    out = {}
    for test, maximum in expected.items():
        tf = results.get_result(test)
        out[_exercise(test)] = {"points": float(tf.score), "max": maximum, "message": _message(tf)}
    return out


def _share_cores(threads: int) -> None:
    """In a grading process: its kernels run `threads` threads (unless the user set them), so that
    jobs x threads fit the cores (oversubscribed OpenMP threads made 2 jobs on 2 cores 4x slower)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))


def grade(
    submissions: Path,
    autograders: Path,
    strict: bool = False,
    jobs: int = 1,
    only: list[str] | None = None,
    timeout: int | None = CELL_TIMEOUT,
) -> dict[str, dict[str, dict]]:
    """{student: {exercise: {"points", "max", "message"}}} for every student folder under `submissions`
    (`strict`: see grade_notebook), over the notebooks `only` names (all by default: ["00", "01"] for
    the first two). `jobs` notebooks are graded at a time, each in its own process (otter changes
    directory as it grades) and kernel; the report is the same whatever `jobs` is."""
    zips = sorted(autograders.glob("[0-9][0-9].zip"))
    if zips and only:
        unknown = sorted(set(only) - {z.stem for z in zips})
        if unknown:
            raise ValueError(
                f"--only {','.join(unknown)}: no such notebook (the key has {', '.join(z.stem for z in zips)})"
            )
        zips = [z for z in zips if z.stem in only]
    if not zips:
        inside = autograders / "instructor" / "autograder"
        hint = f"pass --key {autograders / 'instructor'}" if inside.is_dir() else "build them: clipaln course build"
        raise FileNotFoundError(f"no autograder zips (NN.zip) in {autograders}: {hint}")
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not _hidden(Path(p.name)))
    by_case: dict[str, list[str]] = {}
    for student in students:
        by_case.setdefault(student.name.lower(), []).append(student.name)
    for names in (n for n in by_case.values() if len(n) > 1):
        warnings.warn(
            f"student folders {' and '.join(map(repr, names))} differ only in case: graded apart, they are one "
            "student on a case-insensitive disk or in a gradebook; merge or rename one",
            stacklevel=2,
        )
    loose = sorted(p.name for p in submissions.glob("*.ipynb") if not _hidden(Path(p.name)))
    if students and loose:
        warnings.warn(
            f"{len(loose)} notebook(s) in {submissions} lie outside a student folder and are not graded "
            f"({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}): move each to SUBMISSIONS/<student>/",
            stacklevel=2,
        )
    if not students:
        raise FileNotFoundError(
            f"no student folders in {submissions}"
            + (f" ({len(loose)} notebooks lie in it directly)" if loose else "")
            + ": put each student's notebooks in SUBMISSIONS/<student>/NN_exercises.ipynb"
        )
    pairs = [(student, z) for student in students for z in zips]
    notebooks = [student / f"{z.stem}_exercises.ipynb" for student, z in pairs]
    graded: list[tuple[Path, dict]] = []  # (student, marks of one notebook), as they come
    try:
        if jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_share_cores, initargs=(threads,))
            try:
                futures = {
                    pool.submit(grade_notebook, nb, z, strict, timeout): student
                    for nb, (student, z) in zip(notebooks, pairs)
                }
                pending = set(futures)
                while pending:  # a second at a time: a signal another thread took is seen here within it
                    done, pending = wait(pending, timeout=1, return_when=FIRST_COMPLETED)
                    graded += [(futures[future], future.result()) for future in done]
            except BaseException:  # Ctrl-C, SIGTERM: stop the notebooks in flight, not after they finish
                in_flight = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
                pool.shutdown(wait=False, cancel_futures=True)
                for process in in_flight:
                    process.terminate()
                raise
            pool.shutdown()
        else:
            for nb, (student, z) in zip(notebooks, pairs):
                graded.append((student, grade_notebook(nb, z, strict, timeout)))
    except KeyboardInterrupt:  # what was graded is kept, not lost with the rest
        raise GradingInterrupted(_report(students, graded), len(graded), len(pairs)) from None
    return _report(students, graded)


class GradingInterrupted(KeyboardInterrupt):
    """Ctrl-C during grading, with the report of the `graded` notebooks (of `total`) graded before it."""

    def __init__(self, report: dict[str, dict[str, dict]], graded: int, total: int):
        super().__init__()
        self.report, self.graded, self.total = report, graded, total


def _report(students: list[Path], graded: list[tuple[Path, dict]]) -> dict[str, dict[str, dict]]:
    """{student: {exercise: marks}}, students in order, each student's exercises in the notebooks' order."""
    report = {student.name: {} for student in students if any(s == student for s, _ in graded)}
    for student, marks in sorted(graded, key=lambda g: next(iter(g[1]), "")):  # a notebook's exercises share NN.
        report[student.name].update(marks)
    return report


def totals(report: dict[str, dict[str, dict]]) -> dict[str, tuple[float, int]]:
    return {s: (sum(e["points"] for e in ex.values()), sum(e["max"] for e in ex.values())) for s, ex in report.items()}


def gradebook(report: dict[str, dict[str, dict]]) -> str:
    """The report as CSV for a learning platform's gradebook: one row per student (student, points,
    max, each exercise's points in the notebooks' order, and a feedback column naming what lost points)."""
    import csv

    exercises = list(dict.fromkeys(ex for marks in report.values() for ex in marks))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student", "points", "max", *exercises, "feedback"])
    for student, (points, maximum) in totals(report).items():
        marks = report[student]
        lost = "; ".join(f"{ex}: {m['message']}" for ex, m in marks.items() if m["points"] < m["max"])
        row = [f"{marks[ex]['points']:g}" if ex in marks else "" for ex in exercises]
        writer.writerow([student, f"{points:g}", maximum, *row, lost])
    return out.getvalue()
