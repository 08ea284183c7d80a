"""The book: the notebooks with their committed outputs as a static site (mkdocs + mkdocs-jupyter,
never re-executed), and in a real browser the static slider of notebook 03 scrubs without a kernel."""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("book_in_browser", ROOT / "benchmarks" / "book_in_browser.py")
book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(book)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs_jupyter", reason="the book needs pip install -e '.[dev]' (mkdocs-jupyter)")
    out = tmp_path_factory.mktemp("site")
    book.build(out)
    return out


def test_the_book_has_every_notebook_and_note(site):
    for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        assert (site / "notebooks" / nb.stem / "index.html").is_file(), nb.stem
    for note in ("method", "toy-world", "teaching", "glossary", "api"):
        assert (site / note / "index.html").is_file()
    api = (site / "api" / "index.html").read_text()  # generated from the docstrings
    assert 'id="clipaln.losses.register"' in api and 'id="clipaln.projection.SharedProjection"' in api
    page = (site / book.PAGE).read_text()
    assert page.count('class="clipaln-player"') == 1  # the static slider, from the committed output


def test_every_link_of_the_book_names_a_page_of_it(site):
    assert book.broken_links(site) == {}
    solutions = [p for p in (ROOT / "notebooks" / "solutions").glob("*_solutions.ipynb")]
    for s in solutions:  # in the site and in its navigation
        assert (site / "notebooks" / "solutions" / s.stem / "index.html").is_file()
    home = (site / "index.html").read_text()
    assert all(f'href="notebooks/{nb.stem}/"' in home for nb in (ROOT / "notebooks").glob("0*.ipynb"))
    assert f'href="notebooks/solutions/{solutions[0].stem}/"' in home  # the navigation, on every page
    assert (site / "search" / "search_index.json").is_file()
    for nb in ("03_ocr_vs_detection", "04_gender_bias_retrieval"):  # the blank live widget points to the player
        page = (site / "notebooks" / nb / "index.html").read_text()
        assert page.count("clipaln-widget-note") == 1
        assert page.index("clipaln-widget-note") < page.index('class="clipaln-player')


def test_every_page_loads_mathjax_from_a_file_the_site_holds(site):
    """Every page, tutorials and solutions alike (a solutions page sits a folder deeper)."""
    import re

    pages = sorted(site.rglob("index.html"))
    assert len(pages) >= 20
    for page in pages:
        for src in re.findall(r'<script[^>]*src="([^"]*MathJax\.js[^"]*)"', page.read_text()):
            assert (page.parent / src.split("?")[0]).resolve().is_file(), (page.relative_to(site), src)
    notebook_pages = [p for p in pages if "notebooks" in p.parts]
    assert all("MathJax.js" in p.read_text() for p in notebook_pages)


def test_no_page_fetches_anything_from_another_host(site):
    assert book.foreign_loads(site) == {}


def test_maths_is_typeset_offline_in_a_browser(site):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver")
    pytest.importorskip("selenium", reason="pip install selenium")
    assert (site / "assets" / "mathjax" / "MathJax.js").is_file()  # served from the site itself
    for page, r in book.maths(site).items():
        assert r["finished"], page
        assert "failed" not in r["mathjax_message"].lower(), (page, r["mathjax_message"])
        if page != "index.html":  # the home page holds no formula; it must still load MathJax cleanly
            assert r["typeset"] >= 20, (page, r)  # each of these pages holds dozens of formulas
        assert sum(r["raw_tex"].values()) == 0, (page, r["raw_tex"])


def test_the_static_slider_scrubs_in_a_browser(site):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver")
    pytest.importorskip("selenium", reason="pip install selenium")
    r = book.scrub(site)
    # loaded at t = 1; two steps left; then the ends of the player's range
    assert r["readouts"] == ["t = 1.00", "t = 0.80", "t = 0.60", "t = -2.00", "t = 2.00"]
    assert r["distinct_frames"] == 5  # every new t shows a new frame


