"""Re-run notebooks in place, top to bottom in a fresh kernel, so that each carries one clean run (with
its widgets' state), as tests/test_notebooks_committed.py asks.

    python benchmarks/execute_notebooks.py notebooks/0*.ipynb

The worked solutions are re-run by benchmarks/course_answers.py, which also records their answers.
"""

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    nbformat.write(nb, path)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        execute(Path(arg))
        print(arg, "executed", flush=True)
