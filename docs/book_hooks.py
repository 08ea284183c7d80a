"""mkdocs hooks for the book (mkdocs.yml, `hooks:`): maths typeset with no network.

MathJax 2.7 comes from a Python package, jupyter-server-mathjax (the Jupyter project's offline
MathJax), and is copied into the site as assets/mathjax, so the pages work from a file:// URL or a
server with no internet. Notebook pages load it through mkdocs-jupyter's `custom_mathjax_url`
(every notebook page sits two folders deep); markdown pages get it here, with a configuration for
pymdownx.arithmatex's generic output (\\( \\) and \\[ \\] inside elements of class "arithmatex")."""

from __future__ import annotations

import html
import json
import posixpath
import re
import shutil
from pathlib import Path

MATHJAX = "assets/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
ARITHMATEX_CONFIG = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({tex2jax: {inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]],
  processEscapes: true, processEnvironments: false, ignoreClass: ".*|", processClass: "arithmatex"}});
</script>"""
#: The package ships MathJax's STIX-Web fonts only (not its TeX fonts, MathJax's default): say so on
#: every page, or MathJax reports "File failed to load: .../fonts/TeX/fontdata.js".
FONT_CONFIG = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({"HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web",
  imageFont: null}});
</script>"""


def _mathjax_static() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise RuntimeError("the book needs jupyter-server-mathjax (offline maths): pip install -e '.[book]'") from None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


COLAB_BADGE = re.compile(r'<img[^>]*src="https://colab\.research\.google\.com/assets/colab-badge\.svg"[^>]*/?>')


def on_config(config, **_):
    _mathjax_static()  # fail at once, not after every page is built
    return config


def on_post_page(output: str, page, config, **_):
    if not page.file.src_uri.endswith(".md"):  # notebook pages load MathJax through mkdocs-jupyter
        output = _note_live_widgets(_rewrite_links(output, page)).replace("</head>", FONT_CONFIG + "\n</head>", 1)
        output = _skip_links(output)
        # mkdocs-jupyter's custom_mathjax_url is one string for every page; a solutions page sits a folder deeper
        output = output.replace(f"../../{MATHJAX}", "../" * page.url.count("/") + MATHJAX)
        if page.file.src_uri.endswith(".ipynb"):
            output = _alt_texts(output, Path(page.file.abs_src_path))
        return COLAB_BADGE.sub("Open in Colab", output)  # the link stays; the badge image would load from Google
    depth = page.url.count("/")
    script = f'{ARITHMATEX_CONFIG}\n{FONT_CONFIG}\n<script src="{"../" * depth}{MATHJAX}"></script>\n'
    return output.replace("</body>", script + "</body>", 1)


def on_post_build(config, **_):
    target = Path(config["site_dir"]) / "assets" / "mathjax"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(_mathjax_static(), target)
    index = Path(config["site_dir"]) / "search" / "search_index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        for doc in data["docs"]:
            doc["title"], doc["text"] = plain_maths(doc["title"]), plain_maths(doc["text"])
        index.write_text(json.dumps(data, ensure_ascii=False))


# --- maths in search results -------------------------------------------------------------------
# Search shows its snippets as text, where no MathJax runs: "$\\frac{1}{2\\beta}$" would show raw. The
# index gets a plain reading of each formula instead ("1/2β"), with its symbols as separate words,
# so that a search for W_t or h finds them.

_GREEK = dict(alpha="α", beta="β", gamma="γ", delta="δ", epsilon="ε", varepsilon="ε", eta="η", theta="θ",
              kappa="κ", lambda_="λ", mu="μ", pi="π", rho="ρ", sigma="σ", tau="τ", phi="φ", chi="χ",
              Delta="Δ", Sigma="Σ", Pi="Π")  # fmt: skip
_SYMBOLS = dict(top="ᵀ", le="≤", leq="≤", ge="≥", geq="≥", approx="≈", times="×", cdot="·", to="→",
                infty="∞", mid="|", Vert="‖", lVert="‖", rVert="‖", ne="≠", neq="≠", pm="±", succeq="⪰",
                ln="ln", log="log", exp="exp", min="min", max="max", sum="Σ", KL="KL", perp="⊥",
                cos="cos", sin="sin", tanh="tanh", det="det", arg="arg")  # fmt: skip
_MATH = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]|\$\$(.+?)\$\$|\$([^$\n]{1,300}?)\$", re.S)


def _plain_formula(tex: str) -> str:
    for _ in range(3):  # nested fractions and text, innermost first
        tex = re.sub(r"\\[td]?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", tex)
        tex = re.sub(r"\\operatorname\{([^{}]*)\}", r" \1 ", tex)
        tex = re.sub(r"\\(?:text|mathrm|mathbf|mathit|mathcal)\{([^{}]*)\}", r"\1", tex)
    names = {**{k.rstrip("_"): v for k, v in _GREEK.items()}, **_SYMBOLS}
    word = lambda v: f" {v} " if v.isalpha() and v.isascii() else v  # cos, ln: a word of their own
    tex = re.sub(r"\\([A-Za-z]+)", lambda m: word(names.get(m[1], "")), tex)
    tex = re.sub(r"\\[,;:! ]", " ", tex).replace("\\_", "_").replace("\\", "").replace("{", "").replace("}", "")
    tex = re.sub(r"\(([^\s()]+)\)/\(([^\s()]+)\)", r"\1/\2", tex)  # (1)/(2β): 1/2β
    tex = tex.replace("^*", "*").replace("^ᵀ", "ᵀ")
    tex = re.sub(r"([=<>+,()\[\]|≤≥≈])", r" \1 ", tex)
    return re.sub(r"\s+", " ", tex).strip()


