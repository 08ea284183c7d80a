"""Fold W_t into a model: an aligned checkpoint that plain open_clip loads, with no clipaln installed.

W acts on both embeddings and the embeddings are re-normalised after it, so
    normalize(W_t normalize(e)) = normalize(W_t e),
and W_t can be multiplied into the last linear map of each tower: the image tower's projection
(ViT: visual.proj; ResNet: visual.attnpool.c_proj; timm towers: visual.head.proj) and the text
projection. The result scores every (image, caption) pair exactly as clipaln's W_t does.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from .io import save_tensors, write_text

#: Where each open_clip architecture keeps the last linear map of its towers: (parameter, kind),
#: kind "right" for x @ P (a (width, d) parameter) and "linear" for nn.Linear weights (d, width).
IMAGE_HEADS = (("visual.proj", "right"), ("visual.attnpool.c_proj", "linear"), ("visual.head.proj", "linear"))
TEXT_HEADS = (("text_projection", "right"), ("text.text_projection", "right"), ("text.proj", "linear"))


def _fold(state: dict, heads, w: torch.Tensor, tower: str) -> None:
    for name, kind in heads:
        key = name if kind == "right" else f"{name}.weight"
        if key in state and state[key].ndim == 2:
            p = state[key]
            if kind == "right":  # x @ P, then W: x @ (P W^T)
                state[key] = (p.double() @ w.T).to(p.dtype)
            else:  # W (A x + b) = (W A) x + W b
                state[key] = (w @ p.double()).to(p.dtype)
                if f"{name}.bias" in state:
                    b = state[f"{name}.bias"]
                    state[f"{name}.bias"] = (w @ b.double()).to(b.dtype)
            return
    raise ValueError(
        f"cannot fold W into the {tower} tower: none of {', '.join(n for n, _ in heads)} is a linear map in this "
        "model (export supports open_clip's CLIP and CustomTextCLIP towers)"
    )


def fold_projection(model: torch.nn.Module, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's state dict with W (d x d) folded into both towers' final projections."""
    w = weight.detach().double().cpu()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    _fold(state, IMAGE_HEADS, w, "image")
    _fold(state, TEXT_HEADS, w, "text")
    return state


def export_checkpoint(
    state: dict[str, torch.Tensor],
    out: str | Path,
    config: dict | None,
    metadata: dict,
    overwrite: bool = False,
) -> list:
    """Write a model's state (W folded in: fold_projection, or a fine-tuned model's own) to `out`
    (safetensors) and, given the model's open_clip config, the config beside it (out with .json:
    `open_clip.add_model_config(that file)` registers it under the file's stem). Refuses to replace
    an existing file unless overwrite. Returns the paths written."""
    out = Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors (one file) or name a folder (no suffix), got {out.name}")
    targets = [out] + ([out.with_suffix(".json")] if config is not None else [])
    _refuse_existing(targets, overwrite)
    if overwrite and out.exists() and not _is_export(out):  # --overwrite replaces only what export wrote
        raise FileExistsError(
            f"{out} is not a clipaln export: choose another --out (--overwrite replaces exports only)"
        )
    config_file = out.with_suffix(".json")
    if (
        overwrite
        and config is not None
        and config_file.exists()
        and not (_is_export(out) and _is_model_config(config_file))
    ):
        raise FileExistsError(
            f"{config_file} is not the config of a clipaln export beside it: choose another --out "
            "(--overwrite replaces exports only)"
        )
    written = [save_tensors(out, state, metadata)]
    if config is not None:
        written.append(write_text(out.with_suffix(".json"), json.dumps(config, indent=1) + "\n"))
    return written


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that export would refuse, before any work: a suffix other than .safetensors, or
    something there that is not to be replaced."""
    if out.suffix and out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors (one file) or name a folder (no suffix), got {out.name}")
    if out.suffix:
        _refuse_existing([out, out.with_suffix(".json")], overwrite)
    elif out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder: choose another --out")
    else:
        _refuse_existing([out] if out.is_dir() and any(out.iterdir()) else [], overwrite)


def _is_export(weights: Path) -> bool:
    """Whether a safetensors file was written by clipaln export (its header names the source W)."""
    try:
        with safe_open(str(weights), "pt") as f:
            return "source" in (f.metadata() or {})
    except Exception:  # not safetensors at all
        return False


def _is_model_config(path: Path) -> bool:
    """Whether a JSON file is an open_clip model config (what export writes beside its weights)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"embed_dim", "vision_cfg", "text_cfg"} <= set(config)


