"""A class with the series: `clipaln course build` and `clipaln course grade`, end to end (otter-grader)."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from clipaln.cli import main

pytest.importorskip("otter", reason="the course commands need otter-grader (pip install -e '.[course]')")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    out = tmp_path_factory.mktemp("course") / "class"
    code, text = _run(["course", "build", str(out), "--notebooks", str(NOTEBOOKS), "--json"])
    assert code == 0
    return out, json.loads(text)


def test_build_reports_at_least_30_autograded_exercises_and_5_quiz_questions_per_tutorial(course):
    _, summary = course
    assert summary["exercises"] >= 30
    assert sorted(summary["quiz_questions"]) == [f"{i:02d}" for i in range(8)]
    assert min(summary["quiz_questions"].values()) >= 5


def test_build_from_the_command_line_writes_nothing_on_stderr(tmp_path):
    """otter's import made traitlets warn on every build: a lecturer's terminal shows the report alone."""
    p = subprocess.run(
        [sys.executable, "-m", "clipaln", "course", "build", str(tmp_path / "class"), "--notebooks", str(NOTEBOOKS)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert "hand out" in p.stdout


def test_build_refuses_a_folder_that_holds_files(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("the user's")
    assert main(["course", "build", str(tmp_path), "--notebooks", str(NOTEBOOKS)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def _solution_cells():
    """Every code cell that answers an exercise in the worked solutions (the cell under an "## Exercise" heading)."""
    for path in sorted((NOTEBOOKS / "solutions").glob("0*_solutions.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        for before, cell in zip(cells, cells[1:]):
            if cell.cell_type == "code" and before.source.startswith("## Exercise"):
                yield path.name, cell.source


def test_no_solution_code_and_no_hidden_test_reaches_the_student_edition(course):
    out, _ = course
    student = out / "student"
    code = "\n".join(
        c.source for p in student.glob("*.ipynb") for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code"
    )
    solutions = list(_solution_cells())
    assert len(solutions) >= 30
    for name, source in solutions:
        assert source.strip() not in code, f"a solution of {name} is in the student edition"
    assert not (student / "solutions").exists()
    for path in student.glob("*_exercises.ipynb"):  # on Colab too, the checks find tests/ beside the notebook
        setup = next(c for c in nbformat.read(path, as_version=4).cells if "colab-setup" in c.metadata.get("tags", []))
        assert "os.chdir" not in setup.source and "git" in setup.source, path.name
    assert not any("hidden=True" in t.read_text() for t in (student / "tests").glob("*.py"))
    assert any("hidden=True" in t.read_text() for t in (out / "instructor" / "tests").glob("*.py"))


def test_an_exercises_notebook_installs_otter_before_it_imports_it(course, monkeypatch):
    """Colab's Run all stopped at `import otter`, the cell before the one that installs the package."""
    out, _ = course
    for path in sorted((out / "student").glob("*_exercises.ipynb")):
        code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        setup = next(i for i, c in enumerate(code) if "colab-setup" in c.metadata.get("tags", []))
        checks = next(i for i, c in enumerate(code) if "import otter" in c.source)
        assert setup < checks, path.name
        assert '"[notebooks,course]"' in code[setup].source, path.name
        assert sum("import otter" in c.source for c in code) == 1, path.name
    monkeypatch.setitem(sys.modules, "otter", None)  # a laptop with the notebooks extra alone
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e '\.\[notebooks,course\]'"):
        exec(code[checks].source, {})


def test_every_tutorial_asks_a_prediction_whose_answer_the_student_edition_hides(course):
    out, _ = course
    for path in sorted(NOTEBOOKS.glob("0*_*.ipynb")):
        committed = nbformat.read(path, as_version=4).cells
        handed_out = nbformat.read(out / "student" / path.name, as_version=4).cells
        tags = [c.metadata.get("tags", []) for c in committed]
        questions = [i for i, t in enumerate(tags) if "predict-question" in t]
        assert questions, f"{path.name} asks no prediction"
        for i in questions:
            j = i + 1
            assert "predict-output" in tags[j], f"{path.name}: the cell after a prediction does not answer it"
            assert committed[j].outputs, f"{path.name}: the committed answer cell has no output"
            while "predict-output" in tags[j]:
                assert handed_out[j].outputs == [], f"{path.name}: the answer's output is shown before the cell runs"
                assert "alt" not in handed_out[j].metadata.get("clipaln", {}), f"{path.name}: its alt text answers it"
                j += 1
            assert "predict-answer" in tags[j]
            assert handed_out[j].source.startswith("<details>"), f"{path.name}: the answering text is not folded"
        prose = "\n".join(c.source for c in handed_out if c.cell_type == "markdown")
        assert "solutions/" not in prose and "run by CI" not in prose, f"{path.name} points at the worked solutions"
        # the Colab badge opened the published tutorial, whose quiz shows its answers
        assert "colab.research.google.com/github" not in prose and "Upload notebook" in prose, path.name


