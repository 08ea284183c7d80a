"""clipaln.finetune: full fine-tuning as a first-class run. Killed with SIGKILL and resumed it equals
an uninterrupted run; two gloo ranks under torchrun equal one process; its export loads in plain
open_clip, in a Python that cannot import clipaln, and scores as the fine-tuned model does."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from support import SMALL_VIT

COLOURS = ["red", "green", "blue", "orange"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def _folder(root):
    for c, colour in enumerate(COLOURS):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(5):
            Image.new("RGB", (40 + i, 40 + c), colour).save(root / f"class{c}" / f"{i}.jpg")
    return root


def _args(model, tmp_path):
    """6 steps (2 epochs); a checkpoint at step 4 (ViT-B-32's is 1.4 GB: W, moments, BMA; the small ViT's 0.4 GB)."""
    common = ["--mode", "full", "--epochs", "2", "--no-cache", "--device", "cpu", "--quiet", "--workers", "1"]
    common += ["--checkpoint-every", "4"]
    if model == "toy":
        return [
            "train",
            "typographic",
            "--model",
            "toy",
            "--n-train",
            "24",
            "--n-test",
            "12",
            "--batch-size",
            "8",
            *common,
        ]
    data = ["--dataset", "folder", "--root", str(_folder(tmp_path / "imgs")), "--n-train", "10", "--n-test", "4"]
    return ["train", "typographic", "--model", SMALL_VIT, *data, "--batch-size", "4", "--lr", "1e-5", *common]


def _run(cmd, cwd, expect=0):
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=900)
    assert p.returncode == expect, p.stderr[-3000:]
    return p


def _max_diff(a, b):
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    return max((x[k].double() - y[k].double()).abs().max().item() for k in x)


@pytest.mark.parametrize("model", ["toy", SMALL_VIT])
def test_a_killed_full_finetuning_run_resumes_to_the_uninterrupted_model(tmp_path, model):
    args = _args(model, tmp_path)
    _run([sys.executable, "-m", "clipaln", *args, "--out", str(tmp_path / "whole")], tmp_path)
    killer = textwrap.dedent(
        f"""
        import os, signal
        from clipaln import train
        written = []
        real = train.save_checkpoint
        def save_then_die(*a, **k):
            real(*a, **k)
            written.append(1)
            if len(written) == 1:  # after the checkpoint at step 4, before the run ends
                os.kill(os.getpid(), signal.SIGKILL)
        train.save_checkpoint = save_then_die
        from clipaln.cli import main
        main({[*args, "--out", str(tmp_path / "killed")]!r})
        """
    )
    _run([sys.executable, "-c", killer], tmp_path, expect=-9)
    partial = tmp_path / "killed.partial"
    assert (partial / "checkpoint.safetensors").is_file() and not (tmp_path / "killed").exists()
    _run([sys.executable, "-m", "clipaln", *args, "--resume", "--out", str(tmp_path / "killed")], tmp_path)
    assert _max_diff(tmp_path / "whole" / "model.safetensors", tmp_path / "killed" / "model.safetensors") <= 1e-6
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "history.jsonl").read_text().splitlines()]
    assert steps == list(range(6))  # every step once, those before the kill too


def test_two_gloo_ranks_fine_tune_as_one_process(tmp_path):
    """An open_clip ViT (LayerNorm): DDP over two gloo ranks takes the steps one process takes. A tower with
    BatchNorm (the toy's) normalises each rank's own batch on a CPU: SyncBatchNorm is CUDA's."""
    args = _args(SMALL_VIT, tmp_path)
    _run([sys.executable, "-m", "clipaln", *args, "--out", str(tmp_path / "one")], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541"]
    _run([*torchrun, "-m", "clipaln", *args, "--out", str(tmp_path / "two")], tmp_path)
    assert _max_diff(tmp_path / "one" / "model.safetensors", tmp_path / "two" / "model.safetensors") <= 1e-5
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["world_size"] == 2


def test_the_fine_tuned_export_loads_in_open_clip_without_clipaln(tmp_path):
    args = _args(SMALL_VIT, tmp_path)
    run = tmp_path / "run"
    _run([sys.executable, "-m", "clipaln", *args, "--report-to", "tensorboard", "--out", str(run)], tmp_path)
    assert list((run / "tensorboard").iterdir())  # --report-to, as W runs have it
    out = tmp_path / "tuned"
    _run([sys.executable, "-m", "clipaln", "export", "--image-encoder", str(run / "model.safetensors"),
          "--out", str(out)], tmp_path)  # fmt: skip
    assert {p.name for p in out.iterdir()} == {"open_clip_model.safetensors", "open_clip_config.json", "README.md"}
    assert str(tmp_path) not in (out / "README.md").read_text()
    images = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    torch.save(images, tmp_path / "x.pt")
    # a Python that reads site-packages but not its .pth files: clipaln (an editable install) is not there
    site = next(p for p in sys.path if p.endswith("site-packages"))
    plain = textwrap.dedent(
        f"""
        import sys
        sys.path.append({site!r})
        try:
            import clipaln
            raise SystemExit("clipaln is importable here")
        except ModuleNotFoundError:
            pass
        import open_clip, torch
        model, _, _ = open_clip.create_model_and_transforms("local-dir:{out}")
        model.eval()
        tokens = open_clip.get_tokenizer("local-dir:{out}")(["a photo of a class0.", "a photo of a class1."])
        with torch.no_grad():
            img = model.encode_image(torch.load({str(tmp_path / "x.pt")!r}))
            txt = model.encode_text(tokens)
        torch.save({{"img": img, "txt": txt}}, {str(tmp_path / "plain.pt")!r})
        """
    )
    p = subprocess.run(
        [sys.executable, "-S", "-c", plain], capture_output=True, text=True, env=ENV, timeout=300, cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr[-2000:]
    from clipaln.models import load_clip
    from clipaln.runs.common import _load_encoder

    with pytest.warns(UserWarning):
        base = load_clip(SMALL_VIT, device="cpu")
    tuned, _ = _load_encoder(base, run / "model.safetensors", None, False)
    theirs = torch.load(tmp_path / "plain.pt")
    with torch.no_grad():
        ours_img = tuned.model.encode_image(images)
        ours_txt = tuned.model.encode_text(base.tokenizer(["a photo of a class0.", "a photo of a class1."]))
    assert (ours_img - theirs["img"]).abs().max() <= 1e-5 and (ours_txt - theirs["txt"]).abs().max() <= 1e-5
    assert (ours_img - base.model.encode_image(images)).abs().max() > 1e-5  # it is the fine-tuned model
