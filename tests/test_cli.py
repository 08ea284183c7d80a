"""The `clipaln` command: outputs, files, and one clear line for bad input."""

import json
import subprocess
import sys
import urllib.error

import pytest
import torch
from PIL import Image
from support import cli, one_line_error

from clipaln import runs
from clipaln.cli import main
from clipaln.projection import SharedProjection
from clipaln.tracks import typographic


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bad_arguments_exit_2_with_one_line():
    for args in (
        ["train", "typographic", "--method", "ppo", "--out", "x"],
        ["train", "typographic", "--beta", "0", "--out", "x"],
        ["train", "typographic", "--lam", "-1", "--out", "x"],
        ["eval", "typographic", "--t", "nan"],
        ["frobnicate"],
    ):
        p = subprocess.run([sys.executable, "-m", "clipaln", *args], capture_output=True, text=True)
        assert p.returncode == 2, args
        assert len(p.stderr.strip().splitlines()) == 1 and "error" in p.stderr, p.stderr


def test_a_value_that_is_not_a_number_says_so_and_names_no_internal_function(capsys):
    """argparse names the type's function in "invalid ... value": it read "invalid parse value: 'x'"."""
    for flag, what in (("--epochs", "must be a whole number, got 'x'"), ("--lr", "must be a number, got 'x'")):
        with pytest.raises(SystemExit):
            main(["train", "typographic", flag, "x", "--out", "x"])
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"argument {flag}: {what}") and "parse" not in err, err


def test_the_pairs_flag_names_a_file_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--pairs FILE" in capsys.readouterr().out


