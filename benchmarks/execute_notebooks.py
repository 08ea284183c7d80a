"""Re-run notebooks in place, top to bottom in a fresh kernel, so that each carries one clean run (with
its widgets' state), as tests/test_notebooks_committed.py asks.

    python benchmarks/execute_notebooks.py notebooks/0*.ipynb

The worked solutions are re-run by benchmarks/course_answers.py, which also records their answers.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, last_cell: str | None = None, write: bool = True):
    """Run the notebook at `path`; with `last_cell`, run that code after its last cell and return that
    cell (taken out again before the notebook is written back, so nothing of it is kept)."""
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as ipython_dir:
        # Each figure records its smallest text in its output's metadata (benchmarks/figure_text.py).
        startup = Path(ipython_dir) / "profile_default" / "startup"
        startup.mkdir(parents=True)
        shutil.copy(Path(__file__).with_name("figure_text.py"), startup / "00_figure_text.py")
        before = os.environ.get("IPYTHONDIR")
        os.environ["IPYTHONDIR"] = ipython_dir
        try:
            return _execute(nb, path, last_cell, write)
        finally:
            if before is None:
                del os.environ["IPYTHONDIR"]
            else:
                os.environ["IPYTHONDIR"] = before


def _execute(nb, path: Path, last_cell: str | None, write: bool):
    if last_cell is not None:
        nb.cells.append(nbformat.v4.new_code_cell(last_cell))
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    extra = nb.cells.pop() if last_cell is not None else None
    if write:
        nbformat.write(nb, path)
    return extra


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        execute(Path(arg))
        print(arg, "executed", flush=True)