def test_the_players_are_legible_at_100_percent_and_04s_holds_every_skewed_prompt(site):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver")
    pytest.importorskip("selenium", reason="pip install selenium")
    r = book.players(site)
    assert r["03"]["label_px"] >= 11 and r["03"]["shown_px"] == min(r["03"]["frame_px"], r["03"]["shown_px"])
    g = r["04"]
    assert g["label_px"] >= 11 and g["prompts"] == 6  # notebook 04's six skewed prompts
    first, other, end = g["steps"]
    assert first["prompt"] != other["prompt"]
    assert (first["caption"], first["labels"]) != (other["caption"], other["labels"])
    assert end["readout"] == "t = 1.50" and first["readout"] != end["readout"]
    assert g["distinct_galleries"] == 3 and all(len(s["labels"]) == 10 for s in g["steps"])


def test_every_figure_has_its_own_alt_text(site):
    """Each matplotlib figure of every notebook page carries the alt text its cell's metadata gives."""
    import json
    import re

    expected, found = 0, []
    for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")) + sorted(
        (ROOT / "notebooks" / "solutions").glob("0*.ipynb")
    ):
        cells = json.loads(nb.read_text())["cells"]
        figures = [
            c for c in cells for o in c.get("outputs", []) if any(k.startswith("image/") for k in o.get("data", {}))
        ]
        assert all(c.get("metadata", {}).get("clipaln", {}).get("alt") for c in figures), (
            f"{nb.name}: a figure has no alt"
        )
        expected += len(figures)
        page = (site / "notebooks" / nb.relative_to(ROOT / "notebooks").with_suffix("") / "index.html").read_text()
        alts = re.findall(r'<img[^>]*src="data:image/[^"]{0,40}[^>]*>', page)
        found += [re.search(r'alt="([^"]*)"', tag).group(1) for tag in alts]
    assert expected >= 30
    assert "No description has been provided for this image" not in found
    assert len(set(found)) >= expected - 1  # each its own (notebooks 01 and 02 show the same pipeline figure)


def test_search_snippets_show_no_raw_tex(site):
    """Search shows its snippets as text, where MathJax never runs: the index holds plain readings of
    the formulas (docs/book_hooks.plain_maths), with each symbol a word of its own."""
    import json
    import re

    index = json.loads((site / "search" / "search_index.json").read_text())
    raw = re.compile(r"\$[^$\s][^$]*\$|\\(?:frac|top|beta|lambda|mathrm|text|sigma|tau|kappa)\b|\\[(\[]")
    hits = [(d["location"], m.group(0)) for d in index["docs"] for m in raw.finditer(d["title"] + " " + d["text"])]
    assert hits == [], hits[:5]
    words = " ".join(d["text"] for d in index["docs"] if d["location"].startswith("glossary/")).split()
    assert {"W_t", "h", "t*", "BMA"} <= set(words)


