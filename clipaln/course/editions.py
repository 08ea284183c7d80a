"""The student and instructor editions of the series, built from the notebooks folder.

Sources (all under `notebooks/`): the tutorials `NN_*.ipynb`; the worked solutions
`solutions/NN_solutions.ipynb`, whose autograded cells carry `{"clipaln": {"exercise", "answer"}}`
metadata and end by setting `answer_k`; the references `solutions/answers.json`
(`benchmarks/course_answers.py` records them); the quizzes `quizzes.json`.

`OUT/student/`: the tutorials (predict-first outputs cleared, their answers folded), one
`NN_exercises.ipynb` per tutorial (a stub where each solution was, otter's check under it, the quiz),
and the public tests. `OUT/instructor/`: the same exercise notebooks with the solutions filled in, the
worked solutions, every test (public and hidden), otter's autograder zip per notebook, and `slides/`:
a reveal.js deck per tutorial and the lecture outline with the time per part.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import slides
from .checks import CHOICES, shape_of

PREDICT_OUTPUT, PREDICT_ANSWER = "predict-output", "predict-answer"
REVEAL = "Reveal the answer (predict first, then run the cell above)"
QUIZ_START = "<!-- quiz -->"
#: The exercises notebook's checks; otter comes with the course extra, which the Colab cell installs.
OTTER_CELL = """try:
    import otter
except ModuleNotFoundError:
    why = "the checks need otter-grader: pip install -e '.[notebooks,course]' (or pip install otter-grader)"
    raise ModuleNotFoundError(why) from None

grader = otter.Notebook("{nb_id}_exercises.ipynb", tests_dir="tests")"""


@dataclass
class Edition:
    """What a build wrote, for `--json` and the tests."""

    exercises: dict[str, list[str]] = field(default_factory=dict)  # notebook -> autograded exercise ids
    quiz_questions: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "exercises": sum(len(v) for v in self.exercises.values()),
            "quiz_questions": dict(sorted(self.quiz_questions.items())),
        }


def notebook_id(path: Path) -> str:
    """A tutorial's number as its file name starts: "04" for the core notebook, "04b" for its optional deeper one."""
    return path.name.split("_", 1)[0]


def tutorials(notebooks: Path) -> dict[str, Path]:
    return {notebook_id(p): p for p in sorted(notebooks.glob("[0-9][0-9]*_*.ipynb"))}


def read_quizzes(notebooks: Path) -> dict[str, list[dict]]:
    return json.loads((notebooks / "quizzes.json").read_text())


def quiz_markdown(nb_id: str, questions: list[dict], with_answers: bool, intro: str | None = None) -> str:
    """A tutorial's quiz cell: each question and its options; with the answers, each folded under it.
    `intro`, the line under the heading, defaults to where the quiz is answered."""
    if intro is None:
        intro = (
            "Answer each question before you open its answer. In a class, answer them in the exercises notebook."
            if with_answers
            else f"Answer in `{nb_id}_exercises.ipynb` (the last cell), where the lecturer's grader counts them."
        )
    lines = [QUIZ_START, "## Quiz", "", intro, ""]
    for n, q in enumerate(questions, 1):
        lines.append(f"{n}. *({q['kind']})* {q['question']}")
        lines += [f"   - **{'abcdefgh'[i]}.** {option}" for i, option in enumerate(q["options"])]
        if with_answers:
            lines += ["", "   <details><summary>Answer</summary>", "", f"   **{_key(q)}.** {q['why']}", ""]
            lines.append("   </details>")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def sync_quiz_cells(notebooks: Path) -> list[str]:
    """Rewrite each tutorial's quiz cell from quizzes.json (after editing a question); returns the notebooks changed."""
    quizzes, changed = read_quizzes(notebooks), []
    for nb_id, path in tutorials(notebooks).items():
        nb = nbformat.read(path, as_version=4)
        want = quiz_markdown(nb_id, quizzes[nb_id], with_answers=True)
        cells = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(QUIZ_START)]
        if cells and cells[0].source != want:
            cells[0].source = want
            nbformat.write(nb, path)
            changed.append(path.name)
    return changed


