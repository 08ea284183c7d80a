"""How long each notebook takes from an empty feature cache (cold) and again with it filled (warm),
and the whole series cold in one cache, on this machine; nothing is written into the notebooks.

    python benchmarks/cold_times.py [NOTEBOOK ...] [--out benchmarks/results/cold_times.json] [--docs]

--docs writes the recorded times where a reader sees them (each header, the README's table and its
sentence on the recorded day, docs/teaching.md, the book's home page); tests/test_study_times.py
checks each against benchmarks/results/cold_times.json.

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


RECORDED = ROOT / "benchmarks" / "results" / "cold_times.json"


def _sub(path: Path, pattern: str, repl, count: int) -> None:
    text, n = re.subn(pattern, repl, path.read_text(), flags=re.M)
    if n != count:
        raise SystemExit(f"{path}: {n} places match {pattern!r}, expected {count}")
    path.write_text(text)


def write_docs(recorded: dict) -> None:
    """The recorded times (cold_times.json's content) into the headers, the README, the teaching guide
    and the book's home page."""
    cold = {name.split("_")[0]: row for name, row in recorded["notebooks"].items()}
    for name, row in recorded["notebooks"].items():
        _sub(
            ROOT / "notebooks" / name,
            r"(\*Time on a 2-core CPU:\* )\d+ s from an empty feature cache, \d+ s with it filled",
            lambda m, r=row: (
                f"{m[1]}{round(r['cold_s'])} s from an empty feature cache, {round(r['warm_s'])} s with it filled"
            ),
            1,
        )
    seconds = lambda nb: round(cold[nb]["cold_s"])
    _sub(
        ROOT / "book" / "index.md",
        r"^(\| (0\d\w?) \|.*\| )\d+( \| \d+ / \d+ \|)$",
        lambda m: f"{m[1]}{seconds(m[2])}{m[3]}",
        9,
    )
    readme = ROOT / "README.md"
    _sub(
        readme,
        r"^\| (0\d\w?)( \(optional\))? \| \d+ \| \d+ \|",
        lambda m: f"| {m[1]}{m[2] or ''} | {seconds(m[1])} | {round(cold[m[1]]['warm_s'])} |",
        9,
    )
    cold_sum, warm_sum = (sum(r[k] for r in cold.values()) for k in ("cold_s", "warm_s"))
    shared = recorded["series_cold_s"]
    _sub(
        readme,
        r"^\| the series \| \d+ \([\d.]+ min; \d+ s from one shared cache\) \| \d+ \|",
        f"| the series | {round(cold_sum)} ({cold_sum / 60:.1f} min; {round(shared)} s from one shared cache)"
        f" | {round(warm_sum)} |",
        1,
    )
    # the sentence names notebooks with what makes each slow: their seconds are rewritten, their names are
    # the writer's (tests/test_study_times.py checks the maximum and each named notebook's time)
    fill = lambda m: re.sub(r"(0\d\w?) at \d+ s", lambda n: f"{n[1]} at {seconds(n[1])} s", m[2])
    _sub(
        readme,
        r"every notebook ran in at most (\d+) s cold (\([^)]*\))",
        lambda m: f"every notebook ran in at most {max(map(seconds, cold))} s cold {fill(m)}",
        1,
    )
    _sub(
        readme,
        r"the series in [\d.]+ minutes with each notebook from its own empty cache, [\d.]+ minutes",
        f"the series in {cold_sum / 60:.1f} minutes with each notebook from its own empty cache,"
        f" {shared / 60:.1f} minutes",
        1,
    )
    _sub(
        ROOT / "docs" / "teaching.md",
        r"^(\| (0\d\w?) [^|]+\|[^|]+\| )[\d.]+ / [\d.]+",
        lambda m: f"{m[1]}{cold[m[2]]['cold_s'] / 60:.1f} / {cold[m[2]]['warm_s'] / 60:.1f}",
        9,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="default: every notebooks/0*.ipynb")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--cold-only", action="store_true", help="skip the warm and the series runs (a third of the time)")
    ap.add_argument("--docs", action="store_true", help="write the times into the headers, README, guide and book")
    a = ap.parse_args()
    if a.docs and (a.cold_only or a.notebooks):  # refused before the minutes of running, not after
        raise SystemExit("--docs needs every notebook, cold and warm: run without --cold-only and NOTEBOOK")
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
    if a.docs:
        write_docs(out)


if __name__ == "__main__":
    main()
