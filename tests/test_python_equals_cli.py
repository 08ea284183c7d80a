"""Python is a first-class path: the same defaults as the command line, a W that remembers its data
(so eval guards the split), and eval that reads the model from the run and loads it once for many t."""

import json

import pytest
import torch
from test_tracks_pairs import scenes

from clipaln import models, runs
from clipaln.cli import main
from clipaln.models import load_clip
from clipaln.policy import PreferenceData
from clipaln.projection import SharedProjection
from clipaln.tracks import pairs, typographic
from clipaln.train import SCHEDULES, TrainConfig, fit_projection


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    rows = scenes(folder, n=20)
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def python_features(path, seed=0):
    bundle = load_clip("toy")
    return pairs.build_features(bundle, pairs.real_spec(str(path), seed=seed), progress=False, workers=0)


def test_trainconfig_takes_each_methods_defaults():
    for method in ("dpo", "ipo", "kto"):
        cfg = TrainConfig(method=method)
        assert cfg == typographic.train_config(method) == pairs.train_config(method)
        assert {k: getattr(cfg, k) for k in SCHEDULES[method]} == SCHEDULES[method]
    assert (TrainConfig(method="kto").beta, TrainConfig(method="kto").lam) == (1.5, 0.01)  # the paper's
    assert TrainConfig(method="kto", beta=1.0).beta == 1.0  # given values win


@pytest.mark.parametrize("method", ["dpo", "ipo", "kto"])
def test_python_and_the_command_line_train_the_same_w(tmp_path, pairs_file, method):
    out = tmp_path / "run"
    argv = ["train", "pairs", "--pairs", str(pairs_file), "--method", method, "--out", str(out)]
    assert main([*argv, "--no-cache", "--workers", "0", "--quiet"]) == 0
    from_cli = SharedProjection.load(out / "projection.safetensors")
    from_python, _ = fit_projection(python_features(pairs_file).train, TrainConfig(method=method), progress=False)
    assert torch.equal(from_python.weight, from_cli.weight)


def test_a_python_w_keeps_its_data_and_eval_guards_the_split(tmp_path, pairs_file, capsys):
    feats = python_features(pairs_file)
    proj, _ = fit_projection(feats.train, TrainConfig(method="dpo", epochs=2), progress=False)
    path = proj.save(tmp_path / "w.safetensors")
    args = ["eval", "pairs", "--projection", str(path), "--pairs", str(pairs_file), "--no-cache", "--json"]
    assert main([*args, "--seed", "1"]) == 2  # another split: its test rows could be training rows
    assert "trained on other data" in capsys.readouterr().err
    assert main(args) == 0  # the split it was trained beside
    scored = json.loads(capsys.readouterr().out)
    assert scored["preference/accuracy"] == pytest.approx(pairs.evaluate(feats, proj)["preference/accuracy"])
    # a W fitted on hand-made data knows nothing of its rows: refused unless the user allows it
    hand = PreferenceData(feats.train.pref_images, feats.train.y_w, feats.train.y_l, feats.train.texts,
                          feats.train.reg_images, feats.train.logit_scale)  # fmt: skip
    bare, _ = fit_projection(hand, TrainConfig(method="dpo", epochs=1), progress=False)
    bare_path = bare.save(tmp_path / "bare.safetensors")
    args[3] = str(bare_path)
    assert main(args) == 2 and "carries no record of the data" in capsys.readouterr().err
    assert main([*args, "--allow-other-data"]) == 0


def test_several_t_cost_one_model_load(tmp_path, pairs_file, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["train", "pairs", "--pairs", str(pairs_file), "--out", str(out), "--no-cache", "--quiet"]) == 0
    capsys.readouterr()
    loads = []
    real = models.load_clip
    monkeypatch.setattr(models, "load_clip", lambda *a, **k: loads.append(a) or real(*a, **k))
    ts = ["-1", "0", "0.5", "1", "2"]
    assert main(["eval", "pairs", "--projection", str(out / "projection.safetensors"), "--t", *ts, "--no-cache"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(loads) == 1
    assert [float(line.split()[0]) for line in printed[1:6]] == [float(t) for t in ts]
    one = runs.eval_run("pairs", projection=out / "projection.safetensors", t=2.0, cache=False, progress=False)
    many = runs.eval_run("pairs", projection=out / "projection.safetensors", t=[0.0, 2.0], cache=False, progress=False)
    assert many["rows"][1]["preference/accuracy"] == one["preference/accuracy"]
    with pytest.raises(ValueError, match="t must be a finite number"):
        runs.eval_run("pairs", projection=out / "projection.safetensors", t="1", cache=False, progress=False)


def test_export_in_python_is_the_command(tmp_path, pairs_file):
    from safetensors.torch import load_file

    import clipaln
    from clipaln.fold import HUB_WEIGHTS

    proj, _ = fit_projection(python_features(pairs_file).train, TrainConfig(method="dpo", epochs=2), progress=False)
    path = proj.save(tmp_path / "w.safetensors")  # a W fitted in Python names its model: it can be exported
    clipaln.export(path, out=tmp_path / "from_python", t=1.5)
    assert main(["export", "--projection", str(path), "--t", "1.5", "--out", str(tmp_path / "from_cli")]) == 0
    a, b = (load_file(tmp_path / name / HUB_WEIGHTS) for name in ("from_python", "from_cli"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
