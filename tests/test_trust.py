"""Runs you can trust: each defect group of the hostile pass (issue 12) has a test here that failed on
clipaln 0.3.0 and passes now. Fast: the toy model on tiny folders."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import warnings

import pytest
import torch
from PIL import Image

from clipaln import manifest, runs
from clipaln.cli import main
from clipaln.data.gender import GenderCSV
from clipaln.data.real import ImageFolderDataset, class_prompts
from clipaln.features import FeatureCache
from clipaln.models import load_clip
from clipaln.projection import SharedProjection, SpectralScorer
from clipaln.toyworld import OBJECTS
from clipaln.tracks import typographic

COLOURS = ["red", "green", "blue", "orange", "purple", "brown", "pink", "gray", "olive", "navy", "teal", "gold"]


def make_folder(root, n_classes=4, per_class=4, names=None):
    names = names or list(OBJECTS[:n_classes])  # class names the toy CLIP can read
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (40 + 7 * c + i, 40), COLOURS[c % len(COLOURS)]).save(root / name / f"{name}_{i}.png")
    return root


def cli(args, capsys):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *words):
    """Exit 2 and one error line (after any progress bars), naming `words`; no traceback."""
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if "\r" not in ln and not re.search(r"\d+%\|", ln)]
    assert len(lines) == 1 and lines[0].startswith("clipaln"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], err


TINY = ["--epochs", "1", "--n-train", "8", "--n-test", "6"]


# 1. stale cache -------------------------------------------------------------------------------


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


# 2. eval on training images ---------------------------------------------------------------------


def test_eval_refuses_a_folder_whose_files_changed(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    assert (
        cli(["train", "typographic", "--dataset", "folder", "--root", root, *TINY, "--no-cache", "--out", out], capsys)[
            0
        ]
        == 0
    )
    # one image replaced by another (same count, same names): what the split holds has changed
    Image.new("RGB", (50, 50), "white").save(root / "apple" / "apple_0.png")
    code, _, err = cli(["eval", "typographic", "--projection", out / "projection.safetensors", "--no-cache"], capsys)
    one_line_error(code, err, "other data", "--allow-other-data")


# 3. resume on other data --------------------------------------------------------------------------


def _unfinished_run(out, monkeypatch, **kw):
    """A W run stopped just before its folder is committed: OUT.partial with a checkpoint."""
    with monkeypatch.context() as m:
        m.setattr(manifest.RunFolder, "commit", lambda self, _: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            runs.train_run("typographic", out=out, checkpoint_every=1, cache=False, progress=False, **kw)


def test_resume_refuses_other_data_or_weights(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _unfinished_run(out, monkeypatch, n_train=24, n_test=12, overrides={"epochs": 1})
    assert (tmp_path / "run.partial" / "checkpoint.safetensors").is_file() and not out.exists()
    base = ["train", "typographic", "--epochs", "1", "--n-test", "12", "--no-cache", "--resume", "--out", out]
    code, _, err = cli([*base, "--n-train", "48"], capsys)
    one_line_error(code, err, "refusing to resume")
    code, _, err = cli([*base, "--n-train", "24", "--pretrained", "random"], capsys)
    one_line_error(code, err, "refusing to resume", "pretrained")
    code, _, err = cli([*base, "--n-train", "24"], capsys)  # the same run: finishes
    assert code == 0, err
    assert (out / "run.json").is_file() and not (tmp_path / "run.partial").exists()
    assert not list(out.glob("checkpoint*"))


def test_resume_refuses_features_made_another_way(tmp_path, monkeypatch, capsys):
    """The checkpoint pins how its features were made: on another device "auto" precision is bf16, not
    fp32, and another preprocessing reads other pixels: either is refused, naming what differs."""
    import torchvision.transforms as T

    from clipaln import features
    from clipaln.models import load_clip

    out = tmp_path / "run"
    _unfinished_run(out, monkeypatch, n_train=24, n_test=12, overrides={"epochs": 1})
    base = ["train", "typographic", "--epochs", "1", "--n-train", "24", "--n-test", "12", "--no-cache", "--resume"]
    with monkeypatch.context() as m:  # a resume on a GPU: "auto" resolves to bf16 there
        m.setattr(features, "resolve_precision", lambda precision, device: "bf16")
        code, _, err = cli([*base, "--out", out], capsys)
    one_line_error(code, err, "refusing to resume", "precision=fp32, not bf16")
    toy = load_clip("toy")
    other = load_clip("toy")
    other.preprocess = T.Compose([T.Resize(64, interpolation=T.InterpolationMode.NEAREST), other.preprocess])
    assert features.encoding_identity(toy) != features.encoding_identity(other)
    assert features.encoding_identity(toy) == features.encoding_identity(load_clip("toy"))  # no addresses in it
    code, _, err = cli([*base, "--out", out], capsys)  # the same device and precision: finishes
    assert code == 0, err


def test_resume_refuses_a_corrupt_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _unfinished_run(out, monkeypatch, n_train=24, n_test=12, overrides={"epochs": 1})
    (tmp_path / "run.partial" / "checkpoint.safetensors").write_bytes(b"\x00" * 100)
    code, _, err = cli(
        [
            "train",
            "typographic",
            *TINY[:2],
            "--n-train",
            "24",
            "--n-test",
            "12",
            "--no-cache",
            "--resume",
            "--out",
            out,
        ],
        capsys,
    )
    one_line_error(code, err, "cannot be read")


# 4. large |t| ---------------------------------------------------------------------------------------


def test_large_t_never_prints_nan(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", "typographic", *TINY, "--no-cache", "--out", out], capsys)[0] == 0
    for t in ("100", "-30", "1e6"):
        code, text, err = cli(
            ["eval", "typographic", "--projection", out / "projection.safetensors", "--t", t, "--json", "--no-cache"],
            capsys,
        )
        if code == 0:
            json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
        else:
            one_line_error(code, err)


# 5. wrong projection ----------------------------------------------------------------------------------


def test_eval_refuses_a_projection_of_other_weights(tmp_path, capsys):
    """A W trained on one set of weights, evaluated after the file was replaced by other weights."""
    from safetensors.torch import save_file

    weights = tmp_path / "toy.safetensors"
    save_file(load_clip("toy").model.state_dict(), str(weights))
    out = tmp_path / "run"
    assert cli(["train", "typographic", "--pretrained", weights, *TINY, "--no-cache", "--out", out], capsys)[0] == 0
    save_file(load_clip("toy", pretrained="random").model.state_dict(), str(weights))
    proj = out / "projection.safetensors"
    code, _, err = cli(["eval", "typographic", "--projection", proj, "--pretrained", weights, "--no-cache"], capsys)
    one_line_error(code, err, "weights", "--allow-other-weights")
    code, text, _ = cli(
        [
            "eval",
            "typographic",
            "--projection",
            proj,
            "--pretrained",
            weights,
            "--allow-other-weights",
            "--no-cache",
            "--json",
        ],
        capsys,
    )
    assert code == 0 and json.loads(text)["source"]["projection"] == str(proj.resolve())


# 6. a misspelt toy --pretrained -----------------------------------------------------------------------


def test_a_misspelt_or_foreign_toy_checkpoint_is_an_error(tmp_path, capsys):
    torch.save({"a": 1}, tmp_path / "weights.pt")
    (tmp_path / "config.json").write_text('{"a": 1}')
    for path, word in (
        ("nosuch.safetensors", "not found"),
        (tmp_path / "weights.pt", "not a toy CLIP"),
        (tmp_path / "config.json", "not a toy CLIP"),
    ):
        code, _, err = cli(["train", "typographic", "--pretrained", path, *TINY, "--out", tmp_path / "x"], capsys)
        one_line_error(code, err, word)
    assert not (tmp_path / "x").exists()


# 7. folders with 5-9 classes ------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [5, 6, 9])
def test_five_to_nine_classes_train(tmp_path, k):
    spec = typographic.real_spec("folder", make_folder(tmp_path / "imgs", k, 3), n_train=k, n_test=k)
    assert len(spec.held_out) == 2
    unseen = typographic.attacked_datasets(spec)["unseen"]
    for i in range(len(unseen)):
        _, _, label, written = unseen[i]
        assert written != label and written in spec.held_out


# 8. phantom and duplicate classes ----------------------------------------------------------------------


def test_hidden_folders_are_not_classes_and_duplicates_are_refused(tmp_path):
    root = make_folder(tmp_path / "imgs", names=["cat", "dog", ".ipynb_checkpoints", "__MACOSX"])
    assert ImageFolderDataset(root).classes == ["cat", "dog"]
    for a, b in (("Cat", "cat"), ("big_cat", "big cat")):
        dup = make_folder(tmp_path / f"dup-{a}", names=[a, b, "dog"])
        with pytest.raises(ValueError, match="both read as the class"):
            ImageFolderDataset(dup)


# 9. flags silently ignored ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, word",
    [
        (["train", "gender", "--resume", "--out", "{out}"], "nothing to resume"),
        (["train", "gender", "--n-train", "13", "--out", "{out}"], "multiple"),
        (["train", "typographic", "--mode", "full", "--resume", "--out", "{out}"], "nothing to resume"),
        (["train", "typographic", "--mode", "full", "--lock-image", "--out", "{out}"], "nothing to train"),
        (["train", "typographic", "--mode", "full", "--lock-text", "--train-text", "--out", "{out}"], "give one"),
        (["train", "typographic", "--lock-image", "--train-text", "--out", "{out}"], "--mode full"),
        (["train", "typographic", "--mode", "full", "--orth", "1", "--out", "{out}"], "--orth"),
        (["train", "typographic", "--orth", "-1", "--out", "{out}"], "--orth"),
        (["eval", "toy", "--n-train", "10"], "--n-train"),
        (["eval", "toy", "--t", "1"], "--t"),
        (["eval", "toy", "--workers", "2"], "--workers"),
        (["eval", "toy", "--no-cache"], "--no-cache"),
        (["eval", "toy", "--precision", "bf16"], "--precision"),
        (["eval", "typographic", "--n", "5"], "--n"),
        (["train", "typographic", "--checkpoint-every", "-2", "--out", "{out}"], "--checkpoint-every"),
    ],
)
def test_flags_that_would_be_ignored_are_refused(tmp_path, capsys, args, word):
    code, _, err = cli([a.replace("{out}", str(tmp_path / "o")) for a in args], capsys)
    one_line_error(code, err, word)


# 10. work lost late ---------------------------------------------------------------------------------------------


def test_out_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runs, "load_clip", lambda *a, **k: pytest.fail("loaded a model before checking --out"))
    (tmp_path / "file").write_text("x")
    for out, word in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "run", "cannot write")):
        code, _, err = cli(["train", "typographic", "--out", out], capsys)
        one_line_error(code, err, word)
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):  # a folder that is not a run is never replaced
        code, _, err = cli(["train", "typographic", "--out", full, *extra], capsys)
        one_line_error(code, err, "not empty")
    assert (full / "notes.txt").read_text() == "mine"


def test_a_finished_run_is_replaced_only_with_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "typographic", *TINY, "--no-cache", "--out", out]
    assert cli(args, capsys)[0] == 0
    first = (out / "run.json").read_text()
    one_line_error(*cli(args, capsys)[::2], "finished run", "--overwrite")
    assert (out / "run.json").read_text() == first
    assert cli([*args, "--overwrite", "--seed", "1"], capsys)[0] == 0
    assert json.loads((out / "run.json").read_text())["seed"] == 1 and not list(tmp_path.glob("run.*"))


def test_sigkill_at_the_final_rename_leaves_no_half_run(tmp_path):
    """A process killed (SIGKILL) at the rename that publishes the run leaves OUT absent and the
    complete run in OUT.partial; --resume then finishes it."""
    out = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import os, signal
        from clipaln import manifest
        real = os.replace
        def replace(src, dst):
            if str(src).endswith(".partial"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst)
        manifest.os.replace = replace
        from clipaln.cli import main
        main(["train", "typographic", "--epochs", "1", "--n-train", "8", "--n-test", "6", "--no-cache",
              "--checkpoint-every", "1", "--out", {str(out)!r}])
        """
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == -9, p.stderr
    partial = tmp_path / "run.partial"
    assert not out.exists()
    assert {"projection.safetensors", "metrics.json", "history.jsonl", "run.json"} <= {
        f.name for f in partial.iterdir()
    }
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipaln",
            "train",
            "typographic",
            "--epochs",
            "1",
            "--n-train",
            "8",
            "--n-test",
            "6",
            "--no-cache",
            "--checkpoint-every",
            "1",
            "--resume",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert (out / "run.json").is_file() and not partial.exists()


