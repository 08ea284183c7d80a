"""An exported checkpoint is a plain open_clip model whose scores equal clipaln's W_t scores."""

import json
import os
import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from support import SMALL_VIT, hold_lock, train_pairs

from clipaln import runs
from clipaln.cli import main
from clipaln.features import encode_images, encode_texts, model_fingerprint
from clipaln.models import load_clip
from clipaln.policy import similarities
from clipaln.projection import SharedProjection
from clipaln.train import TrainConfig

PROMPTS = ["a photo of a cat.", "a photo of a dog.", "a photo of an apple.", "a photo of a tree."]


def _images(n=6):
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


def _loaded(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(model, device="cpu")


def _w_t_scores(bundle, proj, images, t=1.5):
    """clipaln's scores under W_t: what every export must reproduce."""
    w_t = SharedProjection.load(proj).scaled(t)
    return similarities(encode_images(bundle, images, progress=False), encode_texts(bundle, PROMPTS), w_t).float()


def _a_projection(bundle, path, model, seed=0):
    d = bundle.embed_dim
    g = torch.Generator().manual_seed(seed)
    w = SharedProjection(d, torch.eye(d) + 0.3 * torch.randn(d, d, generator=g))
    return w.save(path, model=model, pretrained="", task="typographic", weights=model_fingerprint(bundle))


@pytest.mark.parametrize("model", ["toy", SMALL_VIT])
def test_the_export_loads_in_plain_open_clip_and_scores_like_w_t(tmp_path, model, capsys):
    bundle = _loaded(model)
    proj = _a_projection(bundle, tmp_path / "projection.safetensors", model)
    out = tmp_path / f"aligned_{model.replace('-', '_').lower()}.safetensors"
    assert main(["export", "--projection", str(proj), "--t", "1.5", "--out", str(out), "--device", "cpu"]) == 0
    images = _images()
    ours = _w_t_scores(bundle, proj, images)

    name, kw = model, {}
    if model == "toy":  # a config open_clip does not know: register the one written beside the weights
        open_clip.add_model_config(out.with_suffix(".json"))
        name, kw = out.stem, dict(image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
        assert "image_mean=[0.5, 0.5, 0.5]" in capsys.readouterr().out
    plain, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(out), **kw)
    plain.eval()
    with torch.no_grad():
        img = F.normalize(plain.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1)
        txt = F.normalize(plain.encode_text(bundle.tokenizer(PROMPTS)), dim=-1)
    assert torch.allclose(img @ txt.T, ours, atol=1e-4)
    assert json.loads(out.with_suffix(".json").read_text())  # the config travels with the weights


def test_export_refuses_weights_that_changed(tmp_path):
    bundle = load_clip("toy")
    proj = SharedProjection(bundle.embed_dim)
    path = proj.save(tmp_path / "p.safetensors", model="toy", pretrained="", task="typographic", weights="0" * 16)
    with pytest.raises(ValueError, match="weights"):
        runs.export_run(path, out=tmp_path / "x.safetensors")


@pytest.mark.parametrize("model", ["toy", SMALL_VIT])
def test_the_folder_export_loads_with_local_dir_and_scores_like_w_t(tmp_path, model, capsys):
    bundle = _loaded(model)
    proj = _a_projection(bundle, tmp_path / "projection.safetensors", model)
    out = tmp_path / "aligned"
    assert main(["export", "--projection", str(proj), "--t", "1.5", "--out", str(out), "--device", "cpu"]) == 0
    assert f"local-dir:{out}" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"open_clip_model.safetensors", "open_clip_config.json", "README.md"}
    assert "t = 1.5" in (out / "README.md").read_text()
    images = _images()
    ours = _w_t_scores(bundle, proj, images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    plain.eval()
    with torch.no_grad():
        img = F.normalize(plain.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1)
        txt = F.normalize(plain.encode_text(bundle.tokenizer(PROMPTS)), dim=-1)
    assert torch.allclose(img @ txt.T, ours, atol=1e-4)  # the folder's preprocess_cfg is the bundle's own


def test_export_never_replaces_what_is_there_unless_asked(tmp_path, capsys):
    bundle = load_clip("toy", device="cpu")
    proj = _a_projection(bundle, tmp_path / "projection.safetensors", "toy")
    for out in (tmp_path / "projection.safetensors", tmp_path / "aligned.safetensors"):
        before = out.read_bytes() if out.exists() else None
        args = ["export", "--projection", str(proj), "--out", str(out), "--device", "cpu"]
        if before is None:
            assert main(args) == 0  # a new file is written
            before = out.read_bytes()
        assert main(args) == 2  # an existing one is refused, in one line
        err = capsys.readouterr().err
        # --overwrite is offered for an export only: the W itself is the user's (--overwrite refused it too)
        ours = out.name == "aligned.safetensors"
        assert ("exists: pass --overwrite" if ours else "exists and is not a clipaln export: choose another") in err
        assert err.count("\n") == 1 and out.read_bytes() == before
    config = tmp_path / "theirs.json"  # an open_clip config of the user's, with no export beside it
    config.write_text(json.dumps({"embed_dim": 4, "vision_cfg": {}, "text_cfg": {}}))
    args = ["export", "--projection", str(proj), "--out", str(tmp_path / "theirs.safetensors"), "--device", "cpu"]
    assert main(args) == 2 and "theirs.json exists and is not a clipaln export" in capsys.readouterr().err
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert main(["export", "--projection", str(proj), "--out", str(folder), "--device", "cpu"]) == 2
    assert "is not a clipaln export: choose another --out" in capsys.readouterr().err
    # not an export: --overwrite does not make it one (issue #28)
    assert main(["export", "--projection", str(proj), "--out", str(folder), "--device", "cpu", "--overwrite"]) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    export = tmp_path / "export"
    assert main(["export", "--projection", str(proj), "--out", str(export), "--device", "cpu"]) == 0
    (export / "notes.txt").write_text("mine")
    assert main(["export", "--projection", str(proj), "--out", str(export), "--device", "cpu", "--overwrite"]) == 0
    assert (export / "notes.txt").read_text() == "mine"  # --overwrite replaces the export's files only


def test_python_export_of_a_track_w_folds_it_into_the_local_weights_it_trained_on(tmp_path):
    """clipaln.export(W) after typographic.train on a local-file open_clip ViT: the export holds that
    file's weights with W folded in (not random ones), and a W on other weights is said on the card."""
    from safetensors.torch import load_file, save_file

    import clipaln
    from clipaln.fold import fold_projection
    from clipaln.tracks import typographic
    from clipaln.train import TrainConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = open_clip.create_model(SMALL_VIT, pretrained=None)
        torch.manual_seed(5)
        with torch.no_grad():  # weights no random init of ours would give
            source.visual.proj.add_(0.01 * torch.randn_like(source.visual.proj))
        weights = tmp_path / "mine.safetensors"
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
        bundle = load_clip(SMALL_VIT, pretrained=str(weights), device="cpu")
    root = tmp_path / "imgs"
    for c, colour in enumerate(["red", "green", "blue"]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40 + i, 40), colour).save(root / f"class{c}" / f"{i}.jpg")
    spec = typographic.real_spec("folder", str(root), n_train=6, n_test=3)
    feats = typographic.build_features(bundle, spec, progress=False)
    proj, _ = typographic.train(feats, TrainConfig(method="dpo", epochs=2), progress=False)
    assert proj.metadata["pretrained"] == str(weights)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*other weights")  # W's own weights: no such warning
        clipaln.export(proj, t=1.0, out=tmp_path / "aligned.safetensors")
    written = load_file(str(tmp_path / "aligned.safetensors"))
    expected = fold_projection(bundle.model, proj.scaled(1.0).exact)
    assert torch.equal(written["visual.proj"], expected["visual.proj"])
    # other weights, allowed: a warning and a line on the card
    other = tmp_path / "other.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_file({k: v.contiguous() for k, v in open_clip.create_model(SMALL_VIT).state_dict().items()}, str(other))
    with pytest.warns(UserWarning, match="trained on other weights"):
        clipaln.export(proj, out=tmp_path / "folder", pretrained=str(other), model=SMALL_VIT, allow_other_weights=True)
    card = (tmp_path / "folder" / "README.md").read_text()
    assert "W was trained on other weights than these" in card and str(tmp_path) not in card


