"""Every page of the built book in headless Chromium, as a student opens it: served from this machine
(no network), at a laptop's 1280 x 900 window. Per page: the requests that failed or left the
machine, raw TeX left in the prose after MathJax ran, code blocks that overflow their box, text in
figures and players under 10 px as the page shows it, and
axe-core's serious and critical accessibility violations; a screenshot of each page. Then the
book's search, for the symbols a student looks up.

    python benchmarks/book_every_page.py --out benchmarks/results/book_every_page.json

Needs `apt-get install chromium chromium-driver` and `pip install selenium axe-selenium-python`
(the dev extras). Screenshots go to benchmarks/results/book/ (not committed)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import re
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from book_in_browser import build, wait_for_mathjax  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parent.parent
WINDOW = (1280, 900)
#: TeX that MathJax should have typeset; found in a page's prose (not its code), it was not.
RAW_TEX = re.compile(r"\$[^$\s][^$]*\$|\\(?:frac|top|beta|lambda|mathrm|text|sigma|tau|kappa|ln|log)\b|\\[(\[]")
#: The symbols a student looks up, and the page each should find first.
SEARCHES = {"t*": "glossary/", "BMA": "glossary/", "W_t": "glossary/", "beta": "glossary/", "h": "glossary/"}


def pages(site: Path) -> list[str]:
    found = sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html"))
    return [p for p in found if not p.startswith(("assets/", "search/"))]


@contextlib.contextmanager
def serve(site: Path):
    """The site on 127.0.0.1 (search needs HTTP: it fetches its index); yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def _browser():
    from book_in_browser import _browser as chromium

    return chromium(WINDOW, performance_log=True)


def _network(browser, base: str) -> dict:
    """From the performance log since the last call: failed requests and requests to another host."""
    failed, foreign, urls = [], [], {}
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent":
            url = params["request"]["url"]
            urls[params["requestId"]] = url
            if url.startswith(("http:", "https:", "ws:", "wss:")) and not url.startswith(base):
                foreign.append(url)
        elif msg["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            failed.append(f"{params['response']['status']} {params['response']['url']}")
        elif msg["method"] == "Network.loadingFailed" and urls.get(params["requestId"], "").startswith("http"):
            failed.append(f"{params.get('errorText')} {urls.get(params['requestId'], '?')}")
    return {"failed": sorted(set(failed)), "foreign": sorted(set(foreign))}


PROSE_JS = """
var roots = document.querySelectorAll('.jp-RenderedMarkdown, article.md-content__inner');
var text = [];
roots.forEach(function (root) {
  var copy = root.cloneNode(true);
  copy.querySelectorAll('pre, code, script, .MathJax, .MathJax_Display, .MathJax_Preview, .jp-InputArea')
      .forEach(function (e) { e.remove(); });
  text.push(copy.textContent);
});
return text.join('\\n');
"""
#: The text a student reads in figures and players, in screen pixels: a figure's smallest text (its
#: <img>'s data-smallest-text-px, or a player frame's data-font-px, both in the image's own pixels)
#: scaled by how wide the page shows the image; a player's HTML text at its computed size. Figures
#: that carry no measure are counted, so that none is missed.
FIGURE_TEXT_JS = """
var shown = [], unmeasured = 0;
document.querySelectorAll('.jp-OutputArea-output img, .clipaln-player img').forEach(function (i) {
  var own = parseFloat(i.dataset.smallestTextPx || i.dataset.fontPx);
  if (i.closest('.clipaln-gallery')) return;   // a gallery's thumbnails are photographs, its text is HTML
  if (!own) { unmeasured += 1; return; }
  var r = i.getBoundingClientRect();
  shown.push({px: own * r.width / i.naturalWidth, alt: (i.alt || '').slice(0, 60)});
});
document.querySelectorAll('.clipaln-player *').forEach(function (e) {
  var own = Array.from(e.childNodes).some(function (n) { return n.nodeType === 3 && n.textContent.trim(); });
  if (own && e.getClientRects().length)
    shown.push({px: parseFloat(getComputedStyle(e).fontSize), alt: e.className + ': ' + e.textContent.slice(0, 40)});
});
return {shown: shown, unmeasured: unmeasured};
"""
OVERFLOW_JS = """
return Array.from(document.querySelectorAll('pre, table')).filter(function (e) {
  if (e.scrollWidth <= e.clientWidth + 1) return false;
  for (var p = e; p && p !== document.body; p = p.parentElement) {
    var o = getComputedStyle(p).overflowX;
    if (o === 'auto' || o === 'scroll') return false;   // it scrolls inside its box
  }
  return true;
}).length;
"""


def sweep(base: str, paths: list[str], shots: Path | None) -> dict:
    browser = _browser()
    browser.set_script_timeout(300)  # axe on a notebook page with its figures inline takes a while
    out = {}
    try:
        for path in paths:
            try:
                out[path] = _check_page(browser, base, path, shots)
            except Exception as e:
                e.add_note(f"while checking {path}")
                raise
    finally:
        browser.quit()
    return out


def _check_page(browser, base: str, path: str, shots: Path | None) -> dict:
    from axe_selenium_python import Axe

    _network(browser, base)  # empty the log
    browser.get(base + path)
    _wait_for_whole_page(browser)
    typeset = wait_for_mathjax(browser, required=False)
    prose = browser.execute_script(PROSE_JS)
    raw = sorted({m.group(0)[:40] for m in RAW_TEX.finditer(prose)})
    axe = Axe(browser)
    axe.inject()
    started = time.time()
    result = axe.run(options={"resultTypes": ["violations"]})
    axe_s = time.time() - started
    serious = [
        {
            "id": v["id"],
            "impact": v["impact"],
            "nodes": len(v["nodes"]),
            "example": v["nodes"][0]["html"][:160] if v["nodes"] else "",
        }  # fmt: skip
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('img')).map(function (i) { return i.alt || ''; })"
    )
    text = browser.execute_script(FIGURE_TEXT_JS)
    page = {
        "mathjax_finished": typeset,
        "figure_text_min_px": round(min((t["px"] for t in text["shown"]), default=float("nan")), 1),
        "figure_text_under_10px": [f"{t['px']:.1f} px: {t['alt']}" for t in text["shown"] if t["px"] < 10],
        "figures_unmeasured": text["unmeasured"],
        "raw_tex": raw,
        "overflowing_boxes": browser.execute_script(OVERFLOW_JS),
        "axe_serious": serious,
        "axe_s": round(axe_s, 1),
        "images": len(images),
        "images_without_alt": sum(not a.strip() for a in images),
        "default_alt": sum("No description has been provided" in a for a in images),
        **_network(browser, base),
    }
    if shots:
        name = path.removesuffix("index.html").strip("/").replace("/", "__") or "home"
        browser.save_screenshot(str(shots / f"{name}.png"))
    return page


