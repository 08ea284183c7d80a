"""What a student reads: each tutorial within its word budget, no project history in its text, and
notebook 04's derivations in an optional notebook of their own, linked from it."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "notebooks").glob("0*_*.ipynb"))
#: Words of markdown a tutorial may hold (maths, code and HTML tags not counted); the core 04 less.
BUDGET, BUDGET_04 = 4000, 3500
#: The project's own history, which a student has no use for: model versions, calibration targets, review rounds.
HISTORY = [
    re.compile(r"\bv\d\b"),
    re.compile(r"toy CLIP v", re.I),
    re.compile(r"\btarget \d+\b", re.I),
    re.compile(r"\b(?:this|last|next|previous|earlier|second|third|fourth) round\b", re.I),
    re.compile(r"\bround \d\b", re.I),
    re.compile(r"TOY_V\d"),
]
NOT_WORDS = [
    re.compile(r"\$\$.*?\$\$", re.S),
    re.compile(r"\$[^$\n]*\$"),
    re.compile(r"```.*?```", re.S),
    re.compile(r"`[^`]*`"),
    re.compile(r"<[^>]+>"),
    re.compile(r"\]\([^)]*\)"),  # a link's target
]


def markdown_words(path: Path) -> int:
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    for pattern in NOT_WORDS:
        text = pattern.sub(" ", text)
    return len(re.findall(r"[A-Za-z0-9][\w'’.\-]*", text))


def test_the_word_counter_leaves_out_maths_code_and_tags():
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("Two words $x^2+y$ `code()` <b>[link](a.ipynb)</b>")]
    )
    assert len(re.findall(r"\w+", nb.cells[0].source)) > 2
    path = ROOT / "build" / "_words_probe.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    try:
        assert markdown_words(path) == 3  # "Two", "words", "link"
    finally:
        path.unlink()


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_each_tutorial_is_within_its_word_budget(path):
    budget = BUDGET_04 if path.name.startswith("04_") else BUDGET
    assert markdown_words(path) <= budget, f"{path.name}: {markdown_words(path)} words of markdown, budget {budget}"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_no_project_history_in_a_tutorial(path):
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        for pattern in HISTORY:
            hit = pattern.search(cell.source)
            assert not hit, f"{path.name}, cell {i}: {cell.source[max(0, hit.start() - 60) : hit.end() + 40]!r}"


def test_the_history_patterns_catch_what_they_name():
    for text in ("the toy CLIP v2", "v3's prior", "target 11 for the toy", "this round", "TOY_V2 = 0.84"):
        assert any(p.search(text) for p in HISTORY), text
    for text in ("ViT-B-32", "round(0.05 * i, 2)", "rounded", "t = 0.32", "a round trip"):
        assert not any(p.search(text) for p in HISTORY), text


def test_notebook_04_s_derivations_are_an_optional_notebook_it_links():
    core = nbformat.read(ROOT / "notebooks" / "04_gender_bias_retrieval.ipynb", as_version=4)
    deep = nbformat.read(ROOT / "notebooks" / "04b_gender_going_deeper.ipynb", as_version=4)
    assert "(04b_gender_going_deeper.ipynb)" in core.cells[0].source
    assert "**Optional.**" in deep.cells[0].source and "(04_gender_bias_retrieval.ipynb)" in deep.cells[0].source
    headings = lambda nb: [
        line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines() if line.startswith("#")
    ]
    assert not any("rotation bound" in h.lower() or "phase diagram" in h.lower() for h in headings(core))
    assert any("phase diagram" in h.lower() for h in headings(deep)) and any(
        "condition" in h.lower() for h in headings(deep)
    )
