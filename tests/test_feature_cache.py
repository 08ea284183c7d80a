"""The feature cache follows the files, not their paths; a damaged entry is recomputed, an
unwritable cache warns once and the run goes on."""

import os
import warnings

import pytest
import torch
from support import make_folder

from clipaln import runs
from clipaln.features import FeatureCache
from clipaln.models import load_clip


def test_a_cache_folder_that_fails_on_write_warns_and_the_run_goes_on(tmp_path, toy, monkeypatch):
    """A full disk reaches safetensors first, which raises its own error type, not OSError."""
    import safetensors.torch

    from clipaln.features import FeatureCache

    def disk_full(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    cache = FeatureCache(tmp_path / "cache")
    with pytest.warns(UserWarning, match="No space left on device"):
        out = cache.get(toy, {"probe": 1}, lambda: {"x": torch.ones(2)})
    assert torch.equal(out["x"], torch.ones(2)) and not list((tmp_path / "cache").glob("*.tmp"))


def test_cache_follows_the_files_not_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPALN_CACHE", str(tmp_path / "cache"))
    bundle = load_clip("toy")
    root = make_folder(tmp_path / "imgs")
    data = dict(dataset="folder", root=str(root), n_train=8, n_test=8)
    store = FeatureCache()
    _, first = runs.features(bundle, "typographic", progress=False, **data)
    # swap two class folders in place: the same paths now hold other images
    os.rename(root / "apple", root / "tmp")
    os.rename(root / "bird", root / "apple")
    os.rename(root / "tmp", root / "bird")
    spec = runs.make_spec("typographic", **data)
    assert not store.path(bundle, spec.key).is_file()  # a new key: the old entry cannot answer
    _, second = runs.features(bundle, "typographic", progress=False, **data)
    assert not torch.equal(first.test.clean, second.test.clean)


def test_a_damaged_cache_entry_is_recomputed(tmp_path):
    bundle, store = load_clip("toy"), FeatureCache(tmp_path)
    calls = []
    compute = lambda: calls.append(1) or {"x": torch.arange(64.0)}
    store.get(bundle, {"k": 1}, compute)
    path = store.path(bundle, {"k": 1})
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # one flipped byte inside the tensor data: still a loadable file
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="damaged"):
        out = store.get(bundle, {"k": 1}, compute)
    assert len(calls) == 2 and torch.equal(out["x"], torch.arange(64.0))


def test_an_unwritable_cache_warns_once_and_the_run_goes_on(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    bundle, store = load_clip("toy"), FeatureCache(blocker / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(3):
            assert store.get(bundle, {"k": k}, lambda: {"x": torch.ones(2)})["x"].sum() == 2
    assert sum("cannot write the feature cache" in str(w.message) for w in caught) == 1
