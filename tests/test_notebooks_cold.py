"""What a student sees first: notebook 03 run from an empty feature cache, in a real kernel, prints
no traceback, warning or DataLoader worker noise in any output (stderr included)."""

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOISE = re.compile(r"Traceback|Exception ignored|Error|Warning|warn\(|can only test a child process")


def outputs_text(nb) -> list[tuple[int, str, str]]:
    """(cell index, output kind, text) of every text output."""
    out = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                out.append((i, o["name"], o["text"]))
            elif o["output_type"] == "error":
                out.append((i, "error", f"{o['ename']}: {o['evalue']}"))
            elif "text/plain" in o.get("data", {}):
                out.append((i, o["output_type"], o["data"]["text/plain"]))
    return out


def test_notebook_03_from_an_empty_cache_prints_no_noise(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPALN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOKS / "03_ocr_vs_detection.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    assert (tmp_path / "cache").is_dir() and any((tmp_path / "cache").iterdir())  # it really ran cold
    noisy = [(i, kind, text[:300]) for i, kind, text in outputs_text(nb) if kind == "stderr" or NOISE.search(text)]
    assert not noisy, noisy


def test_encoding_with_progress_bars_in_a_kernel_prints_no_worker_noise(tmp_path, monkeypatch):
    # notebook 02's first encoding, smaller: progress bars on, DataLoader workers, an empty cache
    monkeypatch.setenv("CLIPALN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = (
        "from clipaln import load_clip\n"
        "from clipaln.features import FeatureCache\n"
        "from clipaln.tracks import typographic\n"
        "spec = typographic.toy_spec(n_train=600, n_test=300, seed=0)\n"
        "feats = typographic.build_features(load_clip('toy'), spec, FeatureCache(), workers=1)\n"
        "print(len(feats.train.labels))"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    NotebookClient(nb, timeout=900, kernel_name="python3").execute()
    texts = outputs_text(nb)
    assert any("600" in text for _, _, text in texts)
    noisy = [(i, kind, text[:300]) for i, kind, text in texts if kind == "stderr" or NOISE.search(text)]
    assert not noisy, noisy
