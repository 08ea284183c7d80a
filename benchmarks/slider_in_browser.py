"""Key press to repaint of a notebook's t slider, measured in a real browser (issue #14).

Starts JupyterLab (a fresh server and kernel) on a copy of the notebook, opens it in headless
Chromium, runs every cell, focuses the slider's handle and presses the arrow keys; for each press
it records the time from the keydown event to the second animation frame after the slider's
image has a new frame decoded (the frame is on screen by then). Prints one line of JSON.

    apt-get install chromium chromium-driver && pip install selenium jupyterlab
    python benchmarks/slider_in_browser.py notebooks/03_ocr_vs_detection.ipynb [presses]
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

PORT = int(os.environ.get("PORT", 8899))
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
source = Path(sys.argv[1]).resolve()
presses = int(sys.argv[2]) if len(sys.argv) > 2 else 40
nb = source.name
root = Path(tempfile.mkdtemp())
shutil.copy(source, root / nb)
lab = subprocess.Popen(
    [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={PORT}",
        "--ServerApp.token=",
        "--ServerApp.password=",
        "--LabApp.expose_app_in_browser=True",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
    ],
    cwd=source.parent,
    env={**os.environ, "HF_HUB_OFFLINE": "1"},
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
time.sleep(8)
drv = None
try:
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(CHROMEDRIVER))
    drv.set_script_timeout(600)
    drv.get(f"http://127.0.0.1:{PORT}/lab/tree/{nb}")
    for _ in range(120):
        ok = drv.execute_script("return !!(window.jupyterapp && document.querySelector('.jp-Notebook'))")
        if ok:
            break
        time.sleep(1)
    time.sleep(5)
    # wait for the kernel to be idle, then run all cells
    drv.execute_script("return window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    time.sleep(1)
    drv.execute_script("return window.jupyterapp.commands.execute('notebook:run-all-cells')")
    t0 = time.time()
    while True:
        time.sleep(2)
        busy = drv.execute_script(
            "return [...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'))"
        )
        done = drv.execute_script(
            "return [...document.querySelectorAll('.jp-OutputArea-output')]"
            ".some(e => e.textContent.includes('for viewers without widgets'))"
        )
        if (done and not busy) or time.time() - t0 > 500:
            break
    time.sleep(3)
    handles = drv.find_elements(
        By.CSS_SELECTOR, ".widget-slider .noUi-handle, .jupyter-widget-slider .noUi-handle, .noUi-handle"
    )
    h = handles[0]
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", h)
    # the Image widget next to the slider: the first <img> in the same VBox
    img = drv.execute_script(
        """
      const box = arguments[0].closest('.widget-vbox, .jupyter-widgets.widget-container');
      return box.querySelector('img');""",
        h,
    )
    drv.execute_script(
        """
      window.__lat = []; window.__t0 = null;
      const img = arguments[0];
      document.addEventListener('keydown', e => { window.__t0 = performance.now(); }, true);
      new MutationObserver(() => {
        const t0 = window.__t0; if (t0 === null) return;
        img.decode().catch(() => {}).then(() => requestAnimationFrame(() => requestAnimationFrame(() => {
          window.__lat.push(performance.now() - t0); window.__t0 = null; })));
      }).observe(img, {attributes: true, attributeFilter: ['src']});
    """,
        img,
    )
    h.click()
    time.sleep(1)
    drv.execute_script(
        """window.__lat = []; window.__seen = [];
        const readout = document.querySelector('.widget-readout');
        new MutationObserver(() => window.__seen.push(readout.textContent))
            .observe(readout, {childList: true, characterData: true, subtree: true});"""
    )
    for k in range(presses):
        key = Keys.ARROW_RIGHT if (k // 5) % 2 == 0 else Keys.ARROW_LEFT
        ActionChains(drv).send_keys(key).perform()
        time.sleep(0.4)
    lat = drv.execute_script("return window.__lat")
    val = drv.execute_script(
        "return document.querySelector('.widget-readout') && document.querySelector('.widget-readout').textContent"
    )
    print(
        json.dumps(
            {
                "notebook": nb,
                "presses": presses,
                "repaints": len(lat),
                "median_ms": round(statistics.median(lat), 1) if lat else None,
                "p90_ms": round(sorted(lat)[int(0.9 * len(lat))], 1) if lat else None,
                "max_ms": round(max(lat), 1) if lat else None,
                "readout": val,
                "readouts": drv.execute_script("return window.__seen"),
                "all_ms": [round(x) for x in lat],
            }
        )
    )
finally:  # never leave a server, a browser or the copy behind
    if drv is not None:
        drv.quit()
    lab.terminate()
    shutil.rmtree(root, ignore_errors=True)
