"""Fuzz what a user's own files hand clipaln, as tests/test_cli_fuzz.py fuzzes the command line: the
request file of an unfinished run that `--resume` reads (60 seeded random edits of a good one), and
loss plugins (60 seeded random losses: every wrong output, signature and exception, and right ones).
Each `clipaln train` exits 0 or 2, never with a traceback; an error is one line; a run that finishes
has a finite W."""

import json
import random
import string

import torch

from clipaln import losses
from clipaln.cli import main
from clipaln.manifest import PARTIAL_MARK
from clipaln.projection import SharedProjection

N_REQUESTS = 60
N_LOSSES = 60
VALUES = [None, True, False, 0, -1, 1, 2, 1.5, 1e308, -1e-9, float("nan"), 10**30, "", "x", "dpo", "kto", "full", "w",
          "pairs", "gender", "../x", [], [1], ["dpo"], {}, {"lr": "x"}, {"epochs": 0}, {"epochs": 1}]  # fmt: skip
OVERRIDE_KEYS = ["lr", "epochs", "batch_size", "beta", "lam", "orth", "bma", "seed", "label_smoothing", "warmup", "x"]


def _finishes_or_one_line(code, err, out):
    assert code in (0, 2), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    if code == 2:
        lines = [line for line in err.strip().splitlines() if not line.startswith(("note:", "warning:"))]
        assert len(lines) == 1 and lines[0].startswith("clipaln: error: "), err[-3000:]
    else:
        w = SharedProjection.load(out / "projection.safetensors").weight
        assert torch.isfinite(w).all()


def _drawn_request(rng: random.Random, pairs: str) -> str:
    request = {"task": "pairs", "method": "dpo", "mode": "w", "overrides": {"epochs": 1, "batch_size": 8},
               "root": pairs, "seed": 0, "model": "toy", "pretrained": None}  # fmt: skip
    kind = rng.random()
    if kind < 0.1:  # not a request at all
        return rng.choice(["", "{", "null", "[]", "3", '"dpo"', "\x00\xff", "{" * 50, json.dumps([request])])
    keys = [*request, "train_text", "lock_image", "eval_every", "report_to", "checkpoint_every", "dataset",
            "n_train", "n_test", "val_share", "reg_images", "download", "precision", "extra"]  # fmt: skip
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(keys)
        if rng.random() < 0.15:
            request.pop(key, None)
        elif key == "overrides" and rng.random() < 0.7:
            request["overrides"] = {"epochs": 1, **{rng.choice(OVERRIDE_KEYS): rng.choice(VALUES)}}
        else:
            request[key] = rng.choice(VALUES)
    return json.dumps(request)  # NaN is written as NaN, which a JSON reader takes


def test_drawn_request_files_resume_or_are_one_line(tmp_path, pairs_file, capsys, monkeypatch):
    monkeypatch.setenv("CLIPALN_CACHE", str(tmp_path / "cache"))
    rng = random.Random(0)
    outcomes = {0: 0, 2: 0}
    for i in range(N_REQUESTS):
        out = tmp_path / f"run{i}"
        work = tmp_path / f"run{i}.partial"
        work.mkdir()
        (work / PARTIAL_MARK).write_text("")
        text = _drawn_request(rng, str(pairs_file))
        (work / "checkpoint.request.json").write_text(text)
        code = main(["train", "pairs", "--out", str(out), "--resume", "--quiet"])
        _finishes_or_one_line(code, capsys.readouterr().err, out)
        outcomes[code] += 1
    assert outcomes[0] >= 5 and outcomes[2] >= 20, outcomes  # both kinds were drawn


def _drawn_loss(rng: random.Random):
    """A loss plugin: right, or wrong in one of the ways a plugin can be."""
    how = rng.choice(["right", "right", "shape", "scalar", "extra_dim", "float", "none", "tuple", "int", "double",
                      "nan", "detached", "zeros", "raises", "signature", "kwargs_only", "list"])  # fmt: skip

    def margin(logp, ref_logp, y_w, y_l):
        return losses.preference_margin(logp, ref_logp, y_w, y_l)

    def loss(logp, ref_logp, y_w, y_l, beta, z0):
        h = margin(logp, ref_logp, y_w, y_l)
        right = losses.dpo(h, beta)
        return {
            "right": lambda: right,
            "shape": lambda: right[:-1],
            "scalar": lambda: right.mean(),
            "extra_dim": lambda: logp,  # (N, K)
            "float": lambda: float(right.mean()),
            "none": lambda: None,
            "tuple": lambda: (right, right),
            "list": lambda: right.tolist(),
            "int": lambda: right.round().long(),
            "double": lambda: right.double(),
            "nan": lambda: right * float("nan"),
            "detached": lambda: right.detach(),
            "zeros": lambda: torch.zeros(len(y_w)),
            "raises": lambda: rng_raise(),
        }[how]()

    def rng_raise():
        raise rng.choice([ZeroDivisionError("division by zero"), KeyError("beta"), RuntimeError("CUDA says no"),
                          AssertionError("shapes"), IndexError("out of range"), ValueError("my own")])  # fmt: skip

    if how == "signature":
        return how, lambda logp, ref_logp, y_w: losses.dpo(margin(logp, ref_logp, y_w, y_w), 1.0)
    if how == "kwargs_only":
        return how, lambda **kw: losses.dpo(margin(kw["logp"], kw["ref_logp"], kw["y_w"], kw["y_l"]), 1.0)
    return how, loss


def test_drawn_loss_plugins_train_or_are_one_line(tmp_path, pairs_file, capsys, monkeypatch):
    monkeypatch.setenv("CLIPALN_CACHE", str(tmp_path / "cache"))
    rng = random.Random(1)
    seen = set()
    for i in range(N_LOSSES):
        name = "fuzz" + "".join(rng.choice(string.ascii_lowercase) for _ in range(6))
        how, loss = _drawn_loss(rng)
        seen.add(how)
        schedule = rng.choice([None, {"lr": 0.01}, {"epochs": 1, "batch_size": 8}])
        try:
            losses.register(name, loss, schedule=schedule)
            out = tmp_path / f"run{i}"
            code = main(["train", "pairs", "--pairs", str(pairs_file), "--method", name, "--epochs", "1",
                         "--out", str(out), "--quiet"])  # fmt: skip
            _finishes_or_one_line(code, capsys.readouterr().err, out)
            assert code == 2 or how in ("right", "double", "zeros_grad"), (how, code)
        finally:
            losses.LOSSES.pop(name, None)
    assert len(seen) >= 14, seen
