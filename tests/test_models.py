"""load_clip: the toy model offline, real open_clip architectures at random init, fast hub errors."""

import time

import pytest
import torch
from PIL import Image

from clipaln import load_clip
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


def test_toy_loads_fast():
    t0 = time.perf_counter()
    load_clip("toy", device="cpu")
    assert time.perf_counter() - t0 < 5.0


def test_vit_b_32_random_init_encodes_images_and_captions():
    with pytest.warns(UserWarning, match="RANDOM"):
        b = load_clip("ViT-B-32", device="cpu")
    assert not any(p.requires_grad for p in b.model.parameters())
    imgs = [Image.new("RGB", (s, s), c) for s, c in [(224, "red"), (300, "blue"), (64, "green"), (500, "white")]]
    x = encode_images(b, imgs, batch_size=2, progress=False)
    t = encode_texts(b, ["a photo of a dog.", "a photo of a cat.", "a sign", "text"])
    assert x.shape == (4, 512) and t.shape == (4, 512)
    assert torch.isfinite(x).all() and torch.isfinite(t).all()


def test_hub_tag_without_network_fails_fast_naming_the_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError) as err:
        load_clip("ViT-B-32", pretrained="openai")
    assert time.perf_counter() - t0 < 2.0 + 3.0  # model construction is not network time
    msg = str(err.value)
    assert "toy" in msg and "local" in msg and "\n" not in msg


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
    import json

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