def test_plain_maths_reads_a_formula_as_text():
    spec = importlib.util.spec_from_file_location("book_hooks", ROOT / "docs" / "book_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    assert hooks.plain_maths(r"the \(W_t=US^tV^\top\) map") == "the W_t = US^tVᵀ map"
    assert hooks.plain_maths(r"at $t^*$, $\frac{1}{2\beta}=12.5$") == "at t*, 1/2β = 12.5"
    assert hooks.plain_maths(r"$$\operatorname{artanh}\cos(G,d)$$") == "artanh cos ( G , d )"
    assert hooks.plain_maths("no maths, $5") == "no maths, $5"


def test_every_page_of_the_book_in_a_browser(site):
    """Every page as a student opens it (benchmarks/book_every_page.py): nothing fails to load and
    nothing leaves the machine, no raw TeX after MathJax, no box that overflows the column, no
    serious or critical axe-core violation, every image with its own alt text; and the symbols a
    student looks up find the glossary first."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver")
    if os.environ.get("CLIPALN_BOOK_SWEEP") != "1":
        pytest.skip("the whole-book sweep takes about 7 min on 2 cores: CLIPALN_BOOK_SWEEP=1 runs it here")
    pytest.importorskip("selenium", reason="pip install selenium")
    pytest.importorskip("axe_selenium_python", reason="pip install axe-selenium-python (axe-core)")
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import book_every_page

    r = book_every_page.check(site)
    assert r["totals"]["pages"] == len(book_every_page.pages(site)) >= 23
    bad = {
        page: {k: v for k, v in p.items() if k in ("raw_tex", "failed", "foreign", "axe_serious") and v}
        for page, p in r["pages"].items()
    }
    assert not any(bad.values()), {k: v for k, v in bad.items() if v}
    t = r["totals"]
    assert t["overflowing_boxes"] == 0 and t["images_without_own_alt"] == 0, t
    assert t["figure_text_under_10px"] == 0 and t["figures_unmeasured"] == 0, t
    assert t["searches_with_glossary_first"] == t["searches"] == len(book_every_page.SEARCHES), r["search"]
    assert t["search_snippet_raw_tex"] == 0, r["search"]


def test_every_figure_and_player_reads_at_10_px_or_more_in_the_column(site):
    """At a 1280 px window, the smallest text of every figure and player, as the page shows it: each
    figure's smallest text (recorded in its output when the notebook ran) scaled by the width the
    page gives the image, and the players' HTML text at its computed size. No figure unmeasured."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver")
    pytest.importorskip("selenium", reason="pip install selenium")
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import book_every_page

    r = book_every_page.figure_text(site)
    assert sum(p["measured"] for p in r.values()) >= 45  # 34 figures, 2 player frames, 04's player's text
    assert {page: p["under_10px"] for page, p in r.items() if p["under_10px"]} == {}
    assert {page: p["unmeasured"] for page, p in r.items() if p["unmeasured"]} == {}


def test_every_committed_figure_records_its_smallest_text():
    """What the browser test scales: each figure output of every notebook carries its smallest text
    (benchmarks/execute_notebooks.py records it), a real size."""
    import json

    sizes = []
    for nb in sorted((ROOT / "notebooks").glob("**/0*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            for out in cell.get("outputs", []):
                for kind in (k for k in out.get("data", {}) if k.startswith("image/")):
                    meta = out.get("metadata", {})
                    sizes.append({**meta.get(kind, {}), **meta}.get("clipaln", {}).get("smallest_text_px"))
    assert len(sizes) >= 34 and None not in sizes, sizes
    assert all(8 <= s <= 40 for s in sizes), sizes


def test_a_skip_link_at_the_top_of_the_page_reaches_each_player(site):
    import re

    for nb in ("03_ocr_vs_detection", "04_gender_bias_retrieval"):
        page = (site / "notebooks" / nb / "index.html").read_text()
        links = re.findall(r'<a class="clipaln-skip" href="#([^"]+)"', page)
        assert len(links) == 1, nb
        target = page.index(f'id="{links[0]}"')
        assert page.index("clipaln-skip") < page.index("jp-Cell") < target  # above the first cell, down to the player


def test_next_and_previous_name_the_page_they_open(site):
    """The footer's "Next: X" opens the page titled X (07's next is Solutions 00, and says so)."""
    import html
    import re

    checked = 0
    for page in sorted(site.rglob("index.html")):
        text = page.read_text()
        for href, label in re.findall(
            r'<a href="([^"]+)" class="md-footer__link[^"]*" aria-label="(?:Next|Previous): ([^"]+)"', text
        ):
            target = (page.parent / href).resolve() / "index.html"
            m = re.search(r"<title>(.*?) - clipaln", target.read_text())
            title = m.group(1) if m else "Home"  # the home page's title is the site's name
            assert html.unescape(label) == html.unescape(title), (page.relative_to(site), label, title)
            checked += 1
    assert checked >= 40
