"""Load a CLIP model, frozen and ready: the project's toy CLIP or any open_clip model.

    bundle = load_clip("toy")                                 # shipped in data/, offline
    bundle = load_clip("ViT-B-32", pretrained="openai")       # from the hub (needs a network)
    bundle = load_clip("ViT-B-32", pretrained="/path/open_clip_model.safetensors")
    bundle = load_clip("ViT-B-32")                            # random init (tests, smoke runs)

Nothing past this module branches on which world a model comes from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import socket
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch  # open_clip (and torchvision with it, 6 s) is imported where it is used: see clipaln.cli

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
    activation: str = ""  # "quick_gelu" or "gelu": what the towers run, as the weights were trained
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


@contextlib.contextmanager
def _hub_cache_only():
    """The hub's local cache alone, at once: huggingface_hub read HF_HUB_OFFLINE when it was imported, so
    setting the variable now would come too late and each file would be retried for about 50 s. open_clip's
    log of the failed download is kept out: the caller says what happened, in one line."""
    from huggingface_hub import constants, utils

    offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        with _off_the_root_log("Failed to download"):
            yield
    finally:
        constants.HF_HUB_OFFLINE = offline
        getattr(utils, "reset_sessions", lambda: None)()  # huggingface_hub < 1.0 made its sessions offline for good


@contextlib.contextmanager
def _off_the_root_log(*starts: str):
    """open_clip logs on the root logger: its records that begin with `starts`, which we say ourselves in
    one line, are kept off it."""
    drop = lambda record: not (starts and record.getMessage().startswith(starts))
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


def _offline_message(name: str, pretrained: str) -> str:
    return (
        f"cannot download {name} weights {pretrained!r}: the model hub is not reachable. "
        f"Use the built-in toy model (load_clip('toy'), --model toy) or pass a local "
        f"checkpoint file (pretrained='/path/to/weights.safetensors', --pretrained PATH)."
    )


class MissingPackage(RuntimeError):
    """A model needs an optional package that is not installed."""


def _create(name: str, pretrained: str | None, build: dict | None = None):
    import open_clip

    try:
        with torch.random.fork_rng(devices=[]):  # random init is seeded: the same model in every process
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, **(build or {}))
    except ModuleNotFoundError as e:  # e.g. SigLIP's tokenizer needs transformers
        raise MissingPackage(f"{name} needs the package {e.name!r}: pip install {e.name}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, AssertionError, KeyError) as e:
        local = pretrained is not None and Path(pretrained).is_file() and not name.startswith(("hf-hub:", "local-dir:"))
        if not isinstance(e, (RuntimeError, AssertionError, KeyError)) or "PytorchStreamReader" in str(e):
            pass  # torch.load on what is not weights: below
        elif local and "memory" not in str(e):  # another architecture's weights: keys, shapes or open_clip's assert
            reason = " ".join(str(e).split()) or type(e).__name__
            raise ValueError(
                f"{pretrained} does not fit {name}: {reason[:200]} "
                "(--model names the architecture the file was saved from)"
            ) from None
        else:
            raise
        raise ValueError(
            f"{pretrained} is not a checkpoint open_clip can read ({type(e).__name__}; an HTML error page saved "
            "as weights, or a truncated download?): download it again, or pass a .safetensors file"
        ) from None
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except ModuleNotFoundError as e:
        raise MissingPackage(f"{name}'s tokenizer needs the package {e.name!r}: pip install {e.name}") from None
    return model, preprocess, tokenizer


def tag_config(name: str, tag: str) -> dict:
    """open_clip's pretrained config for `tag` of `name` (activation, preprocessing, where the weights
    live), or {} for an unknown pair."""
    import open_clip

    return dict(open_clip.get_pretrained_cfg(name, tag) or {})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def known_weights(name: str, path: str | Path) -> tuple[str, dict] | None:
    """(tag, config) when a local file is one of open_clip's pretrained weights for `name`, where that can
    be told without a network: an open_clip_config.json beside it (a hub snapshot, an export), a path
    that names the tag's hub repository (the hub's cache layout), or, for OpenAI's .pt files, the
    sha256 that the tag's download URL carries. None when it cannot be told."""
    import open_clip

    path = Path(path)
    sidecar = path.parent / "open_clip_config.json"
    if sidecar.is_file():
        try:
            cfg = json.loads(sidecar.read_text(encoding="utf-8"))
            model_cfg, preprocess = dict(cfg.get("model_cfg") or {}), dict(cfg.get("preprocess_cfg") or {})
        except (ValueError, AttributeError, TypeError):
            model_cfg, preprocess = {}, {}
        if "quick_gelu" in model_cfg or preprocess:
            return "open_clip_config.json", {"quick_gelu": bool(model_cfg.get("quick_gelu", False)), **preprocess}
    base = name.removesuffix("-quickgelu")
    resolved = str(path.resolve())
    digest = None
    for model in (base, f"{base}-quickgelu"):
        for tag in open_clip.list_pretrained_tags_by_model(model) if model in open_clip.list_models() else []:
            cfg = tag_config(model, tag)
            org_repo = cfg.get("hf_hub", "").strip("/").split("/")[:2]  # "org/repo/" or "org/repo/file"
            if len(org_repo) == 2 and (
                "models--" + "--".join(org_repo) in resolved  # the hub's cache
                or "/".join(org_repo) in resolved
                or any(folder.name == org_repo[1] for folder in path.resolve().parents)  # a clone of the repo
            ):
                return tag, cfg
            url = cfg.get("url", "")
            if "openaipublic" in url and path.suffix == ".pt":
                digest = digest or _sha256(path)
                if digest.startswith(url.split("/")[-2]):
                    return tag, cfg
    return None