def test_overwrite_replaces_an_exports_config_only_beside_its_weights(tmp_path, capsys):
    """One-file export writes NAME.safetensors and NAME.json: --overwrite replaces that pair, and never
    a NAME.json of the user's (no export beside it, or not an open_clip config), which stays as it was."""
    bundle = load_clip("toy", device="cpu")
    proj = _a_projection(bundle, tmp_path / "projection.safetensors", "toy")
    out = tmp_path / "aligned.safetensors"
    args = ["export", "--projection", str(proj), "--out", str(out), "--device", "cpu", "--overwrite"]
    assert main(args) == 0 and main(args) == 0  # an export, then the same export replaced
    assert json.loads(out.with_suffix(".json").read_text())["embed_dim"] == bundle.embed_dim
    out.unlink()
    mine = b'{"my": "settings"}'
    out.with_suffix(".json").write_bytes(mine)  # a user's aligned.json, no export beside it
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "aligned.json is not the config of a clipaln export" in err and err.count("\n") == 1
    assert out.with_suffix(".json").read_bytes() == mine and not out.exists()


@pytest.fixture(scope="module")
def run(pairs_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    assert train_pairs(pairs_file, out) == 0
    return out


def test_export_overwrite_never_replaces_what_is_not_an_export(tmp_path, run, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    assert main(["export", "--projection", str(run / "projection.safetensors"), "--out", str(mine), "--overwrite"]) == 2
    assert "holds no clipaln export" in capsys.readouterr().err
    assert (mine / "README.md").read_text() == "my notes" and sorted(os.listdir(mine)) == ["README.md"]
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not mine to replace")
    assert (
        main(["export", "--projection", str(run / "projection.safetensors"), "--out", str(weights), "--overwrite"]) == 2
    )
    assert weights.read_bytes() == b"not mine to replace"


def test_an_export_replaces_an_export_and_a_second_one_at_once_is_refused(tmp_path, run, capsys):
    out = tmp_path / "exp"
    args = ["export", "--projection", str(run / "projection.safetensors"), "--out", str(out)]
    assert main([*args, "--t", "0.5"]) == 0
    assert main([*args, "--t", "2", "--overwrite"]) == 0
    from safetensors import safe_open

    with safe_open(str(out / "open_clip_model.safetensors"), "pt") as f:
        assert f.metadata()["t"] == "2.0"
    holder = hold_lock(out)
    try:
        assert main([*args, "--overwrite"]) == 2
        assert "being written by another clipaln process" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_an_interrupted_export_leaves_nothing_and_runs_again(tmp_path, run, monkeypatch):
    import safetensors.torch

    out = tmp_path / "exp"
    real = safetensors.torch.save_file

    def killed(tensors, path, metadata=None):
        real(tensors, path, metadata)
        raise KeyboardInterrupt  # SIGTERM arrives as KeyboardInterrupt (cli._interrupt)

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    args = ["export", "--projection", str(run / "projection.safetensors"), "--out", str(out)]
    assert main(args) == 130
    assert sorted(os.listdir(tmp_path)) == []  # no OUT, no OUT.partial, no .tmp, no lock
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert main(args) == 0


def test_weights_are_as_readable_as_their_json(tmp_path, run):
    old = os.umask(0o022)
    try:
        assert main(["export", "--projection", str(run / "projection.safetensors"), "--out", str(tmp_path / "e")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "e").iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_a_w_fitted_in_python_exports_from_memory(tmp_path, toy):
    import clipaln
    from clipaln import PreferenceData, fit_projection
    from clipaln.toyworld import render

    images = [render(obj=o, rng=i) for i, o in enumerate(["apple", "cup", "key", "bird"])]
    data = PreferenceData.from_captions(
        toy,
        images,
        ["a photo of an apple.", "a photo of a cup.", "a photo of a key.", "a photo of a bird."],
        ["a photo of a cup.", "a photo of a key.", "a photo of a bird.", "a photo of an apple."],
    )
    assert data.record["model"] == "toy"  # from_captions records the model
    W, _ = fit_projection(data, TrainConfig(method="dpo", epochs=1, batch_size=4), progress=False)
    r = clipaln.export(W, out=tmp_path / "mem", t=0.5)
    assert r["model"] == "toy" and (tmp_path / "mem" / "open_clip_model.safetensors").is_file()
    W.save(tmp_path / "w.safetensors")
    assert clipaln.export(tmp_path / "w.safetensors", out=tmp_path / "file.safetensors")["model"] == "toy"
    bare = clipaln.SharedProjection(W.dim, W.weight.detach())
    with pytest.raises(ValueError, match="carries no record of its model: pass model="):
        clipaln.export(bare, out=tmp_path / "x")
    assert clipaln.export(bare, out=tmp_path / "y", model="toy")["model"] == "toy"


def test_exporting_what_fit_projection_returns_is_one_line_that_says_to_unpack_it(tmp_path):
    fitted = (SharedProjection(4), [])  # fit_projection's (W, history)
    with pytest.raises(ValueError, match=r"not a tuple \(fit_projection returns \(W, history\): W, _ = "):
        runs.export_run(fitted, out=tmp_path / "aligned")
    assert not list(tmp_path.iterdir())
