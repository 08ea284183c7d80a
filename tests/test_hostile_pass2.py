"""The second hostile pass (issue #21): each group of silent wrong numbers, reproduced, now refused
with one line or computed right. Every test here failed on the code before the fix."""

import numpy as np
import pytest
import torch

from clipaln.features import encode_images
from clipaln.policy import PreferenceData, similarities
from clipaln.projection import SharedProjection, SpectralScorer


def wide_w(dim=16, seed=0, low=0.05):
    """A W whose singular values span `low` to 1.5 (IPO's trained W spans 0.04 to 1.56, notebook 02)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return SharedProjection(dim, (u @ torch.diag(torch.linspace(low, 1.5, dim, dtype=torch.float64)) @ v.T).float())


# --- group 4: large |t| ------------------------------------------------------------------------


@pytest.mark.parametrize("t", [-8.0, -4.0, 6.0])
def test_large_t_eval_and_slider_agree_with_float64(t):
    """Eval (W_t formed explicitly) and the sliders (the spectral scorer) predict what float64 does:
    at t = -8, S^t spans eleven orders of magnitude and float32 flipped 179 of these 400 answers."""
    proj = wide_w()
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(400, 16, generator=g), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(10, 16, generator=g), dim=-1)
    u, s, vh = torch.linalg.svd(proj.weight.double())
    w64 = u @ torch.diag(s**t) @ vh
    nx, ny = (torch.nn.functional.normalize(e.double() @ w64.T, dim=-1) for e in (x, y))
    exact = (nx @ ny.T).argmax(-1)
    assert torch.equal(similarities(x, y, proj.scaled(t)).argmax(-1), exact)  # what eval calls
    assert torch.equal(SpectralScorer(proj, x, y).scores(t).argmax(-1), exact)  # what the sliders call


# --- group 7: library misuse a notebook user makes -----------------------------------------------


def small_data(**changes):
    g = torch.Generator().manual_seed(0)
    fields = dict(
        pref_images=torch.randn(6, 8, generator=g),
        y_w=[0, 1, 2, 0, 1, 2],
        y_l=[1, 2, 0, 2, 0, 1],
        texts=torch.randn(3, 8, generator=g),
        reg_images=torch.randn(6, 8, generator=g),
        logit_scale=100.0,
    )
    return PreferenceData(**{**fields, **changes})


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(logit_scale=4.605), "looks like log tau"),  # open_clip's model.logit_scale.item()
        (dict(y_w=[0.0, 1.7, 2.0, 0.0, 1.0, 2.0]), "whole class indices"),  # 1.7 was truncated to 1
        (dict(y_w="012012"), "not a string"),
        (dict(pref_images=np.zeros((6, 8), dtype=np.float32)), "torch tensor"),
        (dict(pref_images=torch.ones(6, 8, dtype=torch.long)), "floating-point"),
        (dict(reg_images=torch.full((6, 8), float("nan"))), "NaN"),
    ],
)
def test_preference_data_refuses_what_would_train_on_nonsense(changes, message):
    with pytest.raises(ValueError, match=message):
        small_data(**changes)


@pytest.mark.parametrize("t", ["1", None, True, [[1.0]]])
def test_scaled_refuses_what_is_not_a_t(t):
    with pytest.raises(ValueError, match="t must be"):
        wide_w().scaled(t)
    with pytest.raises(ValueError, match="t must be"):
        SpectralScorer(wide_w(), torch.randn(3, 16), torch.randn(2, 16)).scores(t)


def test_misuse_is_one_value_error(toy):
    with pytest.raises(ValueError, match="torch tensor"):
        SharedProjection(4, np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        similarities(torch.full((2, 4), float("nan")), torch.randn(3, 4))
    with pytest.raises(ValueError, match="numpy"):
        encode_images(toy, np.zeros((2, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="not one string"):
        PreferenceData.from_captions(toy, torch.randn(1, toy.embed_dim), chosen="a cat.", rejected="a dog.")


# --- group 2: the data's identity ----------------------------------------------------------------


def test_one_image_named_by_two_paths_stays_on_one_side_of_the_split(tmp_path):
    import json

    from test_tracks_pairs import scenes

    from clipaln.tracks import pairs

    rows = scenes(tmp_path / "p", n=10)
    lines = [json.dumps(r) for r in rows] + [json.dumps({**r, "image": f"../p/{r['image']}"}) for r in rows]
    (tmp_path / "p" / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    spec = pairs.real_spec(str(tmp_path / "p" / "pairs.jsonl"))
    train = {spec.rows[i][0] for i in spec.train_idx}
    assert train.isdisjoint(spec.rows[i][0] for i in spec.test_idx)


def test_a_people_csv_listing_an_image_twice_is_refused(tmp_path):
    from PIL import Image

    from clipaln.data.gender import GenderCSV

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "people.csv").write_text("path,gender,activity\na.png,man,cooking\n./a.png,man,cooking\n")
    with pytest.raises(ValueError, match="line 3: ./a.png is listed already"):
        GenderCSV(tmp_path / "people.csv")


def test_swapped_images_of_one_size_and_time_change_the_fingerprint(tmp_path):
    import os

    from clipaln.data.real import files_fingerprint

    for name, byte in (("a", 1), ("b", 2)):
        (tmp_path / "cls").mkdir(exist_ok=True)
        (tmp_path / "cls" / f"{name}.png").write_bytes(bytes([byte]) * 100)
        os.utime(tmp_path / "cls" / f"{name}.png", ns=(10**18, 10**18))
    before = files_fingerprint(tmp_path)
    a, b = tmp_path / "cls" / "a.png", tmp_path / "cls" / "b.png"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b), b.write_bytes(data_a)  # as an archive extraction would: same sizes, times reset
    for p in (a, b):
        os.utime(p, ns=(10**18, 10**18))
    assert files_fingerprint(tmp_path) != before


def test_out_inside_the_dataset_folder_is_refused(tmp_path):
    from clipaln import runs

    root = tmp_path / "data"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
    with pytest.raises(ValueError, match="lies inside the dataset folder"):
        runs.train_run("typographic", out=root / "run", dataset="folder", root=str(root), progress=False)


# --- group 3: degenerate inputs --------------------------------------------------------------------


def test_captions_the_tokenizer_cannot_tell_apart_are_refused(tmp_path, toy):
    from clipaln.tracks import pairs

    rows = [
        ("0.png", "a photo of a star.", "A photo of a STAR"),  # case and punctuation
        ("1.png", "a photo of a star.", "a photo of a cup."),
        ("2.png", "a photo of a cup.", "a photo of a key."),
    ]
    from PIL import Image

    for i, (name, *_) in enumerate(rows):
        Image.new("RGB", (8, 8), (80 * i, 0, 0)).save(tmp_path / name)  # three images, not one under three names
    (tmp_path / "p.csv").write_text("image,chosen,rejected\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    with pytest.raises(ValueError, match="pairs 1: chosen and rejected read the same"):
        pairs.build_features(toy, pairs.real_spec(str(tmp_path / "p.csv")), progress=False, workers=0)
    with pytest.raises(ValueError, match="read the same to the model's tokenizer"):
        PreferenceData.from_captions(toy, torch.randn(1, toy.embed_dim), chosen=["a star."], rejected=["A star"])


def test_a_gallery_no_larger_than_k_cannot_read_as_balanced_at_every_t():
    import dataclasses

    from clipaln.tracks import gender
    from clipaln.tracks.gender import Sweep

    feats = gender.build_features(
        __import__("clipaln").load_clip("toy"),
        gender.toy_spec(n_train_per_cell=2, n_gallery_per_cell=2),
        progress=False,
        workers=0,
    )
    small = dataclasses.replace(feats, gallery=feats.gallery[:8], gallery_labels=feats.gallery_labels[:8])
    assert Sweep(small).k == 4  # at most half the gallery: the top k can change with t
    with pytest.raises(ValueError, match="at least 4"):
        Sweep(dataclasses.replace(feats, gallery=feats.gallery[:3], gallery_labels=feats.gallery_labels[:3]))


def test_photos_whose_word_is_their_label_are_no_attack_and_empty_words_are_refused(tmp_path, toy):
    from PIL import Image

    from clipaln.data.real import TypographicPhotoFolder
    from clipaln.tracks import typographic

    for stem in ("label=star_text=ball", "label=ball_text=ball", "label=ball_text=star"):
        Image.new("RGB", (16, 16), "white").save(tmp_path / f"{stem}.png")
    photos = TypographicPhotoFolder(tmp_path)
    result = typographic.evaluate_photos(toy, photos, workers=0, progress=False)
    assert result["photos/not_attacks"] == 1 and result["photos/n"] == 3
    assert result["photos/attack_success"] in (0.0, 0.5, 1.0)  # a share of the two real attacks only
    Image.new("RGB", (16, 16)).save(tmp_path / "label=star_text=_.png")
    with pytest.raises(ValueError, match="the written word is empty"):
        TypographicPhotoFolder(tmp_path)


# --- group 5: promised recovery --------------------------------------------------------------------


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


def test_a_run_killed_before_its_first_checkpoint_can_be_run_again_or_resumed(tmp_path):
    """SIGTERM during encoding left OUT.partial with no checkpoint, which neither a new run nor
    --resume accepted; now the run cleans up on SIGTERM, and such a folder is started over."""
    import json

    from test_tracks_pairs import scenes

    from clipaln.cli import main

    rows = scenes(tmp_path / "s", n=12)
    (tmp_path / "s" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from clipaln.manifest import PARTIAL_MARK

    out = tmp_path / "run"
    (tmp_path / "run.partial").mkdir()  # what a SIGTERM during encoding left behind: clipaln's mark, no checkpoint
    (tmp_path / "run.partial" / PARTIAL_MARK).write_text("")
    (tmp_path / "run.partial" / "tensorboard").mkdir()
    args = ["train", "pairs", "--pairs", str(tmp_path / "s" / "p.jsonl"), "--epochs", "2", "--no-cache", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    (tmp_path / "again.partial").mkdir()
    (tmp_path / "again.partial" / PARTIAL_MARK).write_text("")
    assert main([*args, "--out", str(tmp_path / "again"), "--resume"]) == 0
    assert (tmp_path / "again" / "run.json").is_file() and not (tmp_path / "again.partial").exists()


def test_a_resume_before_the_first_checkpoint_replays_the_recorded_request(tmp_path):
    """A run killed before its first checkpoint (KTO, batch 4) resumed with --resume alone trains what
    it was asked to, from step 0, not the defaults (DPO, batch 256)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from test_tracks_pairs import scenes

    from clipaln.cli import main

    rows = scenes(tmp_path / "s", n=12)
    (tmp_path / "s" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    asked = ["train", "pairs", "--pairs", str(tmp_path / "s" / "p.jsonl"), "--method", "kto", "--batch-size", "4",
             "--epochs", "1", "--no-cache", "--quiet", "--out", str(out)]  # fmt: skip
    killer = (
        "import os, signal, clipaln.tracks.pairs as p\n"
        "p.build_features = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"from clipaln.cli import main\nmain({asked!r})\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    assert subprocess.run([sys.executable, "-c", killer], env=env, capture_output=True).returncode == -signal.SIGKILL
    assert (tmp_path / "run.partial" / "checkpoint.request.json").is_file()
    assert not list((tmp_path / "run.partial").glob("checkpoint*.safetensors"))
    assert main(["train", "pairs", "--out", str(out), "--resume", "--quiet"]) == 0
    config = json.loads((out / "run.json").read_text())["config"]
    assert (config["method"], config["batch_size"]) == ("kto", 4)


def test_sigterm_cleans_up_as_ctrl_c_does(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from test_tracks_pairs import scenes

    rows = scenes(tmp_path / "s", n=12)
    import json

    (tmp_path / "s" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = (
        "import time, clipaln.tracks.pairs as p, sys\n"
        "real = p.build_features\n"
        "def slow(*a, **k):\n    print('encoding', flush=True); time.sleep(60)\n"
        "p.build_features = slow\n"
        "from clipaln.cli import main\n"
        f"sys.exit(main(['train', 'pairs', '--pairs', {str(tmp_path / 's' / 'p.jsonl')!r}, '--no-cache', '--out', "
        f"{str(tmp_path / 'run')!r}]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "encoding"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    time.sleep(0.1)
    assert not (tmp_path / "run.partial").exists()


# --- group 6: one-line errors that name the cause --------------------------------------------------


def test_an_unreadable_image_in_a_worker_is_one_line_naming_the_file(tmp_path, toy):
    from PIL import Image

    from clipaln.data.real import ImageFolderDataset
    from clipaln.features import encode_dataset

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / c / f"{i}.png")
    ds = ImageFolderDataset(tmp_path)
    (tmp_path / "dog" / "2.png").write_bytes(b"not a png")  # broken after the listing, as a disk error would
    with pytest.raises(ValueError) as err:
        encode_dataset(toy, ds, (0,), (1,), workers=1, progress=False)
    message = str(err.value)
    assert "2.png" in message and "\n" not in message and "DataLoader worker" not in message


def test_appledouble_files_are_not_images_and_a_bom_is_not_part_of_a_column(tmp_path):
    from PIL import Image

    from clipaln.data.gender import GenderCSV
    from clipaln.data.real import ImageFolderDataset

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "0.png")
        (tmp_path / c / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    assert len(ImageFolderDataset(tmp_path)) == 2
    (tmp_path / "people.csv").write_text("\ufeffpath,gender,activity\ncat/0.png,man,cooking\n", encoding="utf-8")
    assert len(GenderCSV(tmp_path / "people.csv")) == 1


def test_a_projection_given_as_an_encoder_says_so(tmp_path, capsys):
    from clipaln.cli import main

    path = SharedProjection(128).save(tmp_path / "w.safetensors", model="toy", task="typographic")
    assert main(["eval", "typographic", "--image-encoder", str(path), "--no-cache"]) == 2
    assert "is a projection W, not an encoder: pass it as --projection" in capsys.readouterr().err


@pytest.mark.parametrize(
    "request_text, words",
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "holds a list"),
        ('{"task": "pairs", "method": "dpo", "mode": "w", "overrides": null}', "overrides is None, not a dict"),
        ('{"task": "pairs", "method": "dpo", "mode": "w", "overrides": "lr=1"}', "overrides is 'lr=1', not a dict"),
        ('{"method": "dpo", "mode": "w", "overrides": {}}', "task is None, not a str"),
        ('{"task": "pairs", "method": "dpo", "mode": "w", "overrides": {}, "evil": 1}', "unknown field(s) evil"),
    ],
)
def test_a_tampered_request_file_is_one_line_naming_it(tmp_path, capsys, request_text, words):
    from clipaln.cli import main
    from clipaln.manifest import PARTIAL_MARK

    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / PARTIAL_MARK).write_text("")
    (partial / "checkpoint.request.json").write_text(request_text)
    assert main(["train", "pairs", "--out", str(tmp_path / "run"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.request.json" in err and words in err, err