def _key(question: dict) -> str:
    return "abcdefgh"[question["options"].index(question["answer"])]


def _with_ids(nb):
    """nbformat 4.5: every cell has an id (the sources are 4.4; cells made here have one)."""
    nb.nbformat_minor = max(nb.nbformat_minor, 5)
    for i, cell in enumerate(nb.cells):
        cell.setdefault("id", f"cell-{i}")
    return nb


def _strip(nb):
    for cell in _with_ids(nb).cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    return nb


def student_tutorial(nb: nbformat.NotebookNode, nb_id: str, questions: list[dict]) -> nbformat.NotebookNode:
    """The tutorial as a student receives it: predict-first outputs cleared, their answers folded,
    the quiz without its answers, and the exercises pointing at the exercises notebook."""
    nb = _with_ids(copy.deepcopy(nb))
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code" and PREDICT_OUTPUT in tags:
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("widgets", None)
            cell.metadata.get("clipaln", {}).pop("alt", None)  # the figure's description is its answer
        if cell.cell_type == "markdown" and PREDICT_ANSWER in tags:
            cell.source = f"<details><summary>{REVEAL}</summary>\n\n{cell.source}\n\n</details>"
        if cell.cell_type == "markdown" and cell.source.startswith(QUIZ_START):
            cell.source = quiz_markdown(nb_id, questions, with_answers=False)
        if cell.cell_type == "markdown":
            cell.source = re.sub(  # the badge opens the published tutorial, whose quiz shows its answers
                r"\[!\[Open in Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)",
                "*On Colab: upload this notebook (File > Upload notebook); its first cell installs clipaln.*",
                cell.source,
            )
            cell.source = re.sub(
                r"Worked solutions, with the numbers each answer rests on: "
                r"\[`?notebooks/solutions/\d\d_solutions\.ipynb`?\]\(solutions/\d\d_solutions\.ipynb\)"
                r" \(run by CI, so they stay correct\)\.",
                f"Work the exercises in [`{nb_id}_exercises.ipynb`]({nb_id}_exercises.ipynb), where a check under "
                "each one says what is wrong.",
                cell.source,
            )
            cell.source = re.sub(
                r"\[`?notebooks/solutions/\d\d_solutions\.ipynb`?\]\(solutions/\d\d_solutions\.ipynb\)",
                f"[`{nb_id}_exercises.ipynb`]({nb_id}_exercises.ipynb)",
                cell.source,
            )
    return nb


def _stub(meta: dict, reference) -> str:
    name = meta["answer"]
    if isinstance(reference, dict) and "function" in reference and len(reference) == 1:
        fn = reference["function"]
        return (
            f"def {fn}(h, beta):\n    ...  # your loss: one value per margin in h\n\n"
            f"{name} = {fn}  # the check calls your function"
        )
    one_of = lambda k: f"  # one of {', '.join(map(repr, CHOICES[k]))}" if k in CHOICES else ""
    keys = "\n".join(f"    {k!r}: ...,{one_of(k)}" for k in reference)
    intro = f"# Your code for exercise {meta['exercise']}. It ends by setting the answer the check reads:"
    return f"{intro}\n{name} = {{\n{keys}\n}}"


def _test_file(test_name: str, cases: list[tuple[str, int, bool, str]]) -> str:
    """An otter exception-based test file; each case calls one function of clipaln.course.checks."""
    out = [
        "from otter.test_files import test_case",
        "",
        "import importlib.util",
        "from pathlib import Path",
        "",
        "import clipaln.course",
        "",
        "# a fresh copy of the checks, which no code in the submitted notebook can have replaced",
        '_where = Path(clipaln.course.__spec__.origin).with_name("checks.py")',
        '_spec = importlib.util.spec_from_file_location("clipaln.course.checks", _where)',
        "checks = importlib.util.module_from_spec(_spec)",
        "_spec.loader.exec_module(checks)",
        "",
        "OK_FORMAT = False",
        f"name = {test_name!r}",
        f"points = {sum(points for _, points, _, _ in cases)}",
    ]
    for case, points, hidden, call in cases:
        out += ["", "", f"@test_case(points={points}, hidden={hidden})", f"def {case}(env):", f"    checks.{call}"]
    return "\n".join(out) + "\n"


