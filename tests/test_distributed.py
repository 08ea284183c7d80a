"""torchrun with two gloo processes follows one process with the same global batch; full
fine-tuning improves T like W-only training does."""

import json
import os
import shlex
import subprocess
import sys

import torch

from clipaln.projection import SharedProjection

ARGS = [
    "train",
    "typographic",
    "--model",
    "toy",
    "--n-train",
    "240",
    "--n-test",
    "60",
    "--epochs",
    "3",
    "--batch-size",
    "64",
    "--no-cache",
    "--device",
    "cpu",
    "--seed",
    "1",
]


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def test_two_gloo_processes_give_the_one_process_w(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, "-m", "clipaln", *ARGS, "--out", str(one)], tmp_path)
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29533",
            "-m",
            "clipaln",
            *ARGS,
            "--out",
            str(two),
        ],
        tmp_path,
    )
    w1 = SharedProjection.load(one / "projection.safetensors").weight
    w2 = SharedProjection.load(two / "projection.safetensors").weight
    assert (w1 - torch.eye(w1.shape[0])).abs().max() > 1e-3  # it trained
    assert torch.allclose(w1, w2, atol=1e-4), (w1 - w2).abs().max()
    assert not (two / "checkpoint.safetensors.tmp").exists()
    # run.json's command launches the run again, as it was launched
    typed = shlex.join([*ARGS, "--out", str(two)])
    assert json.loads((two / "run.json").read_text())["command"] == f"torchrun --nproc_per_node 2 -m clipaln {typed}"
    typed = shlex.join([*ARGS, "--out", str(one)])
    assert json.loads((one / "run.json").read_text())["command"] == f"clipaln {typed}"


def test_full_finetuning_improves_T_on_the_toy_model(toy):
    from clipaln.tracks import typographic

    spec = typographic.toy_spec(n_train=240, n_test=120, seed=3)  # attacked: 60.0% before, 95.8% after
    base = typographic.evaluate(typographic.build_features(toy, spec))
    cfg = typographic.train_config("dpo", lr=1e-3, epochs=3, batch_size=64)
    tuned, hist = typographic.finetune(toy, spec, cfg, progress=False)
    after = typographic.evaluate(typographic.build_features(tuned, spec, with_train=False))
    assert after["accuracy/attacked"] >= base["accuracy/attacked"] + 0.2, (base, after)
    assert after["accuracy/clean"] >= base["accuracy/clean"] - 0.05
    assert not any(p.requires_grad for p in tuned.model.parameters())
    # the original bundle is untouched
    assert typographic.evaluate(typographic.build_features(toy, spec)) == base


def test_full_finetuning_runs_under_torchrun(tmp_path):
    out = tmp_path / "full"
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29534",
            "-m",
            "clipaln",
            "train",
            "typographic",
            "--model",
            "toy",
            "--mode",
            "full",
            "--n-train",
            "64",
            "--n-test",
            "24",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--no-cache",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        tmp_path,
    )
    import json

    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["config"]["mode"] == "full"
    assert (out / "model.safetensors").is_file()


def test_trls_per_device_batch_is_per_rank_and_accumulation_adds_micro_batches(tmp_path):
    """TRL's per_device_train_batch_size with 2 ranks is a global batch of twice it; one process with
    2 accumulation steps of it takes the same global batch: both give the W of --batch-size 64."""
    flags = [a for a in ARGS if a not in ("--batch-size", "64")]
    ref, two, accumulated = tmp_path / "ref", tmp_path / "two", tmp_path / "acc"
    _run([sys.executable, "-m", "clipaln", *ARGS, "--out", str(ref)], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29534"]
    _run([*torchrun, "-m", "clipaln", *flags, "--per-device-train-batch-size", "32", "--out", str(two)], tmp_path)
    per_device = ["--per-device-train-batch-size", "32", "--gradient-accumulation-steps", "2"]
    _run([sys.executable, "-m", "clipaln", *flags, *per_device, "--out", str(accumulated)], tmp_path)
    w = {p.name: SharedProjection.load(p / "projection.safetensors").weight for p in (ref, two, accumulated)}
    assert (w["ref"] - torch.eye(w["ref"].shape[0])).abs().max() > 1e-3  # it trained
    assert (w["two"] - w["ref"]).abs().max() < 1e-5
    assert (w["acc"] - w["ref"]).abs().max() < 1e-5
