"""export_run and export_finetuned: what `clipaln export` does (W_t folded in, or a fine-tuned model)."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

from safetensors import safe_open

from .. import fold, manifest, models
from ..features import model_fingerprint
from ..finetune import saved_state
from ..models import ClipBundle
from ..projection import SharedProjection
from ..toyworld.model import toy_config
from .common import (
    _check_projection,
    _identity,
    _load_encoder,
)


def export_run(
    projection: str | Path,
    *,
    out: str | Path,
    t: float = 1.0,
    device: str | None = None,
    allow_other_weights: bool = False,
    overwrite: bool = False,
    model: str | None = None,
    pretrained: str | None = None,
) -> dict:
    """Fold W_t into its model and write it for plain open_clip: W_t is multiplied into the last linear
    map of each tower, so the model scores every (image, caption) pair as W_t does. The model and
    weights come from the projection's record (or from model= and pretrained=), checked against its
    fingerprint. Nothing existing is replaced unless overwrite.

    Args:
        projection: a projection.safetensors, or a SharedProjection in memory.
        out: NAME.safetensors (with NAME.json beside it for the toy or any registered config), or,
            without a suffix, a folder in open_clip's hub layout with a model card, which
            "local-dir:OUT" loads.
        t: the scale to fold in.
        device: where the model loads (default: the CPU).
        allow_other_weights: fold W into weights it was not trained on (said in a warning and the card).
        overwrite: replace an existing export at OUT.
        model: the model's name, for a W that records none.
        pretrained: its weights, with model=.

    Returns:
        dict: {"written": [paths], "model", "t", "layout": "file" or "folder"}, and the toy's
        image_mean / image_std where they are not open_clip's defaults.
    """
    if isinstance(projection, SharedProjection):
        path, meta = Path("the projection in memory"), dict(projection.metadata)
    elif not isinstance(projection, (str, Path)):
        hint = (
            " (fit_projection returns (W, history): W, _ = fit_projection(...))"
            if isinstance(projection, tuple)
            else ""
        )
        raise ValueError(
            f"export takes a SharedProjection or a projection file, not a {type(projection).__name__}{hint}"
        )
    else:
        path = Path(projection).expanduser()
        if path.is_file():
            manifest.verify(path)
        meta = SharedProjection.load(path).metadata
    if model is not None:
        meta = {**meta, "model": model, "pretrained": pretrained or meta.get("pretrained", "")}
    if "model" not in meta:
        raise ValueError(
            f"{path} carries no record of its model: pass model= (and pretrained=) to export, or fit W on "
            "PreferenceData that records one (PreferenceData.from_captions and the tracks' features do)"
        )
    model, pretrained = meta["model"], meta.get("pretrained") or None
    out = Path(out).expanduser().absolute()
    fold.check_out(out, overwrite)  # before the model loads (seconds for a ViT)
    bundle = models.load_clip(model, pretrained=pretrained, device=device or "cpu")
    proj = projection if isinstance(projection, SharedProjection) else SharedProjection.load(path, dim=bundle.embed_dim)
    if proj.dim != bundle.embed_dim:
        raise ValueError(f"{path} is {proj.dim}-d; {model}'s embeddings are {bundle.embed_dim}-d")
    _check_projection(path, meta, _identity(bundle, pretrained, allow_other_weights))  # any task folds alike
    other_weights = bool(meta.get("weights")) and meta["weights"] != model_fingerprint(bundle)
    if other_weights:  # allowed, and said: a W folded into weights it was not trained on
        warnings.warn(
            f"{path} was trained on other weights of {model} than {pretrained or 'its random init'}: "
            "the export folds it into these, as --allow-other-weights asked",
            stacklevel=2,
        )
    toy = toy_config() if model == "toy" and pretrained is None else None
    header = {
        "source": str(path.resolve()) if path.is_file() else "memory",
        "t": t,
        "model": model,
        "pretrained": pretrained or "",
        "format": "pt",
    }
    if toy is not None:  # not open_clip's default normalisation: pass image_mean / image_std when loading
        header |= {"image_mean": json.dumps(toy["image_mean"]), "image_std": json.dumps(toy["image_std"])}
    config = fold.open_clip_config(model, toy, quick_gelu=bundle.activation == "quick_gelu")
    if out.is_symlink() and not out.exists():
        raise ValueError(
            f"--out {out} is a symbolic link to nothing ({os.readlink(out)}): remove it or choose another --out"
        )
    with manifest.OutLock(out.with_suffix("") if out.suffix else out):  # one export (or run) of OUT at a time
        state = fold.fold_projection(bundle.model, proj.scaled(t).exact)
        card = lambda: _model_card(path, meta, model, pretrained, t, other_weights)
        written = _write_export(state, out, config, _preprocess_cfg(bundle), header, card, overwrite, model)
    return {
        "written": [str(p) for p in written],
        "model": model,
        "t": t,
        "layout": "file" if out.suffix else "folder",
        **{k: header[k] for k in ("image_mean", "image_std") if k in header},
    }


def _write_export(state, out: Path, config, preprocess: dict, header: dict, card, overwrite: bool, model: str):
    """One .safetensors (with its config beside it), or an open_clip hub folder with a model card."""
    if out.suffix:
        return fold.export_checkpoint(state, out, config, header, overwrite)
    if config is None:
        raise ValueError(f"open_clip has no config for {model!r}: export it as one .safetensors file instead")
    return fold.export_folder(state, out, config, preprocess, header, card(), overwrite)


def export_finetuned(
    model_file: str | Path,
    *,
    out: str | Path,
    device: str | None = None,
    allow_other_weights: bool = False,
    overwrite: bool = False,
) -> dict:
    """Write the model a full fine-tuning run trained (OUT/model.safetensors of ``train --mode full``)
    for plain open_clip, as export_run writes a W folded in. Its base model is checked against the
    run's record first.

    Args:
        model_file: the run's model.safetensors.
        out: a folder in open_clip's hub layout (config with QuickGELU where its weights were trained
            with it, weights under open_clip's names, a model card), or one NAME.safetensors file.
        device: where the model loads (default: the CPU).
        allow_other_weights: export although the base weights differ from the run's.
        overwrite: replace an existing export at OUT.

    Returns:
        dict: {"written": [paths], "model", "layout": "file" or "folder"}.
    """
    path = Path(model_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"fine-tuned model not found: {path}")
    manifest.verify(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("mode") != "full":
        raise ValueError(
            f"{path} is not the model of a full fine-tuning run (train --mode full): export a W with --projection"
        )
    model, pretrained = meta["model"], meta.get("pretrained") or None
    out = Path(out).expanduser().absolute()
    fold.check_out(out, overwrite)
    base = models.load_clip(model, pretrained=pretrained, device=device or "cpu")
    tuned, recorded = _load_encoder(base, path, pretrained, allow_other_weights)
    header = {"source": path.name, "model": model, "pretrained": _names_only(pretrained or ""), "mode": "full"}
    config = fold.open_clip_config(model, None, quick_gelu=base.activation == "quick_gelu")
    card = lambda: _finetuned_card(path, meta, model, pretrained)
    with manifest.OutLock(out.with_suffix("") if out.suffix else out):
        written = _write_export(
            saved_state(tuned.model), out, config, _preprocess_cfg(base), header, card, overwrite, model
        )
    return {"written": [str(p) for p in written], "model": model, "layout": "file" if out.suffix else "folder"}


def _finetuned_card(path: Path, meta: dict, model: str, pretrained) -> str:
    """README.md for an exported fine-tuned model."""
    weights = f"weights `{_names_only(pretrained)}`" if pretrained else "random init (seeded), not trained weights"
    run = json.loads(meta.get("manifest") or "{}")
    trained = "both encoders" if run.get("train_text") else "the image encoder"
    lines = [
        f"# {model} fine-tuned with clipaln (full fine-tuning of {trained})",
        "",
        f"Base model: open_clip `{model}`, {weights}. Preference optimisation (Afzali et al., ICLR 2025) trained",
        f"{trained}; the weights are the whole model under open_clip's names.",
        "",
        "```python",
        "import open_clip",
        'model, _, preprocess = open_clip.create_model_and_transforms("local-dir:PATH/TO/THIS/FOLDER")',
        'tokenizer = open_clip.get_tokenizer("local-dir:PATH/TO/THIS/FOLDER")  # no clipaln needed',
        "```",
        "",
        "## The run (run.json)",
        "",
        "```json",
        json.dumps(_names_only(run), indent=1),
        "```",
    ]
    return "\n".join(lines) + "\n"


def _preprocess_cfg(bundle: ClipBundle) -> dict:
    """open_clip's preprocess_cfg (size, mean, std) of the bundle's own image transform."""
    from torchvision.transforms import Normalize, Resize

    steps = getattr(bundle.preprocess, "transforms", [])
    norm = next((s for s in steps if isinstance(s, Normalize)), None)
    size = next((s.size for s in steps if isinstance(s, Resize)), None)
    out = {}
    if norm is not None:
        out |= {"mean": [float(m) for m in norm.mean], "std": [float(s) for s in norm.std]}
    if size is not None:
        out["size"] = size if isinstance(size, int) else list(size)
    return out


def _model_card(path: Path, meta: dict, model: str, pretrained, t: float, other_weights: bool = False) -> str:
    """README.md for an exported folder: what it is, how to load it, and the run it came from (file
    paths by their names only: a card is shared, the folders it came from are not)."""
    run = path.parent / "run.json"
    metrics = path.parent / "metrics.json"
    if pretrained:
        weights = f", weights `{_names_only(pretrained)}`"
    else:
        weights = " (the toy CLIP of clipaln)" if model == "toy" else " at random init (seeded), not trained weights"
    lines = [
        f"# {model} with clipaln's W_t folded in (t = {t})",
        "",
        f"Base model: open_clip `{model}`"
        + weights
        + ". W_t = U S^t V^T (Afzali et al., ICLR 2025) is multiplied into the last linear map of each tower,",
        "so this model scores every (image, caption) pair as clipaln's W_t does.",
        "",
        *(
            [
                "**W was trained on other weights than these** (exported with --allow-other-weights): its",
                "numbers are not this model's.",
                "",
            ]
            if other_weights
            else []
        ),
        "```python",
        "import open_clip",
        'model, _, preprocess = open_clip.create_model_and_transforms("local-dir:PATH/TO/THIS/FOLDER")',
        *(
            [
                "# the toy CLIP reads a 66-word vocabulary, not CLIP's BPE: open_clip.get_tokenizer would",
                "# give the wrong one. Its tokenizer comes with clipaln (pip install clipaln):",
                "import clipaln",
                'tokenizer = clipaln.models.load_clip("toy").tokenizer',
            ]
            if model == "toy"
            else ['tokenizer = open_clip.get_tokenizer("local-dir:PATH/TO/THIS/FOLDER")  # no clipaln needed']
        ),
        "```",
        "",
        "## The projection",
        "",
        "```json",
        json.dumps(_names_only({k: meta[k] for k in sorted(meta)}), indent=1),
        "```",
    ]
    for title, f in (("The run (run.json)", run), ("Its metrics (metrics.json)", metrics)):
        if path.is_file() and f.is_file():  # a W from memory has no run beside it
            text = json.dumps(_names_only(json.loads(f.read_text())), indent=1)
            lines += ["", f"## {title}", "", "```json", text, "```"]
    return "\n".join(lines) + "\n"


def _names_only(value):
    """`value` with every absolute path in it (a string, or inside JSON text, lists and dicts) cut to
    its last part."""
    if isinstance(value, dict):
        return {k: _names_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_names_only(v) for v in value]
    if isinstance(value, str):
        if value.startswith(("{", "[")):
            try:
                return json.dumps(_names_only(json.loads(value)), sort_keys=True)
            except ValueError:
                pass
        return re.sub(r"(?<![\w.])(?:/|~/|[A-Za-z]:\\)[^\s\"']*", lambda m: Path(m.group()).name or m.group(), value)
    return value