def exercise_notebook(
    solutions: nbformat.NotebookNode, nb_id: str, answers: dict, questions: list[dict], solved: bool
) -> tuple[nbformat.NotebookNode, dict[str, str], list[str]]:
    """`NN_exercises.ipynb` from the worked solutions: stubs (or, `solved`, the solutions) with checks, then the quiz.

    Returns (notebook, {test name: test file source with every case}, [autograded exercise ids])."""
    src = _strip(copy.deepcopy(solutions))
    title = src.cells[0].source.splitlines()[0].replace("# Solutions ·", "# Exercises ·")
    cells = [
        nbformat.v4.new_markdown_cell(
            f"{title}\n\nEach exercise of the tutorial, with a cell for your code. An autograded exercise's cell "
            "ends by setting `answer_k`; run the check under it, which says in one sentence what is wrong. The "
            "lecturer's grader runs the same checks and hidden ones that compare your numbers with the worked "
            "solution's. The quiz is last."
        ),
    ]
    checks = nbformat.v4.new_code_cell(OTTER_CELL.format(nb_id=nb_id))
    tests, graded = {}, []
    body = src.cells[1:]
    if not any("colab-setup" in c.metadata.get("tags", []) for c in body):
        cells.append(checks)
    for cell in body:
        meta = cell.metadata.get("clipaln")
        if "colab-setup" in cell.metadata.get("tags", []):  # stay beside tests/: the checks read it from here
            lines = (ln.replace('"[notebooks]"', '"[notebooks,course]"') for ln in cell.source.splitlines())
            cell.source = "\n".join(ln for ln in lines if "os.chdir(" not in ln)
            cells += [cell, checks]  # the install first: on Colab otter arrives with it
            continue
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("**Answer") and not solved:
            continue
        if cell.cell_type == "code" and meta:
            ex, name = meta["exercise"], meta["answer"]
            reference = answers[ex]
            if not solved:
                cell = nbformat.v4.new_code_cell(_stub(meta, reference))
            test = f"q{ex.replace('.', '_')}"
            if isinstance(reference, dict) and "function" in reference and len(reference) == 1:
                cases = [("test_loss", 3, False, f"check_loss(env, {name!r})")]
            else:
                cases = [
                    ("test_form", 1, False, f"check_form(env, {name!r}, {shape_of(reference)!r})"),
                    ("test_values", 2, True, f"check_values(env, {name!r}, {ex!r}, {reference!r})"),
                ]
            tests[test] = _test_file(test, cases)
            graded.append(ex)
            cells += [cell, nbformat.v4.new_code_cell(f'grader.check("{test}")')]
            continue
        if (
            cell.cell_type == "code"
            and cells[-1].cell_type == "markdown"
            and cells[-1].source.startswith("## Exercise")
        ):
            if not solved:  # an exercise without a check (a GPU, a proof): the cell is the student's
                cell = nbformat.v4.new_code_cell(
                    "# Your code (this exercise is not autograded: bring your answer to class)"
                )
        cells.append(cell)
    if questions:
        options = {str(n): len(q["options"]) for n, q in enumerate(questions, 1)}
        cells.append(
            nbformat.v4.new_markdown_cell(
                quiz_markdown(nb_id, questions, False, intro="Answer each question with one letter in the cell below.")
            )
        )
        filled = {n: (_key(q) if solved else ...) for n, q in enumerate(questions, 1)}
        cells.append(
            nbformat.v4.new_code_cell(
                "quiz = {\n" + "".join(f"    {n}: {'...' if v is ... else repr(v)},\n" for n, v in filled.items()) + "}"
            )
        )
        test = f"q{nb_id}_quiz"
        cells.append(nbformat.v4.new_code_cell(f'grader.check("{test}")'))
        cases = [("test_form", 1, False, f"check_quiz(env, 'quiz', {options!r})")]
        cases += [
            (f"test_question_{n}", 1, True, f"check_quiz_answer(env, 'quiz', {str(n)!r}, {_key(q)!r})")
            for n, q in enumerate(questions, 1)
        ]
        tests[test] = _test_file(test, cases)
    nb = _with_ids(nbformat.v4.new_notebook(cells=cells, metadata=src.metadata))
    return nb, tests, graded


