"""Build the book and scrub notebook 03's static slider in headless Chromium; prints (and with
--out writes) what the page showed after each key press.

    python benchmarks/book_in_browser.py --out benchmarks/results/book_in_browser.json

Needs `apt-get install chromium chromium-driver` and `pip install selenium` (and the book's
mkdocs-jupyter, in the dev extras)."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = "notebooks/03_ocr_vs_detection/index.html"
KEYS = ("ARROW_LEFT", "ARROW_LEFT", "HOME", "END")


def build(site: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-q", "-d", str(site)], cwd=ROOT, capture_output=True, text=True
    )
    if run.returncode:
        raise RuntimeError(f"mkdocs build failed: {run.stderr[-2000:]}")


def scrub(site: Path) -> dict:
    """Open notebook 03's page, press KEYS on its player; the readout and frame after each."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise FileNotFoundError("no headless Chromium here: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        result = scrub(Path(tmp))
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
