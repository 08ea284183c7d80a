"""load_clip: the toy model offline, real open_clip architectures at random init, fast hub errors."""

import json
import logging
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import SMALL_VIT, TINY, cli, make_folder, one_line_error

from clipaln import load_clip, models
from clipaln.cli import main
from clipaln.features import encode_images, encode_texts


def test_toy_loads_frozen_and_encodes(toy):
    assert toy.name == "toy"
    assert not toy.model.training
    assert not any(p.requires_grad for p in toy.model.parameters())
    img = encode_images(toy, [Image.new("RGB", (64, 64), "white")] * 3, progress=False)
    txt = encode_texts(toy, ["a photo of an apple.", "a photo of a car."])
    assert img.shape == (3, toy.embed_dim) and txt.shape == (2, toy.embed_dim)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert toy.logit_scale == pytest.approx(100, abs=0.1)  # CLIP's tau, stored in fp16


def test_the_toy_loads_with_no_network_lookup(monkeypatch):
    """A laptop with no network is the toy's first user: loading it resolves no host name (its load time
    is a benchmark's business, not a test's)."""
    looked_up = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: looked_up.append(host))
    assert load_clip("toy", device="cpu").name == "toy"
    assert looked_up == []


def test_vit_b_32_random_init_encodes_images_and_captions():
    with pytest.warns(UserWarning, match="RANDOM"):
        b = load_clip("ViT-B-32", device="cpu")
    assert not any(p.requires_grad for p in b.model.parameters())
    imgs = [Image.new("RGB", (s, s), c) for s, c in [(224, "red"), (300, "blue"), (64, "green"), (500, "white")]]
    x = encode_images(b, imgs, batch_size=2, progress=False)
    t = encode_texts(b, ["a photo of a dog.", "a photo of a cat.", "a sign", "text"])
    assert x.shape == (4, 512) and t.shape == (4, 512)
    assert torch.isfinite(x).all() and torch.isfinite(t).all()


