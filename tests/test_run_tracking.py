"""Runs you can follow and resume whole: TensorBoard under TRL's names, a config file, the
warm-up and cDPO flags, and a resumed run whose history holds every step once."""

import json

import pytest
from test_tracks_pairs import scenes

from clipaln import runs
from clipaln.cli import main
from clipaln.models import load_clip

TRL_NAMES = {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "learning_rate"}


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in scenes(folder, n=20)))
    return path


def train(pairs_file, out, *flags):
    return main(["train", "pairs", "--pairs", str(pairs_file), "--out", str(out), "--no-cache", "--quiet", *flags])


def test_report_to_tensorboard_writes_trls_names(tmp_path, pairs_file):
    pytest.importorskip("tensorboard", reason="pip install 'clipaln[track]' for --report-to tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert train(pairs_file, tmp_path / "run", "--epochs", "4", "--report-to", "tensorboard") == 0
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"train/{n}" for n in TRL_NAMES} <= tags, TRL_NAMES - tags  # under "train/", as TRL's trainers log
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    logged = [e.value for e in events.Scalars("train/rewards/margins")]
    assert logged == pytest.approx([row["rewards/margins"] for row in history], rel=1e-6)
    # TRL's identity: the margin is the chosen reward less the rejected one
    row = history[-1]
    assert row["rewards/margins"] == pytest.approx(row["rewards/chosen"] - row["rewards/rejected"], abs=1e-5)


def test_a_config_file_sets_the_run_and_flags_win(tmp_path, pairs_file, capsys):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"method": "cdpo", "epochs": 2, "label_smoothing": 0.2, "warmup_ratio": 0.3}))
    assert train(pairs_file, tmp_path / "a", "--config", str(config)) == 0
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert {k: run["config"][k] for k in ("method", "epochs", "label_smoothing", "warmup_ratio")} == {
        "method": "cdpo",
        "epochs": 2,
        "label_smoothing": 0.2,
        "warmup_ratio": 0.3,
    }
    assert train(pairs_file, tmp_path / "b", "--config", str(config), "--epochs", "3") == 0
    assert json.loads((tmp_path / "b" / "run.json").read_text())["config"]["epochs"] == 3
    capsys.readouterr()
    config.write_text(json.dumps({"epoch": 2}))  # a typo is named, not ignored
    assert train(pairs_file, tmp_path / "c", "--config", str(config)) == 2
    assert "unknown field(s) epoch" in capsys.readouterr().err
    assert train(pairs_file, tmp_path / "d", "--label-smoothing", "0.2") == 2  # DPO has no smoothing
    assert "label_smoothing is cDPO's" in capsys.readouterr().err


def test_the_warmup_ratio_flag_starts_below_the_full_rate(tmp_path, pairs_file):
    assert train(pairs_file, tmp_path / "run", "--epochs", "10", "--warmup-ratio", "0.5") == 0
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    rates = [row["learning_rate"] for row in history]
    assert rates[0] == pytest.approx(max(rates) / 5) and rates.index(max(rates)) == 4  # 5 warm-up steps of 10


def test_a_resumed_run_has_every_step_once_and_its_whole_time(tmp_path, pairs_file, ctrl_c_after_checkpoints):
    data = dict(root=str(pairs_file), cache=False, progress=False, workers=0)
    out = tmp_path / "run"
    with ctrl_c_after_checkpoints(2):
        runs.train_run("pairs", out=out, overrides={"epochs": 12}, checkpoint_every=3, **data)
    result = runs.train_run("pairs", out=out, overrides={"epochs": 12}, checkpoint_every=3, resume=True, **data)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == list(range(12))
    elapsed = [row["elapsed_s"] for row in history]
    assert elapsed == sorted(elapsed) and result["metrics"]["train_seconds"] == elapsed[-1]


