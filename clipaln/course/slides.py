"""One reveal.js deck per tutorial, and the lecture outline with the time per part, built offline.

Cells are tagged for nbconvert's slides as a lecture runs: the title and each "## " section start a
slide, each "### " a sub-slide; code is hidden (its figures and printed numbers stay), the Colab cell
and the exercises are skipped. reveal.js, jQuery, RequireJS (vendored in `static/`) and MathJax (from
jupyter-server-mathjax, as the book) are copied beside the decks, so a deck opens from a `file://` URL.
The time per part is the study-time rule, held here and read by `benchmarks/study_times.py`: 80 words
a minute, a minute per code cell.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import nbformat

STATIC = Path(__file__).parent / "static"
WORDS_PER_MINUTE, MINUTES_PER_CODE_CELL = 80, 1


COLAB_BADGE = re.compile(r"\[!\[Open in Colab\]\([^)]*\)\]\([^)]*\)\n?")


def _section(cell: nbformat.NotebookNode) -> str | None:
    m = re.match(r"#{1,2} (.+)", cell.source) if cell.cell_type == "markdown" else None
    return m.group(1).strip() if m else None


def _split_at_headings(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy in which every "## " or "### " heading starts its own markdown cell (a slide or sub-slide)."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            cells.append(cell)
            continue
        for part in re.split(r"\n(?=#{2,3} )", cell.source):
            cells.append(nbformat.v4.new_markdown_cell(part.strip("\n"), metadata=copy.deepcopy(cell.metadata)))
    nb.cells = cells
    return nb


def outline(nb: nbformat.NotebookNode) -> list[tuple[str, int]]:
    """(part, minutes) for each "## " part of a tutorial before its exercises, by the study-time rule."""
    parts: list[list] = []
    for cell in _split_at_headings(nb).cells:
        title = _section(cell)
        if title and title.startswith(("Exercises", "References")):
            break
        if title and (cell.source.startswith("## ") or not parts):
            parts.append([title, 0.0])
        if not parts:
            continue
        if cell.cell_type == "markdown":
            parts[-1][1] += len(re.findall(r"\S+", cell.source)) / WORDS_PER_MINUTE
        elif "colab-setup" not in cell.metadata.get("tags", []):
            parts[-1][1] += MINUTES_PER_CODE_CELL
    return [(title, max(1, round(minutes))) for title, minutes in parts]


def tag(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy with `slideshow` metadata on every cell, and the outline on the slide after the title."""
    nb = _split_at_headings(nb)
    nb.cells[0].source = COLAB_BADGE.sub("", nb.cells[0].source)  # the badge image would load from Google
    skipping, asked = False, False
    for i, cell in enumerate(nb.cells):
        title = _section(cell)
        tags = cell.metadata.get("tags", [])
        if title:
            skipping = title.startswith(("Exercises", "References"))
        kind = "-"
        if i == 0 or (title and cell.source.startswith("## ")):
            kind = "slide"
        elif cell.cell_type == "markdown" and cell.source.startswith("### "):
            kind = "subslide"
        if asked and "predict-output" in tags and kind == "-":
            kind = "subslide"  # the class predicts on one slide, the answer comes on the next
        asked = "predict-question" in tags
        if skipping or "colab-setup" in tags:
            kind = "skip"
        cell.metadata["slideshow"] = {"slide_type": kind}
    parts = outline(nb)
    table = "\n".join(f"| {title} | {minutes} |" for title, minutes in parts)
    total = sum(m for _, m in parts)
    nb.cells.insert(
        1,
        nbformat.v4.new_markdown_cell(
            f"**The lecture, part by part** ({total} min by the study-time rule)\n\n"
            f"| part | minutes |\n|---|---|\n{table}",
            metadata={"slideshow": {"slide_type": "slide"}},
        ),
    )
    return nb


def build(tutorials: dict[str, Path], out: Path) -> dict[str, list[tuple[str, int]]]:
    """Write OUT/NN_name.slides.html for each tutorial, OUT/outline.md, and the scripts they load."""
    from jupyter_server_mathjax import __file__ as mathjax_package
    from nbconvert import SlidesExporter

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(STATIC, out / "static", dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
    shutil.copytree(Path(mathjax_package).parent / "static", out / "mathjax", dirs_exist_ok=True)
    exporter = SlidesExporter(
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        reveal_url_prefix="static/reveal.js",
        reveal_theme="serif",
        jquery_url="static/jquery.min.js",
        require_js_url="static/require.js",
        mathjax_url="mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
    )
    outlines, lines = {}, ["# The lecture outline", ""]
    for nb_id, path in tutorials.items():
        nb = nbformat.read(path, as_version=4)
        html, _ = exporter.from_notebook_node(tag(nb))
        (out / f"{path.stem}.slides.html").write_text(html)
        outlines[nb_id] = outline(nb)
        lines += [f"## {nb.cells[0].source.splitlines()[0].lstrip('# ')}", "", f"Deck: `{path.stem}.slides.html`", ""]
        lines += [f"- {title}: {minutes} min" for title, minutes in outlines[nb_id]] + [""]
    (out / "outline.md").write_text("\n".join(lines))
    return outlines
