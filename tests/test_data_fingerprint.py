"""clipaln.data.fingerprint: the data's identity at ImageNet scale. The default fingerprint reads paths, sizes
and a sample of the bytes; --full-hash reads every byte; a copy of the data elsewhere is the same data."""

import json
import shutil

import pytest
import torch
from support import SMALL_VIT

from clipaln.cli import main
from clipaln.data import fingerprint


def _tree(root, n, size=300):
    for i in range(n):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.jpg").write_bytes(bytes([i % 251]) * (size + i % 5))


def _bytes_read(monkeypatch) -> list[int]:
    read: list[int] = []
    original = fingerprint._sha256
    monkeypatch.setattr(fingerprint, "_sha256", lambda p: read.append(p.stat().st_size) or original(p))
    monkeypatch.setattr(fingerprint, "_DIGESTS", {})
    return read


def test_the_default_fingerprint_reads_a_sample_and_full_hash_reads_every_byte(tmp_path, monkeypatch):
    _tree(tmp_path, 4000)
    total = sum(p.stat().st_size for p in tmp_path.rglob("*.jpg"))
    read = _bytes_read(monkeypatch)
    sampled = fingerprint.files_fingerprint(tmp_path)
    assert sampled.startswith("sampled:") and 0 < sum(read) <= 0.01 * total  # at most 1% of the bytes
    read.clear()
    monkeypatch.setattr(fingerprint, "_DIGESTS", {})
    monkeypatch.setenv(fingerprint.FULL_HASH_ENV, "1")  # what --full-hash sets
    content = fingerprint.files_fingerprint(tmp_path)
    assert content.startswith("content:") and sum(read) == total
    # what each sees: a same-size edit of a file outside the sample changes only the full hash
    unsampled = next(
        p for p in sorted(tmp_path.rglob("*.jpg")) if not fingerprint._sampled(p.relative_to(tmp_path).as_posix())
    )
    unsampled.write_bytes(b"\xff" * unsampled.stat().st_size)
    assert fingerprint.files_fingerprint(tmp_path) != content
    monkeypatch.delenv(fingerprint.FULL_HASH_ENV)
    assert fingerprint.files_fingerprint(tmp_path) == sampled
    # a file added, removed, renamed or resized changes both
    (tmp_path / "class_0" / "0.jpg").rename(tmp_path / "class_1" / "0.jpg")
    assert fingerprint.files_fingerprint(tmp_path) != sampled


def test_a_copy_of_the_data_elsewhere_hits_the_cache_and_passes_evals_check(tmp_path, monkeypatch, capsys):
    """A byte-identical copy (new paths, new times: cp -r) is the same data: the feature cache finds
    its entry and eval scores the run's test split on it."""
    from pathlib import Path

    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIPALN_CACHE", str(cache))
    shipped = Path(__file__).parents[1] / "data" / "pairs"
    first, second = tmp_path / "first", tmp_path / "elsewhere" / "second"
    shutil.copytree(shipped, first)
    shutil.copytree(shipped, second, copy_function=shutil.copy)  # new modification times
    run = tmp_path / "run"
    args = ["train", "pairs", "--pairs", str(first / "pairs.csv"), "--epochs", "1", "--quiet"]
    assert main([*args, "--out", str(run)]) == 0
    entries = sorted(cache.iterdir())
    assert main([*args[:3], str(second / "pairs.csv"), *args[4:], "--out", str(tmp_path / "again")]) == 0
    assert sorted(cache.iterdir()) == entries  # no new entry: the copy's features were found
    capsys.readouterr()
    projection = str(run / "projection.safetensors")
    assert main(["eval", "pairs", "--projection", projection, "--pairs", str(second / "pairs.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"]["data"] == json.loads((run / "run.json").read_text())["data"]


def test_eval_fingerprints_as_the_run_did(tmp_path, capsys, monkeypatch):
    """A run trained with --full-hash is evaluated by content without the flag being typed again."""
    pytest.importorskip("open_clip")
    from PIL import Image

    root = tmp_path / "imgs"
    for c, colour in enumerate(["red", "green", "blue"]):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40 + i, 40), colour).save(root / f"c{c}" / f"{i}.jpg")
    monkeypatch.delenv(fingerprint.FULL_HASH_ENV, raising=False)
    common = ["--model", SMALL_VIT, "--no-cache", "--workers", "0", "--device", "cpu", "--quiet"]
    train = ["train", "typographic", *common, "--dataset", "folder", "--root", str(root), "--epochs", "1"]
    assert main([*train, "--full-hash", "--out", str(tmp_path / "run")]) == 0
    monkeypatch.delenv(fingerprint.FULL_HASH_ENV, raising=False)  # a fresh process: the flag not typed
    key = json.loads((tmp_path / "run" / "run.json").read_text())["data_key"]
    assert key["files"].startswith("content:") and "root" not in key
    capsys.readouterr()
    projection = str(tmp_path / "run" / "projection.safetensors")
    assert main(["eval", "typographic", *common[2:], "--projection", projection, "--json"]) == 0


