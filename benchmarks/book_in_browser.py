"""Build the book and scrub notebook 03's static slider in headless Chromium; prints (and with
--out writes) what the page showed after each key press, the maths it typeset, its broken links,
and how large the players' labels are at 100% zoom (with --out, screenshots of both players beside it).

    python benchmarks/book_in_browser.py --out benchmarks/results/book_in_browser.json

Needs `apt-get install chromium chromium-driver` and `pip install selenium` (and the book's
mkdocs-jupyter, in the dev extras)."""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = "notebooks/03_ocr_vs_detection/index.html"
GALLERY_PAGE = "notebooks/04_gender_bias_retrieval/index.html"
KEYS = ("ARROW_LEFT", "ARROW_LEFT", "HOME", "END")
#: A laptop's window at 100% zoom: the book's content column is at its narrowest beside both sidebars.
WINDOW = (1280, 900)


def build(site: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-q", "-d", str(site)], cwd=ROOT, capture_output=True, text=True
    )
    if run.returncode:
        raise RuntimeError(f"mkdocs build failed: {run.stderr[-2000:]}")


MATH_PAGES = (
    "index.html",
    "notebooks/03_ocr_vs_detection/index.html",
    "notebooks/04_gender_bias_retrieval/index.html",
    "glossary/index.html",
)
RAW_TEX = ("$$", "\\frac", "\\top", "$t$")


def broken_links(site: Path) -> dict[str, list[str]]:
    """Every relative href of every page that names no file of the site: {page: [hrefs]}. mkdocs'
    404.html uses absolute URLs, for a server's root, and is left out."""
    bad: dict[str, list[str]] = {}
    for page in sorted(site.rglob("*.html")):
        if page.name == "404.html" and page.parent == site:
            continue
        for href in re.findall(r'href="([^"]+)"', page.read_text(errors="replace")):
            path = urllib.parse.urlparse(html.unescape(href)).path
            if href.startswith(("#", "mailto:", "javascript:", "data:")) or "://" in href or not path:
                continue
            target = (page.parent / urllib.parse.unquote(path)).resolve()
            if not (target.is_file() or (target / "index.html").is_file()):
                bad.setdefault(str(page.relative_to(site)), []).append(href)
    return bad


def foreign_loads(site: Path) -> dict[str, list[str]]:
    """Every script, stylesheet or font a page would fetch from another host: {page: [urls]}."""
    out: dict[str, list[str]] = {}
    pattern = (
        r'<script[^>]*\ssrc="(https?://[^"]+)"|<link[^>]*\shref="(https?://[^"]+)"|[\'"](https?://[^\'"]+\.js)[\'"]'
    )
    for page in sorted(site.rglob("*.html")):
        urls = [a or b or c for a, b, c in re.findall(pattern, page.read_text(errors="replace"))]
        urls = [u for u in urls if not u.endswith((".ipynb",))]
        if urls:
            out[str(page.relative_to(site))] = sorted(set(urls))
    return out


def _browser(window=None, performance_log: bool = False):
    from selenium import webdriver

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise FileNotFoundError("no headless Chromium here: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    if performance_log:  # every request the page makes, for failed and foreign requests
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)
    # selenium's client gives up on a command after 120 s; axe-core on the longest notebook page took
    # 73 s on a quick day and over 120 s on a slow one: the scripts' own timeouts decide, not this one
    browser.command_executor.client_config.timeout = 900
    if window:
        browser.set_window_size(*window)
    return browser


def wait_for_mathjax(browser, timeout: float = 60, required: bool = True) -> bool:
    """Wait until MathJax's queue has been empty three polls running; whether it was (a page without
    MathJax counts as finished only when not `required`)."""
    start, quiet = time.time(), 0
    while time.time() - start < timeout and quiet < 3:
        idle = browser.execute_script(
            "var q = window.MathJax && MathJax.Hub && MathJax.Hub.queue;"
            f"return {'!!q &&' if required else '!q ||'} (q.pending === 0 && q.running === 0"
            " && !document.querySelector('.MathJax_Processing, .MathJax_Preview:not(:empty)'))"
        )
        quiet = quiet + 1 if idle else 0
        time.sleep(0.5)
    return quiet >= 3


def maths(site: Path, pages=MATH_PAGES, timeout: float = 60) -> dict:
    """Open each page from a file:// URL (no server, no network) and wait for MathJax to finish;
    per page, how many formulas it typeset and how often raw TeX is left in the visible text."""
    browser = _browser()
    out = {}
    try:
        for page in pages:
            browser.get((site / page).as_uri())
            finished = wait_for_mathjax(browser, timeout)
            typeset = browser.execute_script(
                "return document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_SVG, .MathJax_CHTML').length"
            )
            text = browser.execute_script(
                "return Array.from(document.querySelectorAll('.jp-RenderedMarkdown, article'))"
                ".map(function (e) { return e.innerText; }).join('\\n')"
            )
            failed = browser.execute_script(  # every message MathJax showed, "File failed to load: ..." among them
                "return (window.MathJax && MathJax.Message && MathJax.Message.Log) ? MathJax.Message.Log() : ''"
            )
            out[page] = {
                "typeset": typeset,
                "raw_tex": {k: text.count(k) for k in RAW_TEX},
                "finished": finished,
                "mathjax_message": failed.strip(),
            }
    finally:
        browser.quit()
    return out


