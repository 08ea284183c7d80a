"""clipaln.manifest: what is beside OUT is the user's. A run's partial folder and its lock carry
clipaln's own mark; a file or folder by those names without it is refused and left byte-identical."""

import hashlib
import os

import pytest

from clipaln.cli import main
from clipaln.manifest import LOCK_SUFFIX, PARTIAL_MARK, OutLock

PAIRS = os.path.join(os.path.dirname(__file__), "..", "data", "pairs", "pairs.csv")


def _snapshot(path):
    """Every file under path (or path itself) with the sha256 of its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _train(out, *extra):
    return main(
        ["train", "pairs", "--pairs", PAIRS, "--epochs", "1", "--quiet", "--no-cache", "--out", str(out), *extra]
    )


def test_a_users_folder_named_out_partial_is_never_removed(tmp_path, capsys):
    out = tmp_path / "run"
    mine = tmp_path / "run.partial"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    before = _snapshot(mine)
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert _train(out, *extra) == 2
        assert "was not made by clipaln" in capsys.readouterr().err
        assert _snapshot(mine) == before and not out.exists()


def test_files_named_like_a_lock_beside_out_are_the_users(tmp_path, capsys):
    flake, poetry = tmp_path / "flake.lock", tmp_path / "poetry.lock"
    flake.write_text("the user's lock file")
    poetry.write_text("[[package]]")
    before = {**_snapshot(flake), **_snapshot(poetry)}
    assert _train(tmp_path / "flake") == 0  # --out flake beside flake.lock
    projection = str(tmp_path / "flake" / "projection.safetensors")
    assert main(["export", "--projection", projection, "--out", str(tmp_path / "poetry.safetensors")]) == 0
    assert {**_snapshot(flake), **_snapshot(poetry)} == before
    assert not list(tmp_path.glob(f"*{LOCK_SUFFIX}"))  # our locks went with their processes
    # a file by our lock's own name that clipaln did not write: refused, untouched
    theirs = tmp_path / f"other{LOCK_SUFFIX}"
    theirs.write_text("not a lock of clipaln's")
    capsys.readouterr()
    assert _train(tmp_path / "other") == 2
    assert "is not a clipaln lock" in capsys.readouterr().err
    assert theirs.read_text() == "not a lock of clipaln's" and not (tmp_path / "other").exists()
    with pytest.raises(ValueError, match="not a clipaln lock"):
        OutLock(tmp_path / "other").acquire()


def test_an_export_never_removes_a_users_folder_named_like_its_stage(tmp_path, capsys):
    assert _train(tmp_path / "run") == 0
    stage = tmp_path / "aligned.partial"
    stage.mkdir()
    (stage / "keep.txt").write_text("mine")
    projection = str(tmp_path / "run" / "projection.safetensors")
    capsys.readouterr()
    assert main(["export", "--projection", projection, "--out", str(tmp_path / "aligned")]) == 2
    assert "not made by clipaln" in capsys.readouterr().err
    assert (stage / "keep.txt").read_text() == "mine" and not (tmp_path / "aligned").exists()


def test_a_finished_run_carries_no_mark_and_a_partial_one_does(tmp_path):
    assert _train(tmp_path / "run") == 0
    assert not (tmp_path / "run" / PARTIAL_MARK).exists() and not (tmp_path / "run.partial").exists()
