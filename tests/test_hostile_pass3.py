"""The third hostile pass (issue #28): data lost under concurrency, configs read wrong, inputs trusted.
Every test here failed on the code before the fix."""

import json
import os
import subprocess
import sys

import pytest
import torch

from clipaln.cli import main
from clipaln.manifest import PARTIAL_MARK, OutLock, RunFolder
from clipaln.train import TrainConfig

# --- a run folder is a transaction no second process can race ----------------------------------------


def _hold_lock(out):
    """Another process holding OUT's lock, as a second `clipaln train --out OUT` would."""
    code = (
        f"from clipaln.manifest import OutLock; import time; OutLock({str(out)!r}).acquire(); "
        "print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    from test_tracks_pairs import scenes

    d = tmp_path_factory.mktemp("pairs")
    rows = scenes(d / "s", n=12)
    (d / "s" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "s" / "p.jsonl"


def _train(pairs_file, out, *more):
    return main(
        [
            "train",
            "pairs",
            "--pairs",
            str(pairs_file),
            "--epochs",
            "1",
            "--no-cache",
            "--quiet",
            "--out",
            str(out),
            *more,
        ]
    )


def test_a_second_train_on_the_same_out_is_refused_and_touches_nothing(tmp_path, pairs_file, capsys):
    out = tmp_path / "X"
    (tmp_path / "X.partial").mkdir()
    (tmp_path / "X.partial" / PARTIAL_MARK).write_text("")  # the first run's, as clipaln marks it
    (tmp_path / "X.partial" / "checkpoint.safetensors").write_bytes(b"the first run's checkpoint")
    holder = _hold_lock(out)
    try:
        assert _train(pairs_file, out, "--overwrite") == 2
        err = capsys.readouterr().err
        assert "being written by another clipaln process" in err and err.count("\n") == 1
        assert (tmp_path / "X.partial" / "checkpoint.safetensors").read_bytes() == b"the first run's checkpoint"
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert _train(pairs_file, out, "--overwrite") == 0  # the lock dies with its process


def test_a_run_never_replaces_a_finished_run_it_did_not_check(tmp_path):
    out = tmp_path / "X"
    with pytest.raises(ValueError, match="appeared or changed"):
        with RunFolder(out) as folder:
            (folder.work / "projection.safetensors").write_bytes(b"mine")
            out.mkdir()  # what another writer, without the lock, committed meanwhile
            (out / "run.json").write_text('{"theirs": 1}')
            folder.commit({"mine": 1})
    assert json.loads((out / "run.json").read_text()) == {"theirs": 1}
    assert (folder.work / "projection.safetensors").read_bytes() == b"mine"  # kept, and said where
    assert not OutLock(out).path.exists()  # the lock is released


def test_the_lock_is_one_holder_at_a_time_in_one_process_too(tmp_path):
    with OutLock(tmp_path / "X"):
        with pytest.raises(ValueError, match="being written"):
            OutLock(tmp_path / "X").acquire()
    with OutLock(tmp_path / "X"):
        pass


@pytest.fixture(scope="module")
def run(pairs_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    assert _train(pairs_file, out) == 0
    return out


def test_export_overwrite_never_replaces_what_is_not_an_export(tmp_path, run, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    assert main(["export", "--projection", str(run / "projection.safetensors"), "--out", str(mine), "--overwrite"]) == 2
    assert "holds no clipaln export" in capsys.readouterr().err
    assert (mine / "README.md").read_text() == "my notes" and sorted(os.listdir(mine)) == ["README.md"]
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not mine to replace")
    assert (
        main(["export", "--projection", str(run / "projection.safetensors"), "--out", str(weights), "--overwrite"]) == 2
    )
    assert weights.read_bytes() == b"not mine to replace"


def test_an_export_replaces_an_export_and_a_second_one_at_once_is_refused(tmp_path, run, capsys):
    out = tmp_path / "exp"
    args = ["export", "--projection", str(run / "projection.safetensors"), "--out", str(out)]
    assert main([*args, "--t", "0.5"]) == 0
    assert main([*args, "--t", "2", "--overwrite"]) == 0
    from safetensors import safe_open

    with safe_open(str(out / "open_clip_model.safetensors"), "pt") as f:
        assert f.metadata()["t"] == "2.0"
    holder = _hold_lock(out)
    try:
        assert main([*args, "--overwrite"]) == 2
        assert "being written by another clipaln process" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_an_interrupted_export_leaves_nothing_and_runs_again(tmp_path, run, monkeypatch):
    import safetensors.torch

    out = tmp_path / "exp"
    real = safetensors.torch.save_file

    def killed(tensors, path, metadata=None):
        real(tensors, path, metadata)
        raise KeyboardInterrupt  # SIGTERM arrives as KeyboardInterrupt (cli._interrupt)

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    args = ["export", "--projection", str(run / "projection.safetensors"), "--out", str(out)]
    assert main(args) == 130
    assert sorted(os.listdir(tmp_path)) == []  # no OUT, no OUT.partial, no .tmp, no lock
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert main(args) == 0


def test_weights_are_as_readable_as_their_json(tmp_path, run):
    old = os.umask(0o022)
    try:
        assert main(["export", "--projection", str(run / "projection.safetensors"), "--out", str(tmp_path / "e")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "e").iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_a_dangling_symlink_out_is_named(tmp_path, pairs_file, capsys):
    (tmp_path / "X").symlink_to(tmp_path / "nowhere")
    assert _train(pairs_file, tmp_path / "X") == 2
    assert "symbolic link to nothing" in capsys.readouterr().err


# --- a typed config: one place, flags > config file > defaults ---------------------------------------


@pytest.mark.parametrize(
    "given, message",
    [
        ({"bma": "false"}, "bma must be true or false"),
        ({"epochs": True}, "epochs must be a number"),
        ({"epochs": 1.5}, "epochs must be a whole number"),
        ({"batch_size": 2.5}, "batch_size must be a whole number"),
        ({"pref_weight": -1}, "anti-preference"),
        ({"pref_weight": float("nan")}, "finite"),
        ({"pref_weight": "x"}, "pref_weight must be a number"),
        ({"lr": float("inf")}, "finite"),
        ({"method": ["dpo"]}, "method must be one name"),
        ({"label_smoothing": 0.1}, "cDPO's"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_every_config_value_is_checked_by_type_and_range(given, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{"method": "dpo", **given})


def test_config_strings_that_are_numbers_are_numbers():
    cfg = TrainConfig(method="dpo", lr="1e-3", lam="0.1", epochs="2", orth="0", warmup_ratio="0.2")
    assert (cfg.lr, cfg.lam, cfg.epochs, cfg.orth, cfg.warmup_ratio) == (0.001, 0.1, 2, 0.0, 0.2)
    assert isinstance(cfg.epochs, int)


def test_a_config_file_wins_over_defaults_and_a_flag_over_the_file(tmp_path, pairs_file):
    (tmp_path / "c.yaml").write_text("lr: 1e-3\nseed: 7\n")  # PyYAML reads 1e-3 as a string
    assert _train(pairs_file, tmp_path / "a", "--config", str(tmp_path / "c.yaml")) == 0
    cfg = json.loads((tmp_path / "a" / "run.json").read_text())["config"]
    assert (cfg["seed"], cfg["lr"]) == (7, 0.001)
    assert _train(pairs_file, tmp_path / "b", "--config", str(tmp_path / "c.yaml"), "--seed", "3") == 0
    assert json.loads((tmp_path / "b" / "run.json").read_text())["config"]["seed"] == 3


def test_a_bad_config_or_a_missing_reporter_is_refused_before_any_work(tmp_path, pairs_file, capsys, monkeypatch):
    import clipaln.runs as runs

    monkeypatch.setattr(runs, "load_clip", lambda *a, **k: pytest.fail("loaded the model before refusing"))
    (tmp_path / "c.json").write_text('{"batch_size": 2.5}')
    assert _train(pairs_file, tmp_path / "a", "--config", str(tmp_path / "c.json")) == 2
    assert "batch_size must be a whole number" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert _train(pairs_file, tmp_path / "b", "--report-to", "wandb") != 0
    assert "needs the wandb package" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b.partial").exists()


# --- inputs checked, not trusted ---------------------------------------------------------------------


def test_words_the_toy_cannot_read_are_named(toy):
    from clipaln.policy import PreferenceData

    x = torch.nn.functional.normalize(torch.randn(2, toy.embed_dim), dim=-1)
    with pytest.raises(ValueError, match="cannot read 2 word.*goldfish, tench"):
        PreferenceData.from_captions(
            toy, x, ["a photo of a tench.", "a photo of a cup."], ["a photo of a goldfish.", "a photo of a car."]
        )


def test_a_typographic_folder_of_unknown_classes_is_refused_for_the_toy(tmp_path, toy):
    from PIL import Image

    from clipaln.tracks import typographic

    for c in ("tench", "goldfish"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(tmp_path / c / f"{i}.png")
    spec = typographic.real_spec("folder", str(tmp_path), n_train=2, n_test=2, n_val=2, image_size=64)
    with pytest.raises(ValueError, match="cannot read .*goldfish.*tench"):
        typographic.build_features(toy, spec, progress=False)


@pytest.mark.parametrize("t", [float("nan"), float("inf"), "0.5", True, None])
def test_the_prompt_reflection_takes_t_as_a_projection_does(t):
    from clipaln.tracks import gender

    r = gender.PromptReflection([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="t must be"):
        r.scorer(torch.randn(3, 3), torch.randn(2, 3)).scores(t)


def test_the_prompt_reflection_refuses_what_it_cannot_be():
    import numpy as np

    from clipaln.tracks import gender

    assert gender.PromptReflection(np.ones(3)).dim == 3  # an array or an int tensor is a direction too
    assert gender.PromptReflection(torch.ones(3, dtype=torch.int64)).direction.dtype == torch.float32
    with pytest.raises(ValueError, match="3-d"):
        gender.PromptReflection([1.0, 0.0, 0.0]).scorer(torch.randn(4, 5), torch.randn(2, 5))


def test_a_latin1_file_is_one_line_naming_it_and_the_fix(tmp_path):
    from clipaln.data.gender import GenderCSV
    from clipaln.tracks.pairs import read_pairs

    for name in ("p.csv", "p.jsonl"):
        f = tmp_path / name
        f.write_bytes("image,chosen,rejected\ncaf\xe9.png,a,b\n".encode("latin-1"))
        with pytest.raises(ValueError, match=f"{name} is not UTF-8 text .*0xe9.*save it as UTF-8"):
            read_pairs(f)
    (tmp_path / "g.csv").write_bytes("path,gender,activity\nx.png,femme,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="g.csv is not UTF-8"):
        GenderCSV(tmp_path / "g.csv")


def test_pairs_files_a_json_array_and_contradictions(tmp_path):
    from PIL import Image

    from clipaln.tracks.pairs import read_pairs

    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    rows = [
        {"image": "0.png", "chosen": "a cup.", "rejected": "a car."},
        {"image": "1.png", "chosen": "a cup.", "rejected": "a key."},
    ]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    assert len(read_pairs(tmp_path / "p.json")) == 2
    rows.append({"image": "0.png", "chosen": "a car.", "rejected": "a cup."})
    (tmp_path / "q.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="rows 1 and 3 prefer opposite captions for 0.png"):
        read_pairs(tmp_path / "q.json")


def test_a_config_that_is_a_folder_says_so(tmp_path):
    from clipaln.train import read_config

    with pytest.raises(ValueError, match="is a folder, not a file"):
        read_config(tmp_path)


def test_a_folder_linked_into_itself_is_fingerprinted_once(tmp_path):
    from clipaln.data.real import files_fingerprint

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"x")
    before = files_fingerprint(tmp_path)
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    assert isinstance(files_fingerprint(tmp_path), str) and before  # no "Too many levels of symbolic links"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "tune", "--seeds", "1,2"], "trains one seed"),
        (["bench", "encode", "--seeds", "5", "--n-train", "3"], "does not read --n-train, --seeds"),
        (["bench", "sliders", "--seeds", "1"], "does not read --seeds"),
        (["bench", "speed", "--n-train", "4"], "does not read --n-train"),
        (["eval", "toy", "--n", "1", "--json"], "at least 24"),
        (["train", "pairs", "--pairs", "x.csv", "--label-smoothing", "0.1", "--out", "o"], "cDPO's"),
    ],
)
def test_flags_that_would_be_ignored_or_read_from_one_image_are_refused(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_static_player_refuses_what_it_cannot_show():
    from clipaln.widgets import StaticPlayer

    frames = [b"a", b"b", b"c"]
    for start in (99, -1, True):
        with pytest.raises(ValueError, match="start is the index of a frame"):
            StaticPlayer([0.0, 0.5, 1.0], frames, start=start)
    with pytest.raises(ValueError, match="must increase"):
        StaticPlayer([1.0, -1.0, 0.0], frames)


def test_a_full_shared_memory_names_the_fix():
    from clipaln.features import _worker_errors_unwrapped

    class Loader:
        def __iter__(self):
            return self

        def __next__(self):
            raise RuntimeError("unable to resize file </torch_123_456> to the right size: No space left on device (28)")

    with pytest.raises(RuntimeError, match="--workers 0"):
        list(_worker_errors_unwrapped(Loader()))


def test_a_nan_loss_names_a_checkpoint_only_when_one_was_saved(tmp_path):
    from clipaln.train import loop

    w = torch.nn.Parameter(torch.ones(2))
    cfg = TrainConfig(method="dpo", lr=0.1, epochs=1, batch_size=2, orth=0.0, bma=False)
    nan_at_step_2 = lambda idx, ridx, batch: (w.sum() * (float("nan") if state["step"] >= 2 else 1.0), {})
    state = {"step": 0}

    def objective(idx, ridx, batch):
        state["step"] += 1
        return nan_at_step_2(idx, ridx, batch)

    for every, named in ((1000, False), (1, True)):
        state["step"] = 0
        with pytest.raises(FloatingPointError) as e:
            loop(
                [w],
                objective,
                8,
                8,
                cfg,
                progress=False,
                checkpoint=tmp_path / f"c{every}.safetensors",
                checkpoint_every=every,
            )
        assert ("checkpoint" in str(e.value)) == named
        assert not named or (tmp_path / f"c{every}.safetensors").is_file()


def test_every_file_a_run_writes_is_checked_before_eval_and_export(tmp_path, pairs_file, capsys):
    import shutil

    assert _train(pairs_file, tmp_path / "r") == 0
    files = json.loads((tmp_path / "r" / "run.json").read_text())["files"]
    assert set(files) == {"projection.safetensors", "metrics.json", "history.jsonl"}
    assert main(["eval", "pairs", "--projection", str(tmp_path / "r" / "projection.safetensors"), "--json"]) == 0
    capsys.readouterr()
    shutil.copytree(tmp_path / "r", tmp_path / "s")
    w = tmp_path / "s" / "projection.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)  # the same size, other bytes
    for argv in (
        ["eval", "pairs", "--projection", str(w), "--json"],
        ["export", "--projection", str(w), "--out", str(tmp_path / "e")],
    ):
        assert main(argv) == 2
        assert "is not the file its run wrote" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_seeds_apart_the_data_split_and_the_training(tmp_path, pairs_file):
    assert _train(pairs_file, tmp_path / "a", "--seed", "1", "--data-seed", "5") == 0
    assert _train(pairs_file, tmp_path / "b", "--seed", "2", "--data-seed", "5") == 0
    a, b = (json.loads((tmp_path / x / "run.json").read_text()) for x in "ab")
    assert (a["config"]["seed"], b["config"]["seed"]) == (1, 2)
    assert a["data_key"]["seed"] == b["data_key"]["seed"] == 5 and a["data"] == b["data"]  # one split


def test_image_files_of_every_mode_read_as_they_look(tmp_path):
    import numpy as np
    from PIL import Image

    from clipaln.data.real import _open_image

    ramp16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp16).save(tmp_path / "16bit.png")
    mean = np.asarray(_open_image(tmp_path / "16bit.png")).mean()
    assert 120 < mean < 135  # the ramp's middle grey, not clipped to white (PIL's convert gives ~253)
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(tmp_path / "float.tif")
    assert np.asarray(_open_image(tmp_path / "float.tif")).mean() == pytest.approx(128, abs=1)
    Image.fromarray(np.full((8, 8), 7.5, dtype=np.float32) * 100).save(tmp_path / "hdr.tif")
    with pytest.raises(ValueError, match="neither \\[0, 1\\] nor \\[0, 255\\]"):
        _open_image(tmp_path / "hdr.tif")
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent: white on a page
    clear.save(tmp_path / "clear.png")
    assert np.asarray(_open_image(tmp_path / "clear.png")).min() == 255
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([10, 20, 30] * 256)
    pal.save(tmp_path / "pal.png")
    assert tuple(np.asarray(_open_image(tmp_path / "pal.png"))[0, 0]) == (10, 20, 30)


def test_a_w_fitted_in_python_exports_from_memory(tmp_path, toy):
    import clipaln
    from clipaln import PreferenceData, fit_projection
    from clipaln.toyworld import render

    images = [render(obj=o, rng=i) for i, o in enumerate(["apple", "cup", "key", "bird"])]
    data = PreferenceData.from_captions(
        toy,
        images,
        ["a photo of an apple.", "a photo of a cup.", "a photo of a key.", "a photo of a bird."],
        ["a photo of a cup.", "a photo of a key.", "a photo of a bird.", "a photo of an apple."],
    )
    assert data.record["model"] == "toy"  # from_captions records the model
    W, _ = fit_projection(data, TrainConfig(method="dpo", epochs=1, batch_size=4), progress=False)
    r = clipaln.export(W, out=tmp_path / "mem", t=0.5)
    assert r["model"] == "toy" and (tmp_path / "mem" / "open_clip_model.safetensors").is_file()
    W.save(tmp_path / "w.safetensors")
    assert clipaln.export(tmp_path / "w.safetensors", out=tmp_path / "file.safetensors")["model"] == "toy"
    bare = clipaln.SharedProjection(W.dim, W.weight.detach())
    with pytest.raises(ValueError, match="carries no record of its model: pass model="):
        clipaln.export(bare, out=tmp_path / "x")
    assert clipaln.export(bare, out=tmp_path / "y", model="toy")["model"] == "toy"


def test_kto_logs_its_kl_estimate_as_trl_does():
    from test_hostile_pass2 import small_data

    from clipaln import fit_projection

    _, hist = fit_projection(small_data(), TrainConfig(method="kto", epochs=2, batch_size=6), progress=False)
    assert "kl" in hist and len(hist["kl"]) == len(hist["loss"]) and min(hist["kl"]) >= 0
    _, hist = fit_projection(small_data(), TrainConfig(method="dpo", epochs=2, batch_size=6), progress=False)
    assert "kl" not in hist  # DPO has no reference point


def test_t_is_chosen_on_validation_and_reported_on_test(tmp_path, toy, capsys):
    from clipaln.tracks import typographic

    feats = typographic.build_features(
        toy, typographic.toy_spec(n_train=96, n_test=48, n_val=48), progress=False, workers=0
    )
    W, _ = typographic.train(feats, typographic.train_config("dpo", epochs=2), progress=False)
    r = typographic.choose_t(feats, W)
    assert r["chosen_on"] == "validation split" and -2 <= r["t"] <= 1.2
    base = typographic.evaluate_split(feats, feats.val)["accuracy/clean"]
    assert r["val"]["accuracy/clean"] >= base - typographic.MAX_CLEAN_DROP
    assert r["test"] == typographic.evaluate(feats, W.scaled(r["t"]))  # test at the chosen t, not chosen on it
    out = tmp_path / "run"
    assert (
        main(
            ["train", "typographic", "--n-train", "96", "--n-test", "48", "--epochs", "1", "--quiet", "--out", str(out)]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(["eval", "typographic", "--projection", str(out / "projection.safetensors"), "--choose-t", "--json"]) == 0
    )
    got = json.loads(capsys.readouterr().out)
    assert got["chosen_on"] == "validation split" and got["source"]["t"] == got["t"]
    assert main(["eval", "gender", "--projection", str(out / "projection.safetensors"), "--choose-t"]) == 2


def test_a_trl_config_reads_as_ours(tmp_path):
    from clipaln.train import read_config

    (tmp_path / "trl.yaml").write_text(
        "learning_rate: 5e-3\nnum_train_epochs: 2\nper_device_train_batch_size: 64\nloss_type: sigmoid\nbeta: 0.5\n"
    )
    cfg = TrainConfig(**read_config(tmp_path / "trl.yaml"))
    assert (cfg.method, cfg.lr, cfg.epochs, cfg.per_device_train_batch_size, cfg.beta) == ("dpo", 0.005, 2, 64, 0.5)
    from clipaln.train import global_batch

    assert global_batch(cfg) == 64  # per device: one process here (2 ranks: 128, tests/test_distributed.py)
    (tmp_path / "both.json").write_text('{"lr": 0.1, "learning_rate": 0.2}')
    with pytest.raises(ValueError, match="sets both learning_rate .* and lr"):
        read_config(tmp_path / "both.json")
