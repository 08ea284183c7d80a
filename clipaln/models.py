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
from dataclasses import dataclass, field
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
    pretrained: str | None = None  # the weights load_clip was given (a tag or a file), recorded with what it trains
    _embed_dim: int | None = field(default=None, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def logit_scale(self) -> float:
        """tau = exp(logit_scale) of the model."""
        return float(self.model.logit_scale.exp())

    @property
    def embed_dim(self) -> int:
        """The size of the joint embedding, read from what the text encoder returns (CLIP keeps it in
        text_projection, CustomTextCLIP models such as EVA02, SigLIP and MobileCLIP elsewhere)."""
        if self._embed_dim is None:
            with torch.no_grad():
                self._embed_dim = int(self.model.encode_text(self.tokenizer(["a"]).to(self.device)).shape[-1])
        return self._embed_dim


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


class MissingPackage(RuntimeError):
    """A model needs an optional package that is not installed."""


def _create(name: str, pretrained: str | None):
    try:
        with torch.random.fork_rng(devices=[]):  # random init is seeded: the same model in every process
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    except ModuleNotFoundError as e:  # e.g. SigLIP's tokenizer needs transformers
        raise MissingPackage(f"{name} needs the package {e.name!r}: pip install {e.name}") from None
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except ModuleNotFoundError as e:
        raise MissingPackage(f"{name}'s tokenizer needs the package {e.name!r}: pip install {e.name}") from None
    return model, preprocess, tokenizer


def _load_open_clip(name: str, pretrained: str | None, device) -> ClipBundle:
    hub_id = name.startswith(("hf-hub:", "local-dir:"))
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:")).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        name = f"local-dir:{folder}"
    if not hub_id and name not in open_clip.list_models():
        raise ValueError(
            f"unknown model {name!r}: use 'toy', an open_clip name such as "
            f"'ViT-B-32' (see open_clip.list_models()), 'hf-hub:ORG/REPO' or 'local-dir:PATH'"
        )
    if pretrained is not None and pretrained.startswith("~"):
        pretrained = str(Path(pretrained).expanduser())
    local = pretrained is not None and Path(pretrained).is_file()
    if local and "quickgelu" not in name.lower() and f"{name}-quickgelu" in open_clip.list_models():
        warnings.warn(
            f"loading {pretrained} into {name}: if these are OpenAI's weights, use --model {name}-quickgelu "
            "(OpenAI trained with QuickGELU; the plain config runs GELU and silently loses accuracy)",
            stacklevel=3,
        )
    if pretrained is not None and not local and not hub_id:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            if Path(pretrained).suffix or os.sep in pretrained:
                raise FileNotFoundError(f"checkpoint file not found: {pretrained}")
            raise ValueError(
                f"unknown pretrained tag {pretrained!r} for {name}; known tags: {', '.join(tags) or 'none'}"
            )
    needs_hub = name.startswith("hf-hub:") or (pretrained is not None and not local)
    if needs_hub and not _hub_reachable():
        try:  # the weights may already be in the local hub cache
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            model, preprocess, tokenizer = _create(name, pretrained)
        except MissingPackage:
            raise
        except Exception:
            raise RuntimeError(_offline_message(name, pretrained or name)) from None
    else:
        model, preprocess, tokenizer = _create(name, pretrained)
    if pretrained is None and not hub_id:
        warnings.warn(
            f"{name} has RANDOM weights (pretrained=None, seeded): fine for tests and timing, meaningless for results.",
            stacklevel=3,
        )
    return ClipBundle(_freeze(model.to(_device(device))), preprocess, tokenizer, name)


def load_clip(name: str = TOY, pretrained: str | None = None, device: str | torch.device | None = None) -> ClipBundle:
    """Load a frozen CLIP (eval mode, no gradients) with its preprocess and tokenizer.

    name: "toy" (the project's own CLIP, weights shipped in the package), any open_clip model name, or an
    "hf-hub:ORG/REPO" id. pretrained: an open_clip tag ("openai"), a local checkpoint file, or
    None (random weights for open_clip models; the shipped weights for "toy", where "random"
    asks for a fresh initialisation).
    """
    bundle = _load_toy(pretrained, device) if name == TOY else _load_open_clip(name, pretrained, device)
    bundle.pretrained = pretrained
    return bundle
