"""Load a CLIP model, frozen and ready: the project's toy CLIP or any open_clip model.

    bundle = load_clip("toy")                                 # shipped in data/, offline
    bundle = load_clip("ViT-B-32", pretrained="openai")       # from the hub (needs a network)
    bundle = load_clip("ViT-B-32", pretrained="/path/open_clip_model.safetensors")
    bundle = load_clip("ViT-B-32")                            # random init (tests, smoke runs)

Nothing past this module branches on which world a model comes from.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from .toyworld.model import FINETUNE_LR as TOY_FINETUNE_LR
from .toyworld.model import load_toy

TOY = "toy"
HUB_HOST = "huggingface.co"


@dataclass
class ClipBundle:
    """A frozen CLIP model with the image preprocessing and the tokenizer that go with it."""

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    name: str
    finetune_lr: float = 2e-5  # where full fine-tuning starts (the paper's 2e-5 for ViT-B/32)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def logit_scale(self) -> float:
        """tau = exp(logit_scale) of the model."""
        return float(self.model.logit_scale.exp())

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1])


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --- the toy CLIP ---------------------------------------------------------------------------


def _load_toy(pretrained: str | None, device) -> ClipBundle:
    model, preprocess, tokenizer = load_toy(pretrained)
    return ClipBundle(_freeze(model.to(_device(device))), preprocess, tokenizer, TOY, finetune_lr=TOY_FINETUNE_LR)


# --- open_clip models -----------------------------------------------------------------------


def _hub_reachable(timeout: float = 1.5) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline_message(name: str, pretrained: str) -> str:
    return (
        f"cannot download {name} weights {pretrained!r}: the model hub is not reachable. "
        f"Use the built-in toy model (load_clip('toy'), --model toy) or pass a local "
        f"checkpoint file (pretrained='/path/to/weights.safetensors', --pretrained PATH)."
    )


def _load_open_clip(name: str, pretrained: str | None, device) -> ClipBundle:
    hub_id = name.startswith("hf-hub:")
    if not hub_id and name not in open_clip.list_models():
        raise ValueError(
            f"unknown model {name!r}: use 'toy', an open_clip name such as "
            f"'ViT-B-32' (see open_clip.list_models()) or 'hf-hub:ORG/REPO'"
        )
    local = pretrained is not None and Path(pretrained).is_file()
    if pretrained is not None and not local and not hub_id:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            if Path(pretrained).suffix or os.sep in pretrained:
                raise FileNotFoundError(f"checkpoint file not found: {pretrained}")
            raise ValueError(
                f"unknown pretrained tag {pretrained!r} for {name}; known tags: {', '.join(tags) or 'none'}"
            )
    needs_hub = hub_id or (pretrained is not None and not local)
    if needs_hub and not _hub_reachable():
        try:  # the weights may already be in the local hub cache
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        except Exception:
            raise RuntimeError(_offline_message(name, pretrained or name)) from None
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    if pretrained is None and not hub_id:
        warnings.warn(
            f"{name} has RANDOM weights (pretrained=None): fine for tests and timing, meaningless for results.",
            stacklevel=3,
        )
    tokenizer = open_clip.get_tokenizer(name)
    return ClipBundle(_freeze(model.to(_device(device))), preprocess, tokenizer, name)


def load_clip(name: str = TOY, pretrained: str | None = None, device=None) -> ClipBundle:
    """Load a frozen CLIP (eval mode, no gradients) with its preprocess and tokenizer.

    name: "toy" (the project's own CLIP, weights from data/), any open_clip model name, or an
    "hf-hub:ORG/REPO" id. pretrained: an open_clip tag ("openai"), a local checkpoint file, or
    None (random weights for open_clip models; the shipped weights for "toy", where "random"
    asks for a fresh initialisation).
    """
    if name == TOY:
        return _load_toy(pretrained, device)
    return _load_open_clip(name, pretrained, device)
