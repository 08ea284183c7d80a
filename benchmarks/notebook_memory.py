"""The peak memory of each tutorial's kernel, run top to bottom: what a JupyterHub or Binder user needs.

    python benchmarks/notebook_memory.py [--out benchmarks/results/notebook_memory.json]

Peak resident memory (ru_maxrss) of the kernel and of its children (DataLoader workers), read in a cell
appended after the notebook's last; nothing is written into the notebooks. The Jupyter server itself
adds its own (about 100 MB) once per user.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from execute_notebooks import execute  # beside this script

ROOT = Path(__file__).resolve().parent.parent
PEAK = """import json as _json, resource as _resource
print(_json.dumps({"kernel_mb": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "children_mb": _resource.getrusage(_resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"""


def peak(path: Path) -> dict:
    return json.loads(execute(path, last_cell=PEAK, write=False).outputs[-1]["text"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "notebook_memory.json"))
    a = p.parse_args()
    os.environ["CLIPALN_CACHE"] = tempfile.mkdtemp(prefix="clipaln-memory-")  # cold, as a student's first run
    rows = {}
    for path in sorted((ROOT / "notebooks").glob("0*_*.ipynb")):
        rows[path.stem] = {k: round(v) for k, v in peak(path).items()}
        print(path.stem, rows[path.stem], flush=True)
    worst = max(rows, key=lambda k: rows[k]["kernel_mb"])
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "notebooks": rows,
        # children (forked workers) share most of the kernel's pages: their peak is not added to the kernel's
        "largest": {"notebook": worst, "kernel_mb": rows[worst]["kernel_mb"]},
    }
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["largest"]))


if __name__ == "__main__":
    main()
