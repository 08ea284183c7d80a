"""`--resume` continues the run it was started as, or refuses in one line: other data, weights or
features, a corrupt checkpoint, a tampered request."""

import json
import os
import subprocess
import sys

import pytest
from support import TINY, cli, one_line_error

from clipaln import manifest, runs
from clipaln.cli import main
from clipaln.models import load_clip


def _unfinished_run(out, monkeypatch, **kw):
    """A W run stopped just before its folder is committed: OUT.partial with a checkpoint."""
    with monkeypatch.context() as m:
        m.setattr(manifest.RunFolder, "commit", lambda self, _: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            runs.train_run("typographic", out=out, checkpoint_every=1, cache=False, progress=False, **kw)


def test_a_resume_before_the_first_checkpoint_replays_the_recorded_request(tmp_path):
    """A run killed before its first checkpoint (KTO, batch 4) resumed with --resume alone trains what
    it was asked to, from step 0, not the defaults (DPO, batch 256)."""
    import signal

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
    from clipaln.manifest import PARTIAL_MARK

    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / PARTIAL_MARK).write_text("")
    (partial / "checkpoint.request.json").write_text(request_text)
    assert main(["train", "pairs", "--out", str(tmp_path / "run"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.request.json" in err and words in err, err


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


def test_a_resume_is_checked_as_the_run_it_continues_not_as_the_flags_typed(tmp_path, pairs_file):
    """--eval-every typed on resuming a pairs run recorded with --val-share is allowed (its validation
    pairs are in the recorded request, which the contradiction table reads merged with the flags)."""
    import json

    from clipaln.manifest import PARTIAL_MARK

    work = tmp_path / "run.partial"
    work.mkdir()
    (work / PARTIAL_MARK).write_text("")
    request = {"task": "pairs", "method": "dpo", "mode": "w", "overrides": {"epochs": 1, "batch_size": 8},
               "root": str(pairs_file), "seed": 0, "model": "toy", "pretrained": None, "val_share": 0.25}  # fmt: skip
    (work / "checkpoint.request.json").write_text(json.dumps(request))
    assert main(["train", "pairs", "--out", str(tmp_path / "run"), "--resume", "--eval-every", "1", "--quiet"]) == 0
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert any("eval/preference/accuracy" in h for h in history)


def test_a_resume_refusal_names_the_flag_typed(tmp_path, capsys):
    """--pairs sets the run's root: the refusal read '--root B differs from the run's A' to a user who typed --pairs."""
    from clipaln.manifest import PARTIAL_MARK

    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / PARTIAL_MARK).write_text("")
    first, other = tmp_path / "a.csv", tmp_path / "b.csv"
    started = {"task": "pairs", "method": "dpo", "mode": "w", "overrides": {}, "root": str(first)}
    (partial / "checkpoint.request.json").write_text(json.dumps(started))
    code, _, err = cli(["train", "pairs", "--pairs", str(other), "--out", str(tmp_path / "run"), "--resume"], capsys)
    one_line_error(code, err, f"--pairs {other} differs from the run's {first}", "refusing to resume")
