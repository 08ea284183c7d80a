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
    assert without.returncode == 2 and "unknown method 'hinge'" in without.stderr  # not installed: not known


def _installed(tmp_path, plugins: dict[str, str]) -> dict:
    """A site folder holding one module per plugin, each declared in the clipaln.losses group."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    for name, source in plugins.items():
        (site / f"{name}.py").write_text(source)
    info = site / "broken_losses-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-losses\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[clipaln.losses]\n" + "".join(f"{n} = {n}\n" for n in plugins))
    return {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}


BROKEN = {
    "raises": "raise RuntimeError('boom at import')",
    "exits": "import sys\nsys.exit(3)",
    "interrupts": "raise KeyboardInterrupt",
    "needs": "import no_such_package_anywhere",
    "twice": PLUGIN.replace('"hinge"', '"twice_loss"') + "\nregister('twice_loss', lambda *a: None)\n",
    "builtin": "from clipaln.losses import register\nregister('dpo', lambda *a: None)",
    "spaced": "from clipaln.losses import register\nregister('my loss', lambda *a: None)",
}


def test_a_broken_plugin_costs_only_itself(tmp_path):
    """Plugins that raise, exit, are interrupted, lack a dependency or register a name twice, a
    built-in name or a name with a space: every command that does not ask for them runs as before; one
    that asks for a loss that is not there gets one line that says why."""
    env = _installed(tmp_path, BROKEN)
    clipaln = [sys.executable, "-m", "clipaln"]
    run = lambda *args: subprocess.run([*clipaln, *args], capture_output=True, text=True, env=env, timeout=300)
    assert run("train", "gender", "--help").returncode == 0
    pairs = os.path.join(os.path.dirname(__file__), "..", "data", "pairs", "pairs.csv")
    ok = run("train", "pairs", "--pairs", pairs, "--method", "dpo", "--epochs", "1", "--quiet", "--no-cache",
             "--out", str(tmp_path / "r"))  # fmt: skip
    assert ok.returncode == 0 and ok.stderr.strip() == "", ok.stderr[-2000:]
    asked = run("train", "pairs", "--pairs", pairs, "--method", "hinge", "--out", str(tmp_path / "q"))
    assert asked.returncode == 2 and len(asked.stderr.strip().splitlines()) == 1
    assert "failed to load" in asked.stderr and "boom at import" in asked.stderr


def test_a_plugin_loss_is_checked_on_its_first_batch():
    """Shape (N,), a tensor, a gradient with respect to W, the signature: each wrong one is one line."""
    from test_train import _small_data

    from clipaln.train import TrainConfig, fit_projection

    wrong = {
        "a_mean": (
            lambda logp, ref, y_w, y_l, beta, z0: losses.dpo(
                losses.preference_margin(logp, ref, y_w, y_l), beta
            ).mean(),
            "one loss per pair",
        ),  # noqa: E501
        "nk": (lambda logp, ref, y_w, y_l, beta, z0: logp, "one loss per pair"),
        "zeros": (lambda logp, ref, y_w, y_l, beta, z0: __import__("torch").zeros(len(y_w)), "no gradient"),
        "detached": (lambda logp, ref, y_w, y_l, beta, z0: logp.detach()[:, 0], "no gradient"),
        "a_float": (lambda logp, ref, y_w, y_l, beta, z0: 1.0, "a tensor"),
        "two_args": (lambda logp, ref: ref, "must take"),
    }
    try:
        for name, (loss, message) in wrong.items():
            losses.register(name, loss)
            with pytest.raises(ValueError, match=message):
                fit_projection(_small_data(), TrainConfig(method=name, epochs=1, batch_size=32), progress=False)
        with pytest.raises(ValueError, match="schedule sets lr, epochs, orth, batch_size, bma, not lrr"):
            losses.register("typo", wrong["nk"][0], schedule={"lrr": 0.1})
        for bad in ("my loss", "dpo", ""):
            with pytest.raises(ValueError):
                losses.register(bad, wrong["nk"][0])
    finally:
        for name in wrong:
            losses.LOSSES.pop(name, None)


def test_a_partial_schedule_takes_dpos_for_the_rest():
    """register(schedule={"lr": ...}) sets the lr; epochs, orth, batch size and BMA stay DPO's (not None)."""
    from clipaln.train import SCHEDULES, TrainConfig

    try:
        losses.register("lrdpo", lambda logp, ref, y_w, y_l, beta, z0: losses.dpo(
            losses.preference_margin(logp, ref, y_w, y_l), beta), schedule={"lr": 0.01})  # fmt: skip
        cfg = TrainConfig(method="lrdpo")
        assert cfg.lr == 0.01
        assert {k: getattr(cfg, k) for k in ("epochs", "orth", "batch_size", "bma")} == {
            k: SCHEDULES["dpo"][k] for k in ("epochs", "orth", "batch_size", "bma")
        }
    finally:
        losses.LOSSES.pop("lrdpo", None)


def test_a_plugin_registered_after_import_is_a_preference_method_at_once():
    """The methods with a known gradient weight are read when asked, not fixed when clipaln loads."""
    import torch

    def later(logp, ref_logp, y_w, y_l, beta, z0):
        return losses.dpo(losses.preference_margin(logp, ref_logp, y_w, y_l), beta)

    assert "later" not in losses.preference_methods()
    try:
        losses.register("later", later, weight=lambda h, beta: beta * torch.sigmoid(-beta * h))
        assert "later" in losses.preference_methods()
        assert torch.allclose(losses.gradient_weight("later", torch.zeros(2), 1.0), torch.full((2,), 0.5))
    finally:
        losses.LOSSES.pop("later", None)


def test_an_installed_track_and_benchmark_run_from_the_command_line(tmp_path):
    """CONTRIBUTING's track and benchmark, installed out of tree under the entry-point groups
    clipaln.tracks and clipaln.benchmarks: `clipaln train words` and `clipaln bench clean` run them;
    a track plugin that fails to import costs only itself."""
    from pathlib import Path

    site = tmp_path / "site"
    info = site / "my_tracks-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-tracks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[clipaln.tracks]\nwords = words_over_objects\nbroken = no_such_module_anywhere\n\n"
        "[clipaln.benchmarks]\nclean = clean_accuracy_bench:clean_accuracy\n"
    )
    examples = Path(__file__).parent / "examples"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{examples}", "HF_HUB_OFFLINE": "1"}
    clipaln = lambda *args: subprocess.run([sys.executable, "-m", "clipaln", *args], env=env, capture_output=True,
                                           text=True, timeout=300)  # fmt: skip
    trained = clipaln("train", "words", "--epochs", "5", "--batch-size", "8", "--quiet", "--no-cache",
                      "--out", str(tmp_path / "r"))  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((tmp_path / "r" / "run.json").read_text())["task"] == "words"
    bench = clipaln("bench", "clean", "--n-test", "12", "--json", "--no-cache")
    assert bench.returncode == 0 and json.loads(bench.stdout)["n_test"] == 12, bench.stderr[-2000:]