def test_a_killed_encode_resumes_from_its_finished_shards(tmp_path):
    """The feature cache writes an entry's encodings in shards as they are made: a compute killed half
    way, run again, reads the shards it finished and encodes only the rest; the entry equals an
    encode that was never stopped, and its shards go once it is written."""
    from PIL import Image

    from clipaln.features import FeatureCache, encode_dataset
    from clipaln.models import load_clip

    bundle = load_clip("toy", device="cpu")

    class Counted:
        def __init__(self, n, die_at=None):
            self.n, self.die_at, self.read = n, die_at, []

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            if i == self.die_at:
                raise KeyboardInterrupt  # as a Ctrl-C or a kill would stop it
            self.read.append(i)
            return (Image.new("RGB", (32, 32), (7 * i % 255, 40, 90)),)

    cache = FeatureCache(tmp_path / "cache", shard_rows=16)
    compute = lambda data: lambda: {"x": encode_dataset(bundle, data, workers=0, progress=False)[0]}
    killed = Counted(64, die_at=40)
    with pytest.raises(KeyboardInterrupt):
        cache.get(bundle, {"data": "counted"}, compute(killed))
    assert len(list((tmp_path / "cache").rglob("rows*.safetensors"))) == 2  # rows 0-15 and 16-31
    again = Counted(64)
    resumed = cache.get(bundle, {"data": "counted"}, compute(again))["x"]
    assert min(again.read) == 32  # the finished shards were read, not encoded again
    whole = encode_dataset(bundle, Counted(64), workers=0, progress=False)[0]
    assert torch.equal(resumed, whole)
    assert not list((tmp_path / "cache").rglob("*.shards"))


def test_a_people_csv_is_read_by_content_and_by_a_checked_header(tmp_path):
    """One person's image under two names (the same pixels, other bytes) could sit in training and in
    the test gallery at once: refused, naming both lines; a header names each column once."""
    from PIL import Image

    from clipaln.data.gender import GenderCSV

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "a.png")
    Image.open(tmp_path / "a.png").save(tmp_path / "copy.png", compress_level=0)
    Image.new("RGB", (8, 8), (10, 200, 10)).save(tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "copy.png").read_bytes()
    (tmp_path / "people.csv").write_text(
        "path,gender,activity\na.png,man,cooking\nb.png,woman,cooking\ncopy.png,man,cooking\n"
    )
    with pytest.raises(ValueError, match=r"line 4: copy.png is the same image as a.png \(line 2\)"):
        GenderCSV(tmp_path / "people.csv")
    (tmp_path / "people.csv").write_text("path,gender,activity,gender\na.png,man,cooking,woman\n")
    with pytest.raises(ValueError, match="the column gender appears twice"):
        GenderCSV(tmp_path / "people.csv")
    (tmp_path / "people.csv").write_text("path,activity\na.png,cooking\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) gender"):
        GenderCSV(tmp_path / "people.csv")
