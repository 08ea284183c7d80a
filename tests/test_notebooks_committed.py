"""The committed notebooks: valid nbformat, and carrying the outputs of one clean run top to bottom
(every code cell executed once, in order), so that they render on a code host as they ran."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_is_valid_and_carries_one_clean_run(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: not one clean run in order: {counts}"
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert not any("TODO" in c.source for c in nb.cells if c.cell_type == "markdown")