def test_a_bad_flag_is_answered_before_open_clip_loads():
    """A command line that fails on its flags answers without loading open_clip and torchvision (about
    6 of the 9 s such an error took on 2 cores): the modules import them where a model is built."""
    code = (
        "import sys\n"
        "from clipaln.cli import main\n"
        "try:\n"
        "    main(['train', 'typographic', '--beta', '0', '--out', 'x'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 2, e.code\n"
        "print(sorted(m for m in ('open_clip', 'torchvision', 'clipaln.commands') if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "['clipaln.commands']", p.stdout + p.stderr


def test_library_errors_become_one_line(capsys, tmp_path):
    code, _, err = run(
        ["eval", "typographic", "--model", "toy", "--projection", str(tmp_path / "none.safetensors")], capsys
    )
    assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["train", "typographic", "--model", "ViT-B-32", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--dataset" in err


def test_eval_toy_json(capsys):
    code, out, _ = run(["eval", "toy", "--json", "--n", "24"], capsys)
    r = json.loads(out)
    assert code == 0 and {"objects/clean", "reading/text_only", "attack/word_rate", "people/gender"} <= set(r)


def test_train_and_eval_typographic_toy(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, _ = run(
        [
            "train",
            "typographic",
            "--model",
            "toy",
            "--method",
            "dpo",
            "--epochs",
            "2",
            "--n-train",
            "240",
            "--n-test",
            "120",
            "--no-cache",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"accuracy/clean", "accuracy/attacked", "accuracy/ocr", "accuracy/text_only", "kl/clean", "w/s_min"} <= set(
        m["trained"]
    )
    assert m["config"]["method"] == "dpo"
    proj = SharedProjection.load(out / "projection.safetensors")
    assert proj.metadata["method"] == "dpo" and proj.metadata["model"] == "toy"
    code, text, _ = run(
        [
            "eval",
            "typographic",
            "--model",
            "toy",
            "--projection",
            str(out / "projection.safetensors"),
            "--t",
            "0",
            "--n-train",
            "240",
            "--n-test",
            "120",
            "--no-cache",
            "--json",
        ],
        capsys,
    )
    r = json.loads(text)
    assert code == 0 and r["accuracy/attacked"] == pytest.approx(m["base"]["accuracy/attacked"])  # t = 0 is the base


def test_the_whole_track_runs_on_vit_b_32_at_random_init(capsys, tmp_path):
    root = tmp_path / "imgs"
    for c, col in [("cat", "orange"), ("dog", "brown"), ("pizza", "red"), ("tree", "green")]:
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (96 + 40 * i, 80), col).save(root / c / f"{i}.jpg")
    out = tmp_path / "vit"
    code, _, err = run(
        [
            "train",
            "typographic",
            "--model",
            "ViT-B-32",
            "--dataset",
            "folder",
            "--root",
            str(root),
            "--n-train",
            "4",
            "--n-test",
            "4",
            "--epochs",
            "2",
            "--no-cache",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    proj = SharedProjection.load(out / "projection.safetensors", dim=512)
    assert proj.weight.dtype == torch.float32 and torch.isfinite(proj.weight).all()
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["trained"]["accuracy/clean"] <= 1 and m["config"]["model"] == "ViT-B-32"


def test_eval_takes_the_runs_split_and_refuses_other_data_or_tasks(capsys, tmp_path):
    out = tmp_path / "run"
    args = ["--model", "toy", "--epochs", "1", "--n-train", "120", "--n-test", "60", "--seed", "3", "--no-cache"]
    assert run(["train", "typographic", *args, "--out", str(out)], capsys)[0] == 0
    trained = json.loads((out / "metrics.json").read_text())["trained"]
    proj = str(out / "projection.safetensors")
    code, text, _ = run(["eval", "typographic", "--projection", proj, "--no-cache", "--json"], capsys)  # no data flags
    assert code == 0 and json.loads(text)["accuracy/attacked"] == pytest.approx(trained["accuracy/attacked"])
    code, _, err = run(["eval", "typographic", "--projection", proj, "--n-train", "100", "--no-cache"], capsys)
    assert code == 2 and "other data" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["eval", "gender", "--projection", proj, "--no-cache"], capsys)
    assert code == 2 and "task 'typographic' there, 'gender' here" in err
    code, _, _ = run(
        ["eval", "typographic", "--projection", proj, "--n-train", "100", "--allow-other-data", "--no-cache", "--json"],
        capsys,
    )
    assert code == 0


def test_eval_scores_the_runs_validation_split(capsys, tmp_path):
    """`eval --split val` (issue 30): the run's validation split, what settings are chosen on, the same
    numbers as the library's evaluate_split; refused where there is none to score."""
    from clipaln import load_clip, runs

    out = tmp_path / "run"
    args = ["--model", "toy", "--epochs", "1", "--n-train", "120", "--n-test", "60", "--seed", "3", "--no-cache"]
    assert run(["train", "typographic", *args, "--out", str(out)], capsys)[0] == 0
    proj = str(out / "projection.safetensors")
    code, text, _ = run(["eval", "typographic", "--projection", proj, "--split", "val", "--no-cache", "--json"], capsys)
    got = json.loads(text)
    assert code == 0 and got["source"]["split"] == "val"
    _, feats = runs.features(
        load_clip("toy"), "typographic", cache=False, progress=False, n_train=120, n_test=60, seed=3
    )
    want = typographic.evaluate_split(feats, feats.val, SharedProjection.load(proj))
    assert {k: got[k] for k in want} == pytest.approx(want)
    code, _, err = run(["eval", "typographic", "--projection", proj, "--split", "val", "--choose-t"], capsys)
    assert code == 2 and "--split val" in err
    for contradiction in (["--photos", str(tmp_path)], ["--t", "0.5"]):  # --choose-t was silently ignored there
        code, _, err = run(["eval", "typographic", "--projection", proj, "--choose-t", *contradiction], capsys)
        assert code == 2 and "--choose-t chooses t" in err and err.count("\n") == 1


def test_the_top_level_help_answers_without_loading_torch():
    """`clipaln --help` and a mistyped command come from clipaln.cli alone (issue 30: under 1 s); the
    subcommands still load everything."""
    probe = (
        "import sys\nfrom clipaln.cli import main\n"
        "for argv in (['--help'], ['trian']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        print('exit', e.code)\n"
        "print('torch loaded:', 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "exit 0" in r.stdout and "exit 2" in r.stdout and "torch loaded: False" in r.stdout, r.stdout + r.stderr
    assert "invalid choice: 'trian'" in r.stderr and "train" in r.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "ViT-B-32", "--dataset", "food101"], "--dataset needs --root"),
        (["--model", "ViT-B-32"], "a real model needs --dataset"),
        (["--dataset", "toy", "--root", "somewhere"], "--root goes with --dataset NAME"),
    ],
)
def test_data_flag_errors_come_before_the_model_loads(tmp_path, monkeypatch, capsys, flags, message):
    """A mistyped data flag costs one line, not a model load first (issue 30: about 9 s on ViT-B-32)."""
    import clipaln.models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the data flags were checked")

    monkeypatch.setattr(clipaln.models, "load_clip", no_load)
    assert main(["train", "typographic", *flags, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train", "typographic", "--out", "run"], ["eval", "typographic"]])
@pytest.mark.parametrize(
    "model, message",
    [
        (["--model", "ViT-Nope"], "unknown model 'ViT-Nope'"),
        (["--model", "ViT-B-32", "--pretrained", "nope"], "unknown pretrained tag 'nope' for ViT-B-32"),
        (["--model", "ViT-B-32", "--pretrained", "gone/model.pt"], "checkpoint file not found: gone/model.pt"),
        (["--pretrained", "gone.safetensors"], "toy checkpoint file not found: gone.safetensors"),
    ],
)
def test_a_bad_model_name_is_the_line_a_bad_data_flag_beside_it_does_not_hide(
    tmp_path, monkeypatch, capsys, command, model, message
):
    """The model is what the user typed first and the cheapest to check: it read '--dataset needs --root'."""
    import clipaln.models

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(clipaln.models, "load_clip", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main([*command, *model, "--dataset", "food101"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_the_first_eval_after_training_reads_the_training_run_s_features(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPALN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert (
        main(
            ["train", "typographic", "--n-train", "40", "--n-test", "12", "--epochs", "1", "--quiet", "--out", str(out)]
        )
        == 0
    )
    cached = sorted((tmp_path / "cache").iterdir())
    assert main(["eval", "typographic", "--projection", str(out / "projection.safetensors"), "--json"]) == 0
    assert sorted((tmp_path / "cache").iterdir()) == cached  # nothing encoded again, nothing new stored
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["accuracy/clean"] >= 0


@pytest.mark.parametrize("what, function", [("typographic", "typographic_table"), ("claims", "claims_run")])
def test_every_bench_json_refuses_nan_in_one_line(what, function, monkeypatch, capsys):
    from clipaln.bench import registry

    monkeypatch.setattr(registry, function, lambda *a, **k: {"claims": [], "accuracy": float("nan")})
    assert main(["bench", what, "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "NaN" in err


def test_os_errors_are_one_line(monkeypatch, capsys, tmp_path):
    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(runs, "train_run", offline)
    code, _, err = cli(["train", "typographic", "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "name resolution")


def test_eval_rows_print_no_negative_zero_and_integers_as_integers(capsys):
    from clipaln.commands import _print_eval

    _print_eval({"rows": [{"t": 0.0, "kl/clean": -1e-9, "k": 10}], "source": {}})
    line = capsys.readouterr().out.splitlines()[1]
    assert line.split() == ["0.00", "0.0000", "10"]