def test_an_unreachable_hub_is_one_line_at_once_with_no_request_and_no_log_of_open_clips(monkeypatch, caplog):
    """The hub unreachable and HF_HUB_OFFLINE unset when huggingface_hub was imported (as on a laptop
    offline): the tag's weights are looked up in the local hub cache only, so no host name is resolved
    (huggingface_hub would retry each file for about 50 s), open_clip logs no failed download, and the
    error is one line that names the alternatives."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=1.5: False)
    looked_up = []

    def no_network(host, *args, **kwargs):
        looked_up.append(host)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError) as err:
        load_clip("ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert looked_up == []
    assert not [r.getMessage() for r in caplog.records if "Failed to download" in r.getMessage()]
    msg = str(err.value)
    assert "toy" in msg and "local" in msg and "\n" not in msg
    assert constants.HF_HUB_OFFLINE is False  # as it was


def test_unknown_model_and_tag_and_missing_file():
    with pytest.raises(ValueError, match="unknown model"):
        load_clip("ViT-Q-99")
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        load_clip("ViT-B-32", pretrained="no_such_tag")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_clip("ViT-B-32", pretrained="/nonexistent/weights.safetensors")


def test_local_checkpoint_file_loads(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    model = open_clip.create_model("RN50", pretrained=None)
    path = tmp_path / "rn50.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    b = load_clip("RN50", pretrained=str(path), device="cpu")
    k = next(iter(model.state_dict()))
    assert torch.equal(b.model.state_dict()[k], model.state_dict()[k])


def test_local_weights_in_a_plain_vit_warn_about_quickgelu_and_tilde_expands(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("HOME", str(tmp_path))
    model = load_clip("ViT-B-32", device="cpu").model
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    with pytest.warns(UserWarning, match="ViT-B-32-quickgelu"):
        b = load_clip("ViT-B-32", pretrained="~/vit.safetensors", device="cpu")
    assert b.embed_dim == 512


def test_a_local_dir_model_and_a_missing_optional_package(tmp_path):

    import open_clip
    from safetensors.torch import save_file

    cfg = open_clip.get_model_config("RN50")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    model = open_clip.create_model("RN50", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors"))
    b = load_clip(f"local-dir:{tmp_path}", device="cpu")
    k = next(iter(model.state_dict()))
    assert torch.equal(b.model.state_dict()[k], model.state_dict()[k]) and b.embed_dim == 1024
    try:
        import transformers  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(RuntimeError, match="needs the package 'transformers'"):
            load_clip("ViT-B-16-SigLIP", device="cpu")


# --- the model a tag was trained with -----------------------------------------------------------


@pytest.fixture
def openai_stub(tmp_path, monkeypatch):
    """open_clip's download of any tag stubbed by a local file of QuickGELU weights (no hub here);
    returns the model those weights were saved from."""
    import open_clip
    import open_clip.factory
    from safetensors.torch import save_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    weights = tmp_path / "stub" / "open_clip_model.safetensors"
    weights.parent.mkdir()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, **kw: str(weights))
    return reference


def _runs_quick_gelu(model) -> bool:
    import open_clip

    return any(isinstance(m, open_clip.transformer.QuickGELU) for m in model.modules())


def test_a_tag_builds_the_activation_and_preprocessing_its_weights_were_trained_with(openai_stub):
    bundle = load_clip("ViT-B-32", pretrained="openai", device="cpu")
    assert _runs_quick_gelu(bundle.model) and bundle.activation == "quick_gelu"
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        ours, theirs = bundle.model.encode_image(x), openai_stub.encode_image(x)
        assert (ours - theirs).abs().max() < 1e-5
        tokens = bundle.tokenizer(["a photo of a cat."])
        assert (bundle.model.encode_text(tokens) - openai_stub.encode_text(tokens)).abs().max() < 1e-5
    # a GELU tag stays GELU
    laion = load_clip("ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")
    assert not _runs_quick_gelu(laion.model) and laion.activation == "gelu"


def test_a_local_file_that_is_a_known_tags_weights_loads_as_the_tag(tmp_path, openai_stub):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in openai_stub.state_dict().items()}
    clone = tmp_path / "vit_base_patch32_clip_224.openai" / "open_clip_model.safetensors"  # a clone of the hub repo
    cache = (
        tmp_path
        / "hub"
        / "models--timm--vit_base_patch32_clip_224.openai"
        / "snapshots"
        / "abc"
        / "open_clip_model.safetensors"
    )
    for path in (clone, cache):
        path.parent.mkdir(parents=True)
        save_file(state, str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing to warn about: the file is known
            bundle = load_clip("ViT-B-32", pretrained=str(path), device="cpu")
        assert _runs_quick_gelu(bundle.model) and bundle.activation == "quick_gelu"
    # a GELU tag's weights into the QuickGELU config: one line naming the fix
    laion = tmp_path / "laion" / "CLIP-ViT-B-32-laion2B-s34B-b79K" / "open_clip_model.safetensors"
    laion.parent.mkdir(parents=True)
    save_file(state, str(laion))
    with pytest.raises(
        ValueError, match="trained with GELU, but ViT-B-32-quickgelu builds QuickGELU: use --model ViT-B-32$"
    ):
        load_clip("ViT-B-32-quickgelu", pretrained=str(laion), device="cpu")


def test_the_readmes_real_clip_commands_run_as_written(tmp_path, openai_stub, monkeypatch, capsys):
    """Every README line with --pretrained openai, run as written (the shell's ~ expanded) against
    the stubbed download, on a tiny data folder in each layout it names; each run's model is QuickGELU."""
    import shlex
    from pathlib import Path

    from PIL import Image

    from clipaln.data.imagenet import IMAGENET100_WNIDS

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLIPALN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    colours = ["red", "green", "blue", "orange", "purple"]
    for c, food in enumerate(["apple_pie", "sushi"]):  # torchvision's Food101 layout
        (data / "food-101" / "images" / food).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40 + i, 40), colours[c]).save(data / "food-101" / "images" / food / f"{i}.jpg")
    meta = data / "food-101" / "meta"
    meta.mkdir()
    for split, ids in (("train", range(0, 2)), ("test", range(2, 4))):
        (meta / f"{split}.json").write_text(json.dumps({f: [f"{f}/{i}" for i in ids] for f in ["apple_pie", "sushi"]}))
    (data / "paint").mkdir()
    for name in ("label=apple pie_text=sushi.jpg", "label=sushi_text=apple pie.jpg"):
        Image.new("RGB", (48, 48), "white").save(data / "paint" / name)
    rows = ["path,gender,activity"]
    for a, act in enumerate(["cooking", "repairing a car"]):
        for g, gen in enumerate(["man", "woman"]):
            (data / "people" / f"{a}{g}").mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (40, 40 + i), colours[a + 2 * g]).save(data / "people" / f"{a}{g}" / f"{i}.jpg")
            rows += [f"people/{a}{g}/{i}.jpg,{gen},{act}" for i in range(5)]
    (data / "people.csv").write_text("\n".join(rows) + "\n")
    for split in ("train", "val"):
        for c, wnid in enumerate(IMAGENET100_WNIDS[:3]):
            (data / "imagenet100" / split / wnid).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40 + i, 40), colours[c]).save(data / "imagenet100" / split / wnid / f"{i}.jpg")
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    commands = [line.split("#")[0] for line in readme.splitlines() if re.match(r"clipaln .*--pretrained openai", line)]
    assert len(commands) >= 4
    for command in commands:
        argv = [os.path.expanduser(a) for a in shlex.split(command)[1:]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main([*argv, "--device", "cpu"] if argv[0] != "bench" else argv)
        out = capsys.readouterr()
        assert code == 0, f"{command}: {out.err}"
    for run in ("runs/food", "runs/people"):
        manifest = json.loads((tmp_path / run / "run.json").read_text())
        assert manifest["pretrained"] == "openai" and manifest["activation"] == "quick_gelu"


@pytest.mark.parametrize("content", [b"<!DOCTYPE html><html><body>404</body></html>", b"PK\x03\x04 truncated"])
def test_a_file_that_is_not_weights_is_one_line(tmp_path, content):
    """An HTML error page saved as .bin, or a truncated download: a ValueError naming the file, not a pickle error."""
    path = tmp_path / "open_clip_pytorch_model.bin"
    path.write_bytes(content)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="is not a checkpoint open_clip can read") as err:
            load_clip("RN50", pretrained=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not [w for w in seen if "quickgelu" in str(w.message)]  # no advice about a file that did not load


@pytest.mark.parametrize("into", ["RN50", "ViT-B-32"])
def test_a_checkpoint_of_another_architecture_is_one_line_that_says_so(tmp_path, into):
    """It was open_clip's 36-line traceback ('text pos_embed width changed!'), after advice to use -quickgelu."""
    import open_clip

    path = tmp_path / "vits.pt"
    torch.save(open_clip.create_model("ViT-S-32-alt", pretrained=None).state_dict(), path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=f"vits.pt does not fit {into}: .*--model names the architecture") as err:
            load_clip(into, pretrained=str(path))
    assert "\n" not in str(err.value) and not [w for w in seen if "quickgelu" in str(w.message)]


def test_a_misspelt_or_foreign_toy_checkpoint_is_an_error(tmp_path, capsys):
    torch.save({"a": 1}, tmp_path / "weights.pt")
    (tmp_path / "config.json").write_text('{"a": 1}')
    for path, word in (
        ("nosuch.safetensors", "not found"),
        (tmp_path / "weights.pt", "not a toy CLIP"),
        (tmp_path / "config.json", "not a toy CLIP"),
    ):
        code, _, err = cli(["train", "typographic", "--pretrained", path, *TINY, "--out", tmp_path / "x"], capsys)
        one_line_error(code, err, word)
    assert not (tmp_path / "x").exists()


def test_a_warning_on_the_command_line_is_one_line(tmp_path, capsys):
    """Random weights from the command line: one warning line (no file:line and source line after it, no
    open_clip log saying it again) and nothing else on stderr; a bad data flag is one line before the model
    is built (so before that warning); a library's warning names the library and its category."""
    root = make_folder(tmp_path / "imgs")
    p = subprocess.run(
        [sys.executable, "-m", "clipaln", "eval", "typographic", "--model", SMALL_VIT, "--dataset", "folder",
         "--root", str(root), "--n-train", "8", "--n-test", "8", "--workers", "0", "--no-cache", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert p.returncode == 0 and "accuracy/clean" in json.loads(p.stdout), p.stderr
    assert p.stderr.strip().splitlines() == [
        f"clipaln: warning: {SMALL_VIT} has RANDOM weights (pretrained=None, seeded): fine for tests and timing, "
        "meaningless for results."
    ], p.stderr
    built = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(models, "load_clip", lambda *a, **k: built.append(a))
        code, _, err = cli(["eval", "typographic", "--model", SMALL_VIT], capsys)
    one_line_error(code, err, "a real model needs --dataset")
    assert built == []
    from clipaln.commands import _warning_line

    line = _warning_line(FutureWarning("a\n  b"), FutureWarning, "/venv/lib/site-packages/torch/nn/x.py", 3)
    assert line == "warning (torch, FutureWarning): a b\n"
    assert _warning_line(UserWarning("c"), UserWarning, "/usr/lib/python3/dist-packages/six.py", 1).startswith(
        "warning (six, UserWarning)"
    )


def test_a_checkpoint_given_by_a_relative_path_is_recorded_absolute(monkeypatch):
    """A W fitted in Python recorded 'vits.pt' as typed, so export failed from any other folder."""
    import clipaln.toyworld

    weights = Path(clipaln.toyworld.__file__).parent / "weights"
    monkeypatch.chdir(weights)
    bundle = load_clip("toy", pretrained="toy_clip.safetensors")
    assert bundle.pretrained == str((weights / "toy_clip.safetensors").resolve())
    assert load_clip("toy").pretrained is None
