"""A loss of your own: registered in Python, or installed out of tree with an entry point and
trained from the CLI with no edit to clipaln (issue #30)."""

import json
import os
import subprocess
import sys

import pytest

from clipaln import losses

PLUGIN = """
import torch
from clipaln.losses import preference_margin, register

def hinge(logp, ref_logp, y_w, y_l, beta, z0):
    return torch.relu(1 - beta * preference_margin(logp, ref_logp, y_w, y_l))

register("hinge", hinge, weight=lambda h, beta: beta * (beta * h < 1).float(), tasks=("typographic", "pairs"))
"""


def test_a_registered_loss_trains_and_the_tracks_know_whom_it_is_for():
    from clipaln.tracks import gender, pairs

    try:
        losses.register(
            "halfdpo",
            lambda logp, ref, y_w, y_l, beta, z0: 0.5 * losses.dpo(losses.preference_margin(logp, ref, y_w, y_l), beta),
            tasks=("pairs",),
            schedule=dict(lr=0.01, epochs=2, orth=0.0, batch_size=64, bma=False),
        )
        cfg = pairs.train_config("halfdpo")
        assert (cfg.lr, cfg.epochs, cfg.beta) == (0.01, 2, 1.0)  # its schedule, the default paper setting
        assert "halfdpo" in pairs.methods() and "halfdpo" not in gender.methods()
        with pytest.raises(ValueError, match="gender track trains with dpo, ipo, kto"):
            gender.train_config("halfdpo")
        with pytest.raises(ValueError, match="already registered"):
            losses.register("dpo", lambda *a: None)
    finally:
        losses.LOSSES.pop("halfdpo", None)


def test_an_out_of_tree_loss_trains_from_the_cli(tmp_path):
    from test_tracks_pairs import scenes

    site = tmp_path / "site"
    site.mkdir()
    (site / "my_losses.py").write_text(PLUGIN)
    info = site / "my_losses-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-losses\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[clipaln.losses]\nhinge = my_losses\n")
    rows = scenes(tmp_path / "s", n=12)
    (tmp_path / "s" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    args = ["train", "pairs", "--pairs", str(tmp_path / "s" / "p.jsonl"), "--method", "hinge", "--epochs", "1"]
    run = subprocess.run(
        [sys.executable, "-m", "clipaln", *args, "--no-cache", "--quiet", "--out", str(tmp_path / "r")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((tmp_path / "r" / "run.json").read_text())["config"]["method"] == "hinge"
    without = subprocess.run(
        [sys.executable, "-m", "clipaln", *args, "--out", str(tmp_path / "q")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert without.returncode == 2 and "invalid choice: 'hinge'" in without.stderr  # not installed: not known