def scrub(site: Path) -> dict:
    """Open notebook 03's page, press KEYS on its player; the readout and frame after each."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser = _browser()
    try:
        browser.get((site / PAGE).as_uri())
        player = browser.find_element(By.CSS_SELECTOR, ".clipaln-player")
        slider = player.find_element(By.CSS_SELECTOR, "input[type=range]")
        image = player.find_element(By.TAG_NAME, "img")
        readout = player.find_element(By.CSS_SELECTOR, ".clipaln-readout")
        browser.execute_script("arguments[0].scrollIntoView()", slider)
        seen = [(readout.text, hashlib.sha1(image.get_attribute("src").encode()).hexdigest())]
        for key in KEYS:
            slider.send_keys(getattr(Keys, key))
            seen.append((readout.text, hashlib.sha1(image.get_attribute("src").encode()).hexdigest()))
        version = browser.capabilities.get("browserVersion")
    finally:
        browser.quit()
    return {
        "page": PAGE,
        "browser": f"headless Chromium {version}",
        "keys": ["(loaded)", *KEYS],
        "readouts": [r for r, _ in seen],
        "distinct_frames": len({f for _, f in seen}),
    }


def players(site: Path, shots: Path | None = None) -> dict:
    """Open 03's and 04's pages in a laptop's window at 100% zoom; how large each player's smallest
    label is on screen, in CSS px (03: the frame's smallest font, data-font-px, times the frame's
    shrink; 04: the computed font size of the gallery's labels, caption and readout), and what 04's
    menu changes. With shots, a screenshot of each player is written there."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser = _browser(WINDOW)
    out = {"window": list(WINDOW)}
    try:
        browser.get((site / PAGE).as_uri())
        player = browser.find_element(By.CSS_SELECTOR, ".clipaln-player")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", player)
        out["03"] = browser.execute_script(
            "var i = arguments[0].querySelector('img'); return {frame_px: i.naturalWidth, shown_px: i.clientWidth,"
            " label_px: parseFloat(i.dataset.fontPx) * i.clientWidth / i.naturalWidth}",
            player,
        )
        out["03"]["label_px"] = round(out["03"]["label_px"], 1)
        if shots:
            player.screenshot(str(shots / "player_03_in_the_book.png"))
        browser.get((site / GALLERY_PAGE).as_uri())
        player = browser.find_element(By.CSS_SELECTOR, ".clipaln-gallery")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", player)
        state = lambda: browser.execute_script(
            "var p = arguments[0], px = function (e) { return parseFloat(getComputedStyle(e).fontSize); };"
            "var labels = Array.from(p.querySelectorAll('.clipaln-label'));"
            "return {prompt: p.querySelector('select').selectedOptions[0].text,"
            " readout: p.querySelector('.clipaln-readout').textContent,"
            " caption: p.querySelector('.clipaln-caption').textContent,"
            " labels: labels.map(function (e) { return e.textContent; }),"
            " images: Array.from(p.querySelectorAll('img'))"
            "   .map(function (e) { return e.src.length + ':' + e.src.slice(-24); }),"
            " label_px: Math.min.apply(null, labels.map(px).concat([px(p.querySelector('.clipaln-caption')),"
            "   px(p.querySelector('.clipaln-readout'))])),"
            " cell_px: p.querySelector('td img').clientWidth,"
            " prompts: p.querySelectorAll('option').length}",
            player,
        )
        seen = [state()]
        if shots:
            player.screenshot(str(shots / "player_04_in_the_book.png"))
        Select(player.find_element(By.TAG_NAME, "select")).select_by_index(0)
        seen.append(state())
        player.find_element(By.CSS_SELECTOR, "input[type=range]").send_keys(Keys.END)
        seen.append(state())
        out["04"] = {
            "prompts": seen[0]["prompts"],
            "label_px": min(s["label_px"] for s in seen),
            "cell_px": seen[0]["cell_px"],
            "steps": [{k: s[k] for k in ("prompt", "readout", "caption", "labels")} for s in seen],
            "distinct_galleries": len({tuple(s["images"]) for s in seen}),
        }
    finally:
        browser.quit()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        result = scrub(Path(tmp))
        result["maths"] = maths(Path(tmp))
        result["broken_links"] = broken_links(Path(tmp))
        result["players"] = players(Path(tmp), Path(a.out).parent if a.out else None)
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