#: open_clip's preprocessing keys in a pretrained config, and create_model_and_transforms' names for them
_PREPROCESS = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation"}
_PREPROCESS |= {"resize_mode": "image_resize_mode"}


def _as_trained(name: str, pretrained: str | None, local: bool, hub_id: bool) -> tuple[dict, str]:
    """How open_clip must build `name` for these weights to run as they were trained: the keyword
    arguments (QuickGELU, preprocessing) and the activation's name. A known mismatch is one ValueError."""
    import open_clip

    if hub_id or pretrained is None:
        return {}, ""
    cfg = tag_config(name, pretrained) if not local else None
    source = f"tag {pretrained!r}"
    if local:
        found = known_weights(name, pretrained)
        if found is None:
            return {}, ""
        source = f"{pretrained} ({found[0]}'s weights)"
        cfg = found[1]
        cfg = {k: v for k, v in cfg.items() if k in _PREPROCESS or k == "quick_gelu"} | {"local": True}
    trained_quick = bool(cfg.get("quick_gelu", False))
    model_quick = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
    if model_quick and not trained_quick:
        raise ValueError(
            f"{source} was trained with GELU, but {name} builds QuickGELU: "
            f"use --model {name.removesuffix('-quickgelu')}"
        )
    kwargs = {"force_quick_gelu": True} if trained_quick and not model_quick else {}
    if cfg.pop("local", False):  # open_clip applies a tag's preprocessing itself, not a file's
        kwargs |= {_PREPROCESS[k]: v for k, v in cfg.items() if k in _PREPROCESS}
    return kwargs, "quick_gelu" if trained_quick else "gelu"


def check_model(name: str = TOY, pretrained: str | None = None) -> tuple[str, str | None]:
    """The model name and pretrained tag or file as load_clip reads them, checked without loading
    anything (one line for an unknown name or tag, or a missing file), so that a command can refuse
    them before slower work. Returns (name, pretrained) with folders and ~ expanded."""
    if name == TOY:  # the shipped weights, "random", or a toy checkpoint file
        if pretrained not in (None, "random") and not Path(pretrained).expanduser().is_file():
            raise FileNotFoundError(f"toy checkpoint file not found: {pretrained}")
        return name, pretrained
    import open_clip

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
    if pretrained is not None and not local and not hub_id:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            if Path(pretrained).suffix or os.sep in pretrained:
                raise FileNotFoundError(f"checkpoint file not found: {pretrained}")
            raise ValueError(
                f"unknown pretrained tag {pretrained!r} for {name}; known tags: {', '.join(tags) or 'none'}"
            )
    return name, pretrained