HUB_WEIGHTS, HUB_CONFIG, HUB_CARD = "open_clip_model.safetensors", "open_clip_config.json", "README.md"
STAGE_MARK = ".clipaln-export"  # in an export's staging folder while it is written


def _export_of_ours(path: Path) -> bool:
    """Whether what is at `path` is something export wrote (and --overwrite may replace)."""
    if path.is_dir():
        return _is_export(path / HUB_WEIGHTS)
    if path.suffix == ".safetensors":
        return _is_export(path)
    return _is_model_config(path) and _is_export(path.with_suffix(".safetensors"))  # a config beside its export


def _refuse_existing(paths, overwrite: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        theirs = [p for p in existing if not _export_of_ours(p)]
        if theirs:  # the user's own file or folder: --overwrite would refuse it too
            raise FileExistsError(f"{theirs[0]} exists and is not a clipaln export: choose another --out")
        raise FileExistsError(f"{existing[0]} exists: pass --overwrite to replace it, or choose another --out")


def export_folder(
    state: dict[str, torch.Tensor],
    out: str | Path,
    config: dict,
    preprocess: dict,
    metadata: dict,
    card: str,
    overwrite: bool = False,
) -> list:
    """Write a model's state (W folded in, or a fine-tuned model's own) as a folder in open_clip's hub
    layout: open_clip_config.json ({"model_cfg", "preprocess_cfg"}), open_clip_model.safetensors and
    a model card (README.md), so that `open_clip.create_model_and_transforms("local-dir:OUT")` loads
    it (and the folder can be pushed to the Hugging Face Hub as it is, for "hf-hub:"). Refuses an
    existing folder unless overwrite; then it replaces only these three files. Returns the paths
    written."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder: choose another --out")
    existing = out.is_dir() and any(out.iterdir())
    _refuse_existing([out] if existing else [], overwrite)
    if existing and not _is_export(out / HUB_WEIGHTS):  # --overwrite replaces only what export wrote
        raise FileExistsError(
            f"{out} is a folder that holds no clipaln export: choose another --out (--overwrite replaces exports only)"
        )
    stage = out.with_name(out.name + ".partial")  # written whole, then moved in: never half an export
    if stage.exists() or stage.is_symlink():
        if not (stage / STAGE_MARK).is_file():  # the user's folder by that name: never ours to remove
            raise FileExistsError(f"{stage} exists and was not made by clipaln: move it or choose another --out")
        shutil.rmtree(stage)  # an export killed half way
    made = False
    try:
        stage.mkdir(parents=True)
        made = True
        (stage / STAGE_MARK).write_text("a clipaln export in progress\n")
        save_tensors(stage / HUB_WEIGHTS, state, metadata)
        write_text(stage / HUB_CONFIG, json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}, indent=1) + "\n")
        write_text(stage / HUB_CARD, card)
        (stage / STAGE_MARK).unlink()
        if not out.exists():
            os.replace(stage, out)
        else:
            for name in (HUB_WEIGHTS, HUB_CONFIG, HUB_CARD):
                os.replace(stage / name, out / name)
    finally:
        if made:  # ours: what is left of it after a failure (gone after the move)
            shutil.rmtree(stage, ignore_errors=True)
    return [out / HUB_WEIGHTS, out / HUB_CONFIG, out / HUB_CARD]


def open_clip_config(name: str, toy_config: dict | None = None, quick_gelu: bool = False) -> dict | None:
    """The open_clip model config of `name` (the toy's from its own file), with QuickGELU where the
    model was built with it for its weights (OpenAI's), so that plain open_clip builds it alike."""
    import open_clip

    if toy_config is not None:
        return toy_config["model_cfg"]
    config = open_clip.get_model_config(name)
    return {**config, "quick_gelu": True} if config is not None and quick_gelu else config
