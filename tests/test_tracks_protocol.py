"""The Track protocol: a track is one file plus one registry line (clipaln.tracks.register), and then
`clipaln train NAME` and `clipaln eval NAME` run it as they run the built-in tracks."""

import json
import sys
from pathlib import Path

import pytest

from clipaln import tracks
from clipaln.cli import main
from clipaln.tracks.protocol import Track


def test_the_built_in_tracks_are_tracks():
    assert set(tracks.TRACKS) == {"typographic", "gender", "pairs"}
    assert all(isinstance(t, Track) for t in tracks.TRACKS.values())


def test_a_track_in_one_file_and_one_line_trains_and_evaluates_from_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "examples"))
    import words_over_objects

    tracks.register("words", words_over_objects)  # the one line
    try:
        _train_and_evaluate_words(tmp_path, capsys)
    finally:
        del tracks.TRACKS["words"]


def _train_and_evaluate_words(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "words", "--method", "dpo", "--epochs", "40", "--batch-size", "8", "--out", str(out),
                 "--quiet", "--no-cache"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "trained: " in printed and "preference/accuracy" in printed
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "words" and run["config"]["method"] == "dpo"
    proj = str(out / "projection.safetensors")
    assert main(["eval", "words", "--projection", proj, "--t", "0", "1", "--json", "--no-cache"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    before, after = (r["preference/accuracy"] for r in rows)
    assert after > before and after >= 0.75, rows  # W learned to prefer the written word on held-out scenes
    assert main(["eval", "words", "--projection", proj, "--split", "val", "--no-cache"]) == 2
    assert "no validation split" in capsys.readouterr().err
    assert main(["train", "words", "--dataset", "imagenet", "--out", str(tmp_path / "x")]) == 2
    assert "draws its own toy scenes" in capsys.readouterr().err
    assert main(["train", "words", "--eval-every", "5", "--out", str(tmp_path / "y")]) == 2  # no validator
    assert "the words track has none" in capsys.readouterr().err and not (tmp_path / "y.partial").exists()


def test_register_refuses_what_is_not_a_track_or_a_name():
    with pytest.raises(ValueError, match="lacks train, evaluate"):
        tracks.register("half", type("Half", (), {"make_spec": 0, "build_features": 0, "train_config": 0})())
    for name in ("pairs", "toy", "Has Space", ""):
        with pytest.raises(ValueError, match="registered already|lower-case"):
            tracks.register(name, sys.modules["clipaln.tracks.pairs"])