def _load_open_clip(name: str, pretrained: str | None, device) -> ClipBundle:
    import open_clip

    name, pretrained = check_model(name, pretrained)
    hub_id = name.startswith(("hf-hub:", "local-dir:"))
    local = pretrained is not None and Path(pretrained).is_file()
    build, activation = _as_trained(name, pretrained, local, hub_id)
    needs_hub = name.startswith("hf-hub:") or (pretrained is not None and not local)
    random_weights = pretrained is None and not hub_id  # clipaln's warning below says it, and what it means
    if needs_hub and not _hub_reachable():
        try:  # the weights may already be in the local hub cache
            with _hub_cache_only():
                model, preprocess, tokenizer = _create(name, pretrained, build)
        except MissingPackage:
            raise
        except Exception as e:
            cause = " ".join(str(e).split())
            also = "" if "Failed to download" in cause else f" (a cached copy failed to load: {cause[:300]})"
            raise RuntimeError(_offline_message(name, pretrained or name) + also) from None
    else:
        with _off_the_root_log(*(["No pretrained weights loaded"] if random_weights else [])):
            model, preprocess, tokenizer = _create(name, pretrained, build)
    if local and not activation and "quickgelu" not in name.lower() and f"{name}-quickgelu" in open_clip.list_models():
        warnings.warn(  # once the file is known to fit: a file of another model is one error, not this
            f"loading {pretrained} into {name} with GELU: if these are OpenAI's weights, use --model {name}-quickgelu "
            "(OpenAI trained with QuickGELU; the plain config runs GELU and silently loses accuracy)",
            stacklevel=3,
        )
    if random_weights:
        warnings.warn(
            f"{name} has RANDOM weights (pretrained=None, seeded): fine for tests and timing, meaningless for results.",
            stacklevel=3,
        )
    bundle = ClipBundle(_freeze(model.to(_device(device))), preprocess, tokenizer, name)
    bundle.activation = activation or _activation(model)
    return bundle


def _activation(model: torch.nn.Module) -> str:
    """'quick_gelu' or 'gelu': what the model's transformer blocks run ('' for other towers)."""
    import open_clip

    for module in model.modules():
        if isinstance(module, open_clip.transformer.QuickGELU):
            return "quick_gelu"
    return "gelu" if any(isinstance(m, torch.nn.GELU) for m in model.modules()) else ""


def load_clip(name: str = TOY, pretrained: str | None = None, device: str | torch.device | None = None) -> ClipBundle:
    """Load a frozen CLIP (eval mode, no gradients) with its preprocess and tokenizer, as its weights
    were trained (QuickGELU for OpenAI's weights, their own image preprocessing).

    Args:
        name: "toy" (the project's own CLIP, weights shipped in the package), any open_clip model
            name ("ViT-B-32"), or an "hf-hub:ORG/REPO" id.
        pretrained: an open_clip tag ("openai"), a local checkpoint file, or None: random weights for
            open_clip models, the shipped weights for "toy" (where "random" asks for a fresh init).
        device: where the model runs; None picks a GPU where there is one.

    Returns:
        ClipBundle: model, preprocess, tokenizer and name; ``.embed_dim`` and ``.logit_scale`` (tau).
    """
    bundle = _load_toy(pretrained, device) if name == TOY else _load_open_clip(name, pretrained, device)
    local = pretrained is not None and Path(pretrained).expanduser().is_file()  # recorded absolute: a W
    bundle.pretrained = str(Path(pretrained).expanduser().resolve()) if local else pretrained  # exports anywhere
    return bundle