def test_a_run_resumed_between_checkpoints_logs_every_step_once_to_tensorboard(tmp_path, pairs_file, monkeypatch):
    pytest.importorskip("tensorboard", reason="pip install 'clipaln[track]' for --report-to tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import clipaln.reporting as reporting

    real = reporting.Reporter.__call__

    def interrupted_at_step_7(self, step, row):
        real(self, step, row)
        if step == 7:  # logged 0-7; the last checkpoint was written after step 5
            raise KeyboardInterrupt

    data = dict(root=str(pairs_file), cache=False, progress=False, workers=0, report_to=("tensorboard",))
    out = tmp_path / "run"
    monkeypatch.setattr(reporting.Reporter, "__call__", interrupted_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        runs.train_run("pairs", out=out, overrides={"epochs": 12}, checkpoint_every=3, **data)
    monkeypatch.setattr(reporting.Reporter, "__call__", real)
    runs.train_run("pairs", out=out, overrides={"epochs": 12}, checkpoint_every=3, resume=True, **data)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert sorted(steps) == list(range(12)), steps  # steps 6 and 7, logged twice before, once now


def test_resume_reads_the_run_s_flags_back_and_refuses_a_different_one(
    tmp_path, pairs_file, ctrl_c_after_checkpoints, capsys
):
    from safetensors.torch import load_file

    flags = ["--method", "kto", "--lr", "0.02", "--epochs", "6", "--seed", "3", "--checkpoint-every", "2"]
    assert train(pairs_file, tmp_path / "whole", *flags) == 0
    with ctrl_c_after_checkpoints(2):  # the same run, started from Python
        runs.train_run("pairs", method="kto", out=tmp_path / "run", overrides={"lr": 0.02, "epochs": 6, "seed": 3},
                       checkpoint_every=2, root=str(pairs_file), seed=3, cache=False, progress=False)  # fmt: skip
    capsys.readouterr()
    bare = ["train", "pairs", "--out", str(tmp_path / "run"), "--resume", "--quiet"]  # no flag typed again
    assert main([*bare, "--lr", "0.01"]) == 2
    assert "--lr 0.01 differs from the run's 0.02" in capsys.readouterr().err
    assert main([*bare, "--pairs", str(tmp_path / "other.csv")]) == 2
    assert "refusing to resume" in capsys.readouterr().err
    assert main([*bare, "--checkpoint-every", "3"]) == 0  # how it runs may change, not what it trains
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["config"]["method"], run["config"]["lr"], run["config"]["seed"]) == ("kto", 0.02, 3)
    w = {k: load_file(tmp_path / d / "projection.safetensors") for k, d in (("a", "whole"), ("b", "run"))}
    assert all((w["a"][k] == w["b"][k]).all() for k in w["a"])  # the uninterrupted run's W, bit for bit


def test_eval_every_n_steps_logs_validation_metrics_to_history_and_tensorboard(tmp_path, pairs_file, capsys):
    flags = ["--val-share", "0.25", "--epochs", "10", "--eval-every", "3"]
    assert train(pairs_file, tmp_path / "bare", "--epochs", "10", "--eval-every", "3") == 2  # no validation pairs
    assert "--eval-every scores W on validation data" in capsys.readouterr().err
    assert train(pairs_file, tmp_path / "run", *flags) == 0
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    scored = {row["step"]: row["eval/preference/accuracy"] for row in history}
    last = history[-1]["step"]
    assert [s for s, v in scored.items() if v is not None] == [*range(2, last, 3), last]  # every 3rd step and the last
    assert all(0 <= v <= 1 for v in scored.values() if v is not None)
    pytest.importorskip("tensorboard", reason="pip install 'clipaln[track]' for --report-to tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert train(pairs_file, tmp_path / "tb", *flags, "--report-to", "tensorboard") == 0
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("eval/preference/accuracy")}  # "eval/", as TRL's are
    assert logged == pytest.approx({s: v for s, v in scored.items() if v is not None})


def test_the_last_eval_row_scores_the_saved_w(tmp_path, pairs_file):
    from clipaln.projection import SharedProjection
    from clipaln.tracks import pairs

    out = tmp_path / "run"
    assert train(pairs_file, out, "--val-share", "0.25", "--epochs", "10", "--eval-every", "4") == 0
    last = json.loads((out / "history.jsonl").read_text().splitlines()[-1])
    feats = pairs.build_features(load_clip("toy"), runs.make_spec("pairs", root=str(pairs_file), val_share=0.25))
    saved = SharedProjection.load(out / "projection.safetensors")
    assert last["eval/preference/accuracy"] == pytest.approx(pairs.prefers(feats.val, saved))  # BMA, not the iterate


def test_resume_compares_what_was_typed_even_at_its_default(tmp_path, pairs_file, ctrl_c_after_checkpoints, capsys):
    out = tmp_path / "run"
    with ctrl_c_after_checkpoints(1):  # ipo, data seed 5, training seed 3, validation every 2 steps
        data = dict(root=str(pairs_file), seed=5, val_share=0.25, cache=False, progress=False)
        runs.train_run("pairs", method="ipo", out=out, overrides={"epochs": 8, "seed": 3}, checkpoint_every=3,
                       eval_every=2, **data)  # fmt: skip
    capsys.readouterr()
    bare = ["--out", str(out), "--resume", "--quiet"]
    assert main(["train", "pairs", *bare, "--method", "dpo"]) == 2  # dpo is the parser's default: typed, it counts
    assert "--method dpo differs from the run's ipo" in capsys.readouterr().err
    assert main(["train", "gender", *bare]) == 2
    assert "task gender differs from the run's pairs" in capsys.readouterr().err
    assert main(["train", "pairs", *bare, "--no-bma"]) == 2  # the run averages (IPO's default): not silently dropped
    assert "--bma False differs from the run's True" in capsys.readouterr().err
    assert main(["train", "pairs", *bare, "--seed", "3", "--lr", "0.003"]) == 0  # as started; 0.003 is IPO's lr
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    evaluated = [row["step"] for row in history if row["eval/preference/accuracy"] is not None]
    assert evaluated == [1, 3, 5, 7]  # --eval-every read back too, to the end
    run = json.loads((out / "run.json").read_text())
    assert (run["config"]["method"], run["config"]["seed"], run["seed"]) == ("ipo", 3, 5)