# 11. tracebacks --------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_decompression_bomb_is_skipped_or_one_error(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs", 2, 2)
    Image.new("RGB", (200, 200), "white").save(root / "apple" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 200 x 200 > 2 x the limit: PIL raises
    ds = ImageFolderDataset(root, skip_bad=True)
    assert [p.name for p in ds.skipped] == ["bomb.png"]
    with pytest.raises(ValueError, match="bomb.png"):
        full = ImageFolderDataset(root)
        [full[i] for i in range(len(full))]


def test_library_misuse_raises_documented_errors(tmp_path):
    with pytest.raises(ValueError, match="integer"):
        SharedProjection(2.5)
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        SpectralScorer(SharedProjection(4), torch.ones(4), torch.ones(3, 4))
    for template in ("a photo of a %s.", "a photo of a {name}.", "no placeholder"):
        with pytest.raises(ValueError, match="template"):
            class_prompts(["cat", "dog"], template)
    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    (tmp_path / "people.csv").write_text("path,gender,activity\na.png,man,cooking\na.png,woman\n")
    with pytest.raises(ValueError, match="line 3"):
        GenderCSV(tmp_path / "people.csv")


def test_os_errors_are_one_line(monkeypatch, capsys, tmp_path):
    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(runs, "train_run", offline)
    code, _, err = cli(["train", "typographic", "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "name resolution")


def test_every_output_carries_its_manifest(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", "typographic", *TINY, "--no-cache", "--out", out], capsys)[0] == 0
    run = json.loads((out / "run.json").read_text())
    assert {"model", "weights", "task", "data", "data_key", "config", "t", "versions", "command", "seed"} <= set(run)
    assert run["versions"]["torch"] == torch.__version__
    header = json.loads(SharedProjection.load(out / "projection.safetensors").metadata["manifest"])
    assert header["weights"] == run["weights"] and header["data"] == run["data"]
    shutil.rmtree(out)
