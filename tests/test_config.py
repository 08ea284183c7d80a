"""A run's configuration: every value checked by type and range, config files and flags in their
order, TRL's names read as ours."""

import json

import pytest
from support import train_pairs

from clipaln.train import TrainConfig


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
    assert train_pairs(pairs_file, tmp_path / "a", "--config", str(tmp_path / "c.yaml")) == 0
    cfg = json.loads((tmp_path / "a" / "run.json").read_text())["config"]
    assert (cfg["seed"], cfg["lr"]) == (7, 0.001)
    assert train_pairs(pairs_file, tmp_path / "b", "--config", str(tmp_path / "c.yaml"), "--seed", "3") == 0
    assert json.loads((tmp_path / "b" / "run.json").read_text())["config"]["seed"] == 3


def test_a_bad_config_or_a_missing_reporter_is_refused_before_any_work(tmp_path, pairs_file, capsys, monkeypatch):
    import clipaln.models as models

    monkeypatch.setattr(models, "load_clip", lambda *a, **k: pytest.fail("loaded the model before refusing"))
    (tmp_path / "c.json").write_text('{"batch_size": 2.5}')
    assert train_pairs(pairs_file, tmp_path / "a", "--config", str(tmp_path / "c.json")) == 2
    assert "batch_size must be a whole number" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert train_pairs(pairs_file, tmp_path / "b", "--report-to", "wandb") != 0
    assert "needs the wandb package" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b.partial").exists()


def test_a_config_that_is_a_folder_says_so(tmp_path):
    from clipaln.train import read_config

    with pytest.raises(ValueError, match="is a folder, not a file"):
        read_config(tmp_path)


def test_seeds_apart_the_data_split_and_the_training(tmp_path, pairs_file):
    assert train_pairs(pairs_file, tmp_path / "a", "--seed", "1", "--data-seed", "5") == 0
    assert train_pairs(pairs_file, tmp_path / "b", "--seed", "2", "--data-seed", "5") == 0
    a, b = (json.loads((tmp_path / x / "run.json").read_text()) for x in "ab")
    assert (a["config"]["seed"], b["config"]["seed"]) == (1, 2)
    assert a["data_key"]["seed"] == b["data_key"]["seed"] == 5 and a["data"] == b["data"]  # one split


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


def test_each_methods_schedule_is_read_from_its_registry_entry_alone():
    from clipaln import losses
    from clipaln.config import SCHEDULES, TrainConfig

    for name, entry in losses.LOSSES.items():
        cfg = TrainConfig(method=name)
        assert {k: getattr(cfg, k) for k in entry.schedule} == entry.schedule, name
        assert SCHEDULES[name] == entry.schedule  # the table is the registry's, not a second copy