def test_each_slide_deck_asks_its_prediction_on_one_slide_and_answers_it_on_the_next():
    from clipaln.course.slides import tag

    for path in sorted(NOTEBOOKS.glob("0*_*.ipynb")):
        cells = tag(nbformat.read(path, as_version=4)).cells
        kinds = [(c.metadata.get("tags", []), c.metadata["slideshow"]["slide_type"]) for c in cells]
        asked = [i for i, (tags, _) in enumerate(kinds) if "predict-question" in tags]
        for i in asked:
            if "predict-output" in kinds[i + 1][0]:
                assert kinds[i + 1][1] in ("slide", "subslide"), f"{path.name}: the answer shares the question's slide"


def _submit(course, folder: Path, student: str, edition: str, nb_id: str, edit=None):
    out, _ = course
    nb = nbformat.read(out / edition / f"{nb_id}_exercises.ipynb", as_version=4)
    if edit:
        edit(nb)
    (folder / student).mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / student / f"{nb_id}_exercises.ipynb")


def _after_answer(exercise: str, code: str):
    """Add `code` right after the cell that sets that exercise's answer (a typical mistake, made on purpose)."""

    def edit(nb):
        i = next(
            k for k, c in enumerate(nb.cells) if c.source.startswith(f'grader.check("q{exercise.replace(".", "_")}")')
        )
        nb.cells.insert(i, nbformat.v4.new_code_cell(code))

    return edit


def _raise_in(exercise: str, code: str = "raise RuntimeError('half-way')"):
    """The exercise's own cell raises half-way (or runs `code`), before it sets its answer."""

    def edit(nb):
        i = next(
            k for k, c in enumerate(nb.cells) if c.source.startswith(f'grader.check("q{exercise.replace(".", "_")}")')
        )
        nb.cells[i - 1].source = code + "\n" + nb.cells[i - 1].source

    return edit


def _grade(course, subs: Path, *flags: str) -> dict:
    code, text = _run(["course", "grade", str(subs), "--key", str(course[0] / "instructor"), "--json", *flags])
    assert code == 0
    return json.loads(text)


# Grading a class end to end, in three parts: each worked solution as a perfect student's submission,
# the untouched student edition, and typical mistakes.


@pytest.mark.parametrize("nb_id", [f"{i:02d}" for i in range(8)])
def test_every_worked_solution_runs_and_scores_full_marks(course, tmp_path, nb_id):
    """Strictly: a cell of the worked solution that raises fails it (so nbval need not run them again)."""
    _submit(course, tmp_path, "perfect", "instructor", nb_id)
    report = {ex: r for ex, r in _grade(course, tmp_path, "--strict")["perfect"].items() if ex.startswith(f"{nb_id}.")}
    assert report, f"notebook {nb_id} has no graded exercise"
    not_full = {ex: r["message"] for ex, r in report.items() if r["points"] < r["max"]}
    assert not not_full, not_full


def test_the_untouched_student_edition_scores_at_most_a_fifth(course, tmp_path):
    for nb_id in [f"{i:02d}" for i in range(8)]:
        _submit(course, tmp_path, "untouched", "student", nb_id)
    report = _grade(course, tmp_path)["untouched"]
    share = sum(e["points"] for e in report.values()) / sum(e["max"] for e in report.values())
    print("share of the points, untouched:", round(share, 3))  # with -s: the number behind the note
    assert share <= 0.20


