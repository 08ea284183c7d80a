"""Encode images and texts once with a frozen CLIP; everything downstream works on features.

All embeddings returned here are L2-normalised float32 tensors on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from tqdm.auto import tqdm

from . import distributed as dist
from .io import save_tensors
from .models import ClipBundle


@torch.no_grad()
def encode_texts(bundle: ClipBundle, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """(K, d) normalised text embeddings of `texts`."""
    if len(texts) == 0:
        raise ValueError("encode_texts needs at least one text (the class list is empty)")
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = bundle.tokenizer(list(texts[i : i + batch_size])).to(bundle.device)
        out.append(F.normalize(bundle.model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_images(
    bundle: ClipBundle,
    images: Iterable[Image.Image] | torch.Tensor,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "encode images",
) -> torch.Tensor:
    """(N, d) normalised image embeddings; `images` are PIL images or a preprocessed (N, 3, H, W) batch.

    Under torchrun each rank encodes every world()-th image and the shards are gathered.
    """
    if dist.active():
        images = images if isinstance(images, torch.Tensor) else list(images)
        n = len(images)
        if n >= dist.world():
            idx = dist.shard_indices(n)
            local = images[idx] if isinstance(images, torch.Tensor) else [images[i] for i in idx]
            with dist.suspended():
                out = encode_images(bundle, local, batch_size, progress and dist.is_main(), desc)
            return dist.gather_rows(out.to(bundle.device), n).cpu()
    if isinstance(images, torch.Tensor):
        batches = images.split(batch_size)
        total = len(batches)
    else:
        images = list(images)
        batches = (
            torch.stack([bundle.preprocess(im) for im in images[i : i + batch_size]])
            for i in range(0, len(images), batch_size)
        )
        total = (len(images) + batch_size - 1) // batch_size
    out = []
    for x in tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress or total < 2):
        x = x.to(bundle.device)
        out.append(F.normalize(bundle.model.encode_image(x).float(), dim=-1).cpu())
    if not out:
        raise ValueError("encode_images got no images")
    return torch.cat(out)


# --- the on-disk cache ------------------------------------------------------------------------


def default_cache_dir() -> Path:
    return Path(os.environ.get("CLIPALN_CACHE", Path.home() / ".cache" / "clipaln"))


def model_fingerprint(bundle: ClipBundle) -> str:
    """A hash of the model's weights and preprocessing, computed once per bundle."""
    fp = getattr(bundle, "_fingerprint", None)
    if fp is None:
        h = hashlib.sha256(bundle.name.encode())
        for k, v in bundle.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        h.update(repr(bundle.preprocess).encode())
        fp = h.hexdigest()[:16]
        bundle._fingerprint = fp
    return fp


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the names, shapes, dtypes and bytes of a dict of tensors."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}{tuple(v.shape)}{v.dtype}".encode())
        h.update(v.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_UNWRITABLE_WARNED: set[str] = set()


class FeatureCache:
    """Tensors computed once and stored as safetensors, keyed by model + data + preprocessing.

    `get(bundle, data_key, compute)` returns the stored tensors when the key was seen before and
    otherwise calls compute() -> dict[str, Tensor], writes the result atomically (temp file +
    rename, so an interrupted run never leaves a half file) and returns it. Each entry carries a
    checksum of its tensors: a damaged entry is recomputed, never trusted. A cache folder that
    cannot be written warns once and the run goes on without storing. `.hits` and `.misses`
    count what happened.
    """

    def __init__(self, directory=None, enabled: bool = True):
        self.dir = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.enabled = enabled
        self.hits = self.misses = 0

    def path(self, bundle: ClipBundle, data_key: dict) -> Path:
        key = json.dumps({"model": model_fingerprint(bundle), "data": data_key}, sort_keys=True, default=str)
        return self.dir / f"{bundle.name.replace('/', '_')}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"

    def _read(self, path: Path) -> dict[str, torch.Tensor] | None:
        try:
            with safe_open(str(path), "pt") as f:
                expected = (f.metadata() or {}).get("sha256")
                out = {k: f.get_tensor(k) for k in f.keys()}
        except Exception:  # safetensors raises its own error types for damaged files
            return None
        return out if expected is not None and expected == tensors_checksum(out) else None

    def get(self, bundle: ClipBundle, data_key: dict, compute) -> dict[str, torch.Tensor]:
        if not self.enabled:
            self.misses += 1
            return compute()
        path = self.path(bundle, data_key)
        if path.is_file():
            out = self._read(path)
            if out is not None:
                self.hits += 1
                return out
            warnings.warn(f"feature cache entry {path} is damaged: recomputing it", stacklevel=2)
        self.misses += 1
        out = compute()
        if dist.is_main():
            try:
                save_tensors(path, out, {"sha256": tensors_checksum(out)})
            except OSError as e:
                if str(self.dir) not in _UNWRITABLE_WARNED:
                    _UNWRITABLE_WARNED.add(str(self.dir))
                    warnings.warn(
                        f"cannot write the feature cache in {self.dir} ({e.strerror or e}): going on without it "
                        "(set CLIPALN_CACHE to a writable folder, or pass --no-cache)",
                        stacklevel=2,
                    )
        return out
