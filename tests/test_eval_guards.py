"""eval scores what it says it scores: the run's own split, weights and t, and refuses the rest in
one line."""

import json

import pytest
from PIL import Image
from support import TINY, cli, make_folder, one_line_error

from clipaln.cli import main
from clipaln.models import load_clip
from clipaln.projection import SharedProjection
from clipaln.tracks import typographic


def test_a_projection_given_as_an_encoder_says_so(tmp_path, capsys):
    from clipaln.cli import main

    path = SharedProjection(128).save(tmp_path / "w.safetensors", model="toy", task="typographic")
    assert main(["eval", "typographic", "--image-encoder", str(path), "--no-cache"]) == 2
    assert "is a projection W, not an encoder: pass it as --projection" in capsys.readouterr().err


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


def test_t_is_chosen_on_validation_and_reported_on_test(tmp_path, toy, capsys):

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


def test_eval_toy_names_only_the_flags_that_were_typed(capsys):
    code, _, err = cli(["eval", "toy", "--t", "1"], capsys)
    one_line_error(code, err, "takes no --t")
    assert "--model" not in err and "--dataset" not in err
    code, _, err = cli(["eval", "toy", "--model", "ViT-B-32"], capsys)
    one_line_error(code, err, "takes no --model")


def test_a_w_fitted_in_python_on_captions_is_scored_by_eval_pairs(tmp_path, pairs_file, capsys):
    """from_captions records the task 'captions': eval pairs refused it as another run's, even with
    --allow-other-data, the flag its data guard names."""
    from clipaln import PreferenceData, TrainConfig, fit_projection

    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    images = [Image.open(pairs_file.parent / r["image"]).convert("RGB") for r in rows]
    data = PreferenceData.from_captions(
        load_clip("toy"), images, chosen=[r["chosen"] for r in rows], rejected=[r["rejected"] for r in rows]
    )
    w, _ = fit_projection(data, TrainConfig(method="dpo", epochs=1))
    w.save(tmp_path / "w.safetensors")
    args = ["eval", "pairs", "--projection", str(tmp_path / "w.safetensors"), "--pairs", str(pairs_file)]
    code, _, err = cli([*args, "--workers", "0"], capsys)  # the images it was fitted on: the data guard
    one_line_error(code, err, "--allow-other-data")
    assert "belongs to another run" not in err
    code, out, err = cli([*args, "--workers", "0", "--allow-other-data", "--json"], capsys)
    assert code == 0, err
    assert 0 <= json.loads(out)["preference/accuracy"] <= 1
    assert w.metadata["task"] == "pairs"
    w.metadata["task"] = "captions"  # what from_captions recorded before 2026-12-07
    w.save(tmp_path / "w.safetensors")
    code, _, err = cli([*args, "--workers", "0", "--allow-other-data", "--json"], capsys)
    assert code == 0, err