def test_typical_mistakes_are_named_and_a_broken_notebook_costs_only_itself(course, tmp_path, capfd):
    subs = tmp_path / "submissions"
    # typical wrong answers: beta dropped in 01.5, IPO's target taken as 1/beta, the span of S^-4 without its power
    _submit(
        course,
        subs,
        "typical",
        "instructor",
        "01",
        lambda nb: (
            _after_answer("01.5", "answer_5 = lambda h, beta: torch.nn.functional.softplus(-h)")(nb),
            _after_answer(
                "01.2", "answer_2 = {k: 2 * v if k.startswith('target') else v for k, v in answer_2.items()}"
            )(nb),
        ),
    )
    _submit(
        course,
        subs,
        "typical",
        "instructor",
        "03",
        _after_answer("03.2", "answer_2 = {k: v ** 0.25 if k.startswith('span') else v for k, v in answer_2.items()}"),
    )
    # a notebook that raises half-way, and one that is not a notebook at all
    _submit(course, subs, "broken", "instructor", "01", _raise_in("01.3"))
    (subs / "broken" / "02_exercises.ipynb").write_text("{ not json")
    # a student who replaces every check by one that passes, then hands in the untouched edition
    patch = (
        "from clipaln.course import checks\n"
        "for n in dir(checks):\n    if callable(getattr(checks, n)): setattr(checks, n, lambda *a, **k: None)"
    )
    _submit(course, subs, "cheat", "student", "00", lambda nb: nb.cells.insert(2, nbformat.v4.new_code_cell(patch)))
    report = _grade(course, subs, "--jobs", "2")  # two notebooks at a time, each in its own process
    err = capfd.readouterr().err  # the kernels' and otter's own noise stays out of a class's report
    assert "Kernel is running over TCP" not in err and "DeprecationWarning" not in err, err[-500:]
    assert all(r["points"] == 0 for ex, r in report["cheat"].items() if ex[:2] == "00"), report["cheat"]
    typical = report["typical"]
    assert [ex for ex in typical if ex[:2] == "01"] == ["01.1", "01.2", "01.3", "01.4", "01.5", "01.quiz"]
    assert typical["01.5"]["points"] == 0 and "ignores beta" in typical["01.5"]["message"]
    assert typical["01.2"]["points"] < typical["01.2"]["max"] and "1/(2 beta)" in typical["01.2"]["message"]
    assert typical["03.2"]["points"] < typical["03.2"]["max"] and "fourth power" in typical["03.2"]["message"]
    assert all(typical[f"01.{k}"]["points"] == typical[f"01.{k}"]["max"] for k in (1, 3, 4))
    assert typical["00.1"]["message"] == "not submitted"
    broken = report["broken"]
    assert broken["01.3"]["points"] == 0  # the message names the error, not only the answer it cost
    assert "(the last error this kernel saw: RuntimeError: half-way)" in broken["01.3"]["message"]
    assert all(broken[f"01.{k}"]["points"] == broken[f"01.{k}"]["max"] for k in (1, 2, 4, 5))  # the run went on
    assert all(r["points"] == 0 and "could not be graded" in r["message"] for ex, r in broken.items() if ex[:2] == "02")
    # --strict: the notebook that raises half-way scores 0 on every exercise, and says why
    (subs / "typical").rename(tmp_path / "typical")
    (subs / "cheat").rename(tmp_path / "cheat")
    (subs / "broken" / "02_exercises.ipynb").unlink()
    strict = _grade(course, subs, "--strict")["broken"]
    raised = {r["message"] for ex, r in strict.items() if ex[:2] == "01" and r["points"] == 0}
    assert raised == {"a cell raised RuntimeError: half-way"} and len(strict) > 5, strict
    assert all(r["points"] == 0 for ex, r in strict.items() if ex[:2] == "01"), strict


def test_the_tutorials_quiz_cells_are_the_quiz_file():
    from clipaln.course.editions import QUIZ_START, notebook_id, quiz_markdown, read_quizzes

    quizzes = read_quizzes(NOTEBOOKS)
    for path in sorted(NOTEBOOKS.glob("0*_*.ipynb")):
        nb_id = notebook_id(path)
        cells = [
            c.source.rstrip("\n") for c in nbformat.read(path, as_version=4).cells if c.source.startswith(QUIZ_START)
        ]
        want = [quiz_markdown(nb_id, quizzes[nb_id], with_answers=True).rstrip("\n")] if nb_id in quizzes else []
        assert cells == want, f"{path.name}: its quiz cell differs from notebooks/quizzes.json (regenerate it)"