def _wait_for_whole_page(browser, timeout: float = 60) -> None:
    """Until the page is parsed to its footer and every image is decoded (a notebook page of a few
    MB of inline figures can be read by a script before its end has arrived)."""
    start = time.time()
    while time.time() - start < timeout:
        if browser.execute_script(
            "return document.readyState === 'complete' && !!document.querySelector('.md-footer')"
            " && Array.from(document.images).every(function (i) { return i.complete && i.naturalWidth > 0; })"
        ):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{browser.current_url} did not finish loading in {timeout:.0f} s")


def figure_text(site: Path) -> dict:
    """Only the figures' and players' text, on every page (a quick part of the sweep, for the tests):
    per page, its smallest text in screen pixels, the texts under 10 px and the figures unmeasured."""
    out = {}
    with serve(site) as base:
        browser = _browser()
        try:
            for path in pages(site):
                browser.get(base + path)
                _wait_for_whole_page(browser)
                text = browser.execute_script(FIGURE_TEXT_JS)
                out[path] = {
                    "min_px": round(min((t["px"] for t in text["shown"]), default=float("nan")), 1),
                    "under_10px": [f"{t['px']:.1f} px: {t['alt']}" for t in text["shown"] if t["px"] < 10],
                    "unmeasured": text["unmeasured"],
                    "measured": len(text["shown"]),
                }
        finally:
            browser.quit()
    return out


def search(base: str, queries=SEARCHES) -> dict:
    """Type each query into the book's search box; the first results' pages, in order."""
    from selenium.webdriver.common.by import By

    browser = _browser()
    out = {}
    try:
        browser.get(base)
        for query, want in queries.items():
            browser.get(base + "?q=" + urllib.parse.quote(query))  # Material opens its search with ?q=
            time.sleep(1.0)
            box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
            box.clear()
            box.send_keys(query)
            start, links = time.time(), []
            while time.time() - start < 20 and not links:
                time.sleep(0.3)
                links = browser.execute_script(
                    "return Array.from(document.querySelectorAll('.md-search-result__item > .md-search-result__link'))"
                    ".map(function (a) { return [a.getAttribute('href'), a.innerText.slice(0, 200)]; })"
                )
            first = [urllib.parse.urlparse(h).path.replace(urllib.parse.urlparse(base).path, "", 1) for h, _ in links]
            out[query] = {
                "want_first": want,
                "first": first[:5],
                "snippet_raw_tex": sorted({m.group(0)[:40] for _, t in links[:10] for m in RAW_TEX.finditer(t)}),
            }
    finally:
        browser.quit()
    return out


def check(site: Path, shots: Path | None = None) -> dict:
    with serve(site) as base:
        every = sweep(base, pages(site), shots)
        found = search(base)
    totals = {
        "pages": len(every),
        "raw_tex": sum(len(p["raw_tex"]) for p in every.values()),
        "failed_requests": sum(len(p["failed"]) for p in every.values()),
        "foreign_requests": sum(len(p["foreign"]) for p in every.values()),
        "axe_serious_or_critical": sum(len(p["axe_serious"]) for p in every.values()),
        "overflowing_boxes": sum(p["overflowing_boxes"] for p in every.values()),
        "figure_text_under_10px": sum(len(p["figure_text_under_10px"]) for p in every.values()),
        "figures_unmeasured": sum(p["figures_unmeasured"] for p in every.values()),
        "images_without_own_alt": sum(p["images_without_alt"] + p["default_alt"] for p in every.values()),
        "searches_with_glossary_first": sum(
            bool(r["first"]) and r["first"][0].startswith(r["want_first"]) for r in found.values()
        ),
        "searches": len(found),
        "search_snippet_raw_tex": sum(len(r["snippet_raw_tex"]) for r in found.values()),
    }
    return {"window": list(WINDOW), "totals": totals, "pages": every, "search": found}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the JSON here, and the screenshots into its folder's book/")
    a = ap.parse_args()
    shots = Path(a.out).parent / "book" if a.out else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        result = check(Path(tmp), shots)
    print(json.dumps(result["totals"], indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
