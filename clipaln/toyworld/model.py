"""Build, load and save the toy CLIP: open_clip's CLIP class with a small config (weights/toy_clip.*,
shipped inside the package).

Loading into a frozen ClipBundle is clipaln.models.load_clip("toy"); this module only knows
the toy's files, config, preprocessing and tokenizer.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..io import save_tensors, write_text
from .tokenizer import WordTokenizer

if TYPE_CHECKING:
    import open_clip

#: The learning rate full fine-tuning of the toy's small image tower starts from (a ViT-B-32
#: uses the paper's 2e-5): the model's own recommendation, so nothing downstream asks "is it toy?".
FINETUNE_LR = 1e-3


def data_dir() -> Path:
    """Folder with the shipped toy CLIP, inside the package so that a wheel carries it (override
    with the CLIPALN_DATA environment variable)."""
    return Path(os.environ.get("CLIPALN_DATA", Path(__file__).resolve().parent / "weights"))


def toy_paths() -> tuple[Path, Path]:
    """The shipped config and weights files."""
    return data_dir() / "toy_clip.json", data_dir() / "toy_clip.safetensors"


def toy_config(path: Path | None = None) -> dict[str, Any]:
    """The toy CLIP's open_clip config, vocabulary and preprocessing (weights/toy_clip.json)."""
    path = path or toy_paths()[0]
    if not path.is_file():
        raise FileNotFoundError(f"toy CLIP config not found: {path}")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a toy CLIP config (not JSON)") from None
    missing = [k for k in ("model_cfg", "vocab", "image_mean", "image_std") if k not in config]
    if not isinstance(config, dict) or missing:
        raise ValueError(f"{path} is not a toy CLIP config (it lacks {', '.join(missing) or 'a JSON object'})")
    return config


def build_toy(config: dict[str, Any] | None = None) -> tuple[open_clip.model.CLIP, Callable, WordTokenizer]:
    """A randomly initialised toy CLIP (open_clip's CLIP class), its preprocess and tokenizer."""
    import open_clip

    config = config or toy_config()
    model = open_clip.model.CLIP(**config["model_cfg"])
    tokenizer = WordTokenizer(config["vocab"], config["model_cfg"]["text_cfg"]["context_length"])
    assert tokenizer.vocab_size == config["model_cfg"]["text_cfg"]["vocab_size"]
    preprocess = open_clip.image_transform(
        config["model_cfg"]["vision_cfg"]["image_size"],
        is_train=False,
        mean=tuple(config["image_mean"]),
        std=tuple(config["image_std"]),
    )
    return model, preprocess, tokenizer


def load_toy(pretrained: str | None = None) -> tuple[open_clip.model.CLIP, Callable, WordTokenizer]:
    """The toy CLIP with its weights: the shipped ones (None), a safetensors file, or "random" for none.

    Returns (model, preprocess, tokenizer). A file that is missing raises FileNotFoundError, one that
    is not the toy's safetensors raises ValueError; missing shipped weights warn and stay random."""
    weights = Path(pretrained).expanduser() if pretrained not in (None, "random") else toy_paths()[1]
    if pretrained not in (None, "random") and not weights.is_file():
        raise FileNotFoundError(f"toy checkpoint file not found: {weights}")
    beside = weights.with_suffix(".json")  # a checkpoint carries its config next to it
    config_path = beside if beside.is_file() and beside != weights else None
    model, preprocess, tokenizer = build_toy(toy_config(config_path))
    if pretrained == "random":
        pass
    elif weights.is_file():
        try:
            state = load_file(str(weights))
            model.load_state_dict({k: v.float() for k, v in state.items()})
        except (SafetensorError, RuntimeError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{weights} is not a toy CLIP safetensors checkpoint ({first[:120]})") from None
    else:
        warnings.warn(
            f"toy CLIP weights not found at {weights}: using a RANDOMLY INITIALISED toy model. "
            "Regenerate them with `python -m clipaln.toyworld.pretrain`.",
            stacklevel=4,
        )
    return model, preprocess, tokenizer


def save_toy(model: torch.nn.Module, config: dict, out_dir: Path) -> None:
    """Write the weights (fp16 safetensors) and the config beside them."""
    state = {k: v.half() for k, v in model.state_dict().items()}
    save_tensors(out_dir / "toy_clip.safetensors", state, {"format": "pt", "source": "clipaln.toyworld.pretrain"})
    write_text(out_dir / "toy_clip.json", json.dumps(config, indent=1) + "\n")