def test_a_missing_notebooks_folder_is_one_line(tmp_path, capsys):
    assert main(["course", "build", str(tmp_path / "out"), "--notebooks", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--notebooks" in err
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


def test_a_slide_deck_per_tutorial_builds_offline_with_the_time_per_part(course):
    out, _ = course
    slides = out / "instructor" / "slides"
    for path in sorted(NOTEBOOKS.glob("0*_*.ipynb")):
        deck = (slides / f"{path.stem}.slides.html").read_text()
        assert deck.count("<section") >= 5, path.name  # a title, the outline and a slide per part
        assert "The lecture, part by part" in deck
        loads = re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="([^"]+)"', deck)
        assert loads and not [u for u in loads if u.startswith(("http:", "https:", "//"))], path.name
        for url in loads:
            if not url.startswith("data:"):
                assert (slides / url.split("?")[0]).is_file(), (path.name, url)  # every script it loads is beside it
    outline = (slides / "outline.md").read_text()
    assert outline.count("Deck: ") == 9 and re.search(r"- 1\. The world: \d+ min", outline)


def test_every_notebook_opens_in_colab_from_a_badge_that_names_its_path():
    import tomllib

    repo = tomllib.loads((NOTEBOOKS.parent / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    slug = repo.removeprefix("https://github.com/")
    paths = sorted(NOTEBOOKS.glob("0*.ipynb")) + sorted((NOTEBOOKS / "solutions").glob("0*.ipynb"))
    assert len(paths) == 17  # 9 tutorials (04b the optional deeper one) and 8 solutions
    for path in paths:
        cells = nbformat.read(path, as_version=4).cells
        rel = path.relative_to(NOTEBOOKS.parent).as_posix()
        assert f"(https://colab.research.google.com/github/{slug}/blob/main/{rel})" in cells[0].source, rel
        setup = next(c for c in cells if c.cell_type == "code")
        assert "colab-setup" in setup.metadata.get("tags", []), rel  # the first code cell installs the package
        assert repo in setup.source and path.parent.relative_to(NOTEBOOKS.parent).as_posix() in setup.source, rel


def test_no_worked_answer_of_any_kind_reaches_the_student_edition(course):
    out, _ = course
    for path in sorted((out / "student").glob("*_exercises.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        answers = [c for c in cells if c.cell_type == "markdown" and c.source.lstrip().startswith("**Answer")]
        leaked = [c.source[:60] for c in answers]
        assert not leaked, (path.name, leaked)  # 05's answers are "**Answer (toy fallback).**" and the like


def test_a_submissions_folder_without_student_folders_or_a_wrong_key_is_one_line(course, tmp_path, capsys):
    out, _ = course
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "ada_00_exercises.ipynb").write_text("{}")
    assert main(["course", "grade", str(tmp_path / "flat"), "--key", str(out / "instructor")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no student folders" in err and "<student>/NN_exercises.ipynb" in err
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    assert main(["course", "grade", str(tmp_path / "subs"), "--key", str(out)]) == 2  # the course, not its instructor
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--key {out / 'instructor'}" in err


def test_a_notebook_not_handed_in_is_one_line_that_names_a_misnamed_copy(course, tmp_path):
    out, _ = course
    (tmp_path / "ada").mkdir()
    (tmp_path / "ada" / "01_exercises (1).ipynb").write_text("{}")
    code, text = _run(["course", "grade", str(tmp_path), "--key", str(out / "instructor")])
    assert code == 0
    lines = text.strip().splitlines()
    assert lines[0].startswith("ada: 0 of ") and len(lines) == 1 + 8, lines  # one line per notebook
    assert "  01: 0 of " in text and "(01_exercises (1).ipynb is there: name it 01_exercises.ipynb)" in text
    assert "  00: 0 of " in text and text.count("is there") == 1
    report = _grade(course, tmp_path, "--only", "00,01")  # the notebooks set so far
    assert sorted({ex[:2] for ex in report["ada"]}) == ["00", "01"]
    assert main(["course", "grade", str(tmp_path), "--key", str(out / "instructor"), "--only", "01,09"]) == 2


def test_a_quiz_left_at_its_stub_says_so():
    from clipaln.course.checks import check_quiz

    with pytest.raises(AssertionError) as err:
        check_quiz({"quiz": {1: "b", 2: ...}}, "quiz", {"1": 3, "2": 4})
    assert str(err.value) == "quiz question 2 is still `...`: answer one of the letters a, b, c, d"
    with pytest.raises(AssertionError, match="not 'z'"):
        check_quiz({"quiz": {1: "z", 2: "a"}}, "quiz", {"1": 3, "2": 4})


def test_a_copy_filed_with_a_slip_is_named_and_a_zips_litter_is_no_student(course, tmp_path):
    """A learning platform's download: another case, a subfolder, the singular, macOS's __MACOSX, a
    notebook beside the student folders. Each read 0 "not submitted" with no hint, and __MACOSX was graded."""
    out, _ = course
    for path in ("carol/00_Exercises.ipynb", "dave/week1/00_exercises.ipynb", "gina/00_exercise.ipynb"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    (tmp_path / "__MACOSX" / "carol").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "carol" / "._00_exercises.ipynb").write_text("")
    (tmp_path / "eve_00_exercises.ipynb").write_text("{}")
    (tmp_path / "._eve_00_exercises.ipynb").write_text("")  # macOS's AppleDouble copy: not counted
    (tmp_path / "Gina").mkdir()
    with pytest.warns(UserWarning) as seen:
        report = _grade(course, tmp_path, "--only", "00")
    said = [str(w.message) for w in seen]
    assert any(re.search(r"1 notebook\(s\) in .* outside a student folder .*eve_00_exercises.ipynb", m) for m in said)
    assert any(m.startswith("student folders 'Gina' and 'gina' differ only in case") for m in said), said
    assert sorted(report) == ["Gina", "carol", "dave", "gina"]
    for student, copy, fix in (
        ("carol", "00_Exercises.ipynb", "name it"),
        ("dave", "week1/00_exercises.ipynb", "move it to"),
        ("gina", "00_exercise.ipynb", "name it"),
    ):
        assert report[student]["00.1"]["message"] == f"not submitted ({copy} is there: {fix} 00_exercises.ipynb)"


def test_a_free_text_answer_names_its_words_and_a_quiz_letter_reads_as_typed():
    from clipaln.course.checks import CHOICES, check_form, check_quiz, check_quiz_answer, check_values

    answers = json.loads((NOTEBOOKS / "solutions" / "answers.json").read_text())
    free_text = {k: v for ref in answers.values() if isinstance(ref, dict) for k, v in ref.items() if type(v) is str}
    free_text.pop("function", None)
    assert free_text and all(v in CHOICES[k] for k, v in free_text.items()), free_text
    shape = {"mostly": "str", "T": "number"}
    with pytest.raises(AssertionError, match=r"should be one of 'words', 'styles', not 'the words'"):
        check_form({"a": {"mostly": "the words", "T": 0.5}}, "a", shape)
    check_values({"a": {"mostly": " Words", "T": 0.5}}, "a", "02.4", {"mostly": "words", "T": 0.5})
    with pytest.raises(AssertionError, match="should be a number, not bool True"):
        check_form({"a": {"mostly": "words", "T": True}}, "a", shape)
    for typed in ("D ", "(d)", "d."):
        check_quiz({"quiz": {1: "a", 2: typed}}, "quiz", {"1": 3, "2": 4})
        check_quiz_answer({"quiz": {1: "a", 2: typed}}, "quiz", "2", "d")


def test_the_stub_of_a_free_text_answer_lists_its_words(course):
    out, _ = course
    nb = nbformat.read(out / "student" / "02_exercises.ipynb", as_version=4)
    assert any("'mostly': ...,  # one of 'words', 'styles'" in c.source for c in nb.cells if c.cell_type == "code")


def _kernel_named(name: str):
    def edit(nb):
        nb.metadata["kernelspec"] = {"name": name, "display_name": "Our course", "language": "python"}

    return edit


def test_a_runaway_cell_costs_its_exercise_and_a_notebook_of_another_kernel_is_graded_in_ours(course, tmp_path):
    """A loop that never ends held the whole class's grading (no time limit); a notebook saved under a
    course kernel's name scored 0 with NoSuchKernel."""
    _submit(course, tmp_path, "sleeper", "instructor", "00", _raise_in("00.3", "import time; time.sleep(10**6)"))
    _submit(course, tmp_path, "vscode", "instructor", "00", _kernel_named("clipaln-course"))
    key = str(course[0] / "instructor")
    argv = ["course", "grade", str(tmp_path), "--key", key, "--only", "00", "--timeout", "20", "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "clipaln", *argv], capture_output=True, text=True, timeout=600, env=env)
    report = json.loads(p.stdout)
    sleeper = report["sleeper"]
    assert sleeper["00.3"]["points"] == 0 and "ran past the grader's time limit" in sleeper["00.3"]["message"]
    assert all(r["points"] == r["max"] for ex, r in sleeper.items() if ex != "00.3"), sleeper
    assert all(r["points"] == r["max"] for r in report["vscode"].values()), report["vscode"]


def test_marks_go_to_a_gradebook_csv_that_never_replaces_a_file(course, tmp_path, capsys):
    import csv

    out, _ = course
    subs = tmp_path / "subs"
    (subs / "ada").mkdir(parents=True)
    (subs / "ada" / "00_Exercises.ipynb").write_text("{}")
    (subs / "bo").mkdir()
    book = tmp_path / "marks.csv"
    argv = ["course", "grade", str(subs), "--key", str(out / "instructor"), "--only", "00,01", "--csv", str(book)]
    assert main(argv) == 0
    rows = list(csv.DictReader(book.open()))
    assert [r["student"] for r in rows] == ["ada", "bo"]
    exercises = [k for k in rows[0] if k[:3] in ("00.", "01.")]
    assert exercises[0] == "00.1" and exercises[-1] == "01.quiz" and len(exercises) >= 10
    assert all(r["points"] == "0" and int(r["max"]) > 0 and r["00.1"] == "0" for r in rows)
    assert "00.1: not submitted (00_Exercises.ipynb is there: name it 00_exercises.ipynb)" in rows[0]["feedback"]
    capsys.readouterr()
    assert main(argv) == 2  # refused before grading: the file is there
    err = capsys.readouterr().err
    assert "--csv" in err and "exists" in err and err.count("\n") == 1
    (tmp_path / "a_file").write_text("")
    unwritable = [*argv[:-1], str(tmp_path / "a_file" / "marks.csv")]  # refused before grading, not after
    assert main(unwritable) == 2 and capsys.readouterr().err.count("\n") == 1


def test_ctrl_c_with_jobs_stops_the_notebooks_in_flight_and_keeps_the_marks_given(
    course, tmp_path, monkeypatch, capsys
):
    """Under --jobs the pool waited for every notebook in flight (minutes each) before it said anything."""
    import signal
    import threading
    import time

    from support import grade_slowly_for_bo

    import clipaln.course.grading as grading

    out, _ = course
    for student in ("ada", "bo"):
        (tmp_path / student).mkdir()
    monkeypatch.setattr(grading, "grade_notebook", grade_slowly_for_bo)
    timer = threading.Timer(8, os.kill, (os.getpid(), signal.SIGINT))  # ada graded, bo two minutes from done
    argv = ["course", "grade", str(tmp_path), "--key", str(out / "instructor"), "--only", "00", "--jobs", "2"]
    started = time.monotonic()
    timer.start()
    try:
        code = main([*argv, "--json"])
    finally:
        timer.cancel()
    assert code == 130 and time.monotonic() - started < 60  # bo's worker was stopped, not waited for
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"ada": {"00.1": {"points": 3.0, "max": 3, "message": "passed"}}}
    assert "holds the 1 of 2 notebooks graded" in captured.err


def test_ctrl_c_during_grading_keeps_the_marks_already_given(course, tmp_path, monkeypatch, capsys):
    import clipaln.course.grading as grading

    out, _ = course
    for student in ("ada", "bo"):
        (tmp_path / student).mkdir()
    marks = {"00.1": {"points": 3.0, "max": 3, "message": "passed"}}

    def grade_then_stop(submission, *args):
        if submission.parent.name == "bo":
            raise KeyboardInterrupt
        return marks

    monkeypatch.setattr(grading, "grade_notebook", grade_then_stop)
    argv = ["course", "grade", str(tmp_path), "--key", str(out / "instructor"), "--only", "00", "--json"]
    assert main(argv) == 130
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"ada": marks}
    assert "holds the 1 of 2 notebooks graded" in captured.err and "clipaln: interrupted" in captured.err