def plain_maths(text: str) -> str:
    """`text` with each formula ($...$, $$...$$, \\(...\\), \\[...\\]) replaced by a plain reading of it."""
    return _MATH.sub(lambda m: _plain_formula(next(g for g in m.groups() if g is not None)), text)


# --- links inside notebooks ---------------------------------------------------------------------
# mkdocs rewrites a markdown page's links to other pages; mkdocs-jupyter does not, so a notebook's
# "[Worked solutions](solutions/04_solutions.ipynb)" would point at a file the site does not have.

_PAGES: dict[str, str] = {}  # source path -> page URL


def on_files(files, config, **_):
    _PAGES.clear()
    _PAGES.update({f.src_uri: f.url for f in files if f.src_uri.endswith((".md", ".ipynb"))})
    return files


def _site_link(page, href: str) -> str | None:
    """The page URL, relative to `page`, that a notebook's relative link to a .ipynb or .md names."""
    path, _, anchor = href.partition("#")
    if "://" in path or path.startswith(("/", "mailto:")) or not path.endswith((".ipynb", ".md")):
        return None
    target = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), path))
    if target not in _PAGES and target.startswith("docs/"):  # a notebook's ../docs/glossary.md: the book's glossary.md
        target = target[len("docs/") :]
    if target not in _PAGES:
        return None
    here = posixpath.dirname(page.url.rstrip("/")) if not page.url.endswith("/") else page.url.rstrip("/")
    rel = posixpath.relpath(_PAGES[target] or ".", here or ".")
    rel = rel if rel.endswith("/") or rel == "." else rel + "/"
    return rel + (f"#{anchor}" if anchor else "")


def _rewrite_links(output: str, page) -> str:
    def fix(m):
        new = _site_link(page, html.unescape(m.group(2)))
        return m.group(0) if new is None else f"{m.group(1)}{html.escape(new)}{m.group(3)}"

    return re.sub(r'(href=")([^"]+)(")', fix, output)


# --- players: a skip link at the top of the page to each, for a keyboard ---------------------------

_ARTICLE = re.compile(r'(<article class="md-content__inner md-typeset">)')


def _skip_links(output: str) -> str:
    ids = list(
        dict.fromkeys(
            re.findall(r'<div class="clipaln-player[^"]*" id="(clipaln-(?:player|gallery)-[0-9a-f]+)"', output)
        )
    )
    if not ids:
        return output
    links = " · ".join(
        f'<a class="clipaln-skip" href="#{i}">Skip to the {"gallery" if "gallery" in i else "t"} player'
        f"{f' {n}' if len(ids) > 1 else ''}</a>"
        for n, i in enumerate(ids, 1)
    )
    return _ARTICLE.sub(
        lambda m: m.group(1) + f'<p class="clipaln-skips">{links} (a slider: the arrow keys move t)</p>',
        output,
        count=1,
    )


# --- live widgets ------------------------------------------------------------------------------
# A live ipywidgets slider needs a kernel, and its page view needs the widget library from a CDN:
# in the book, offline above all, its output is an empty box. Say so, and point to the player.

WIDGET_NOTE = (
    '<p class="clipaln-widget-note"><em>Here runs the live slider when the notebook runs in Jupyter '
    "with a kernel; this page has none. The player below is the same slider, precomputed: drag it.</em></p>"
)


def _alt_texts(output: str, notebook: Path) -> str:
    """Each figure's own alt text, from its cell's metadata (`{"clipaln": {"alt": ...}}`), in place of
    nbconvert's "No description has been provided"; and the size of its smallest text, from its
    output's metadata, as `data-smallest-text-px` (read by benchmarks/book_every_page.py). The
    figure's <img> is found by its data."""
    for cell in json.loads(notebook.read_text())["cells"]:
        alt = cell.get("metadata", {}).get("clipaln", {}).get("alt")
        for out in cell.get("outputs", []) if alt else []:
            for kind, data in out.get("data", {}).items():
                if not (kind.startswith("image/") and isinstance(data, str)):
                    continue
                meta = out.get("metadata", {})  # IPython's Image nests it under its MIME type
                smallest = {**meta.get(kind, {}), **meta}.get("clipaln", {}).get("smallest_text_px")
                extra = f' data-smallest-text-px="{float(smallest):g}"' if smallest else ""
                at = output.find(f"data:{kind};base64,{''.join(data.split())}")
                begin = output.rfind("<img", 0, at)
                if at < 0 or begin < 0:
                    continue
                close = output.find(">", at)
                tag = re.sub(r'\s(?:alt|data-smallest-text-px)="[^"]*"', "", output[begin:close])
                end = " /" if tag.rstrip().endswith("/") else ""
                tag = tag.rstrip().removesuffix("/").rstrip()
                output = output[:begin] + tag + f' alt="{html.escape(alt)}"{extra}{end}' + output[close:]
    return output


def _note_live_widgets(output: str) -> str:
    """The note after each live widget; and no loader that fetches the widget library from a CDN
    (a page of the book loads scripts from itself only, and offline that fetch only fails)."""
    view = '<script type="application/vnd.jupyter.widget-view+json">'
    output = re.sub(re.escape(view) + r"[^<]*</script>", lambda m: m.group(0) + WIDGET_NOTE, output)
    return re.sub(r"<script>(?:(?!</script>).)*addWidgetsRenderer(?:(?!</script>).)*</script>", "", output, flags=re.S)