def _public(test_source: str) -> str:
    """A test file without its hidden cases: what a student's `grader.check` runs."""
    blocks = test_source.split("\n\n\n")
    return "\n\n\n".join(b for b in blocks if "hidden=True" not in b) + "\n"


def _autograder(tests_dir: Path, zip_path: Path) -> None:
    with warnings.catch_warnings():  # traitlets' DeprecationWarning as otter's classes are made: otter's, not ours
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="traitlets")
        from otter.generate import main as generate

        generate(tests_dir=str(tests_dir), output_path=str(zip_path), no_requirements=True, no_environment=True)


def build(notebooks: Path, out: Path) -> Edition:
    """Write OUT/student and OUT/instructor from the notebooks folder; returns what was written."""
    answers = json.loads((notebooks / "solutions" / "answers.json").read_text())
    quizzes = read_quizzes(notebooks)
    student, instructor = out / "student", out / "instructor"
    for d in (student / "tests", instructor / "tests", instructor / "autograder", instructor / "solutions"):
        d.mkdir(parents=True, exist_ok=True)
    edition = Edition()
    for nb_id, path in tutorials(notebooks).items():
        questions = quizzes.get(nb_id, [])
        tutorial = nbformat.read(path, as_version=4)
        nbformat.write(student_tutorial(tutorial, nb_id, questions), student / path.name)
        shutil.copy(path, instructor / path.name)
        sol_path = notebooks / "solutions" / f"{nb_id}_solutions.ipynb"
        if not sol_path.exists():  # an optional going-deeper notebook (04b): no exercises, no quiz to grade
            continue
        solutions = nbformat.read(sol_path, as_version=4)
        shutil.copy(sol_path, instructor / "solutions" / sol_path.name)
        blank, tests, graded = exercise_notebook(solutions, nb_id, answers, questions, solved=False)
        solved, _, _ = exercise_notebook(solutions, nb_id, answers, questions, solved=True)
        nbformat.write(blank, student / f"{nb_id}_exercises.ipynb")
        nbformat.write(solved, instructor / f"{nb_id}_exercises.ipynb")
        one = instructor / "autograder" / f"{nb_id}_tests"
        one.mkdir(exist_ok=True)
        for test, source in tests.items():
            (student / "tests" / f"{test}.py").write_text(_public(source))
            (instructor / "tests" / f"{test}.py").write_text(source)
            (one / f"{test}.py").write_text(source)
        _autograder(one, instructor / "autograder" / f"{nb_id}.zip")
        shutil.rmtree(one)
        edition.exercises[nb_id] = graded
        edition.quiz_questions[nb_id] = len(questions)
    for d in (student, instructor):
        (d / "runs").mkdir(exist_ok=True)
    _copy_recorded(notebooks, out)
    slides.build(tutorials(notebooks), instructor / "slides")
    return edition


def _copy_recorded(notebooks: Path, out: Path) -> None:
    """The recorded results a tutorial reads (`../benchmarks/results/X.json`), beside both editions."""
    for path in tutorials(notebooks).values():
        for rel in set(re.findall(r"\.\./benchmarks/results/[\w.-]+\.json", path.read_text())):
            target = out / rel[3:]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(notebooks / rel, target)
