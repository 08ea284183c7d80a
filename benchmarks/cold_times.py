"""How long each notebook takes from an empty feature cache (cold) and again with it filled (warm),
and the whole series cold in one cache, on this machine; nothing is written into the notebooks.

    python benchmarks/cold_times.py [NOTEBOOK ...] [--out benchmarks/results/cold_times.json]

Cold is what a student sees first: CLIPALN_CACHE points at a new, empty folder. Any text in an
output that looks like a traceback, a warning or DataLoader worker noise is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOISE = re.compile(r"Traceback|Exception ignored|Warning|warn\(|can only test a child process")


def run(path: Path, cache: Path) -> tuple[float, list[str]]:
    """Execute a notebook with CLIPALN_CACHE=cache; (seconds, noisy outputs)."""
    nb = nbformat.read(path, as_version=4)
    os.environ["CLIPALN_CACHE"] = str(cache)
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    seconds = time.perf_counter() - start
    noisy = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            text = o.get("text", "") if o["output_type"] == "stream" else o.get("data", {}).get("text/plain", "")
            if o["output_type"] == "stream" and o["name"] == "stderr" or NOISE.search(text):
                noisy.append(f"cell {i}: {text[:200]}")
    return seconds, noisy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="default: every notebooks/0*.ipynb")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--cold-only", action="store_true", help="skip the warm and the series runs (a third of the time)")
    a = ap.parse_args()
    paths = [Path(p) for p in a.notebooks] or sorted((ROOT / "notebooks").glob("0*.ipynb"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = {
        "machine": {
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        }
    }
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "series"  # one cache for the whole series, filled as it goes
        total = 0.0
        for p in paths:
            cold, noisy = run(p, Path(tmp) / f"cold-{p.stem}")  # an empty cache of its own
            warm, _ = (None, None) if a.cold_only else run(p, Path(tmp) / f"cold-{p.stem}")
            in_series, _ = (cold, None) if a.cold_only else run(p, series)  # cold-only: the sum bounds the series
            total += in_series
            rows[p.name] = {
                "cold_s": round(cold, 1),
                "warm_s": None if warm is None else round(warm, 1),
                "in_series_s": round(in_series, 1),
                "noise": noisy,
            }
            print(
                f"{p.name:<40} cold {cold:6.1f} s  warm {warm or float('nan'):6.1f} s  "
                f"in the series {in_series:6.1f} s  noise: {len(noisy)}",
                flush=True,
            )
    out |= {"notebooks": rows, "series_cold_s": round(total, 1)}
    print(f"the whole series from one empty cache: {total:.0f} s")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
