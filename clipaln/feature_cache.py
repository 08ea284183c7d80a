"""The on-disk feature cache: tensors computed once per model + data + preprocessing, stored as
safetensors (atomically, checksummed), and the shards a long encode writes as it goes, so that a
killed encode resumes where it stopped."""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from safetensors import safe_open

from . import distributed as dist
from .data.real import Subset
from .io import save_tensors
from .models import ClipBundle


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


class Shards:
    """Where encode_dataset writes a cache entry's features as it goes: every `rows` rows of each
    encoding call (in the order the entry's compute makes them) in one checksummed safetensors file,
    so that a killed encode, run again, reads the shards it finished and encodes the rest. Each rank
    under torchrun keeps its own."""

    def __init__(self, folder: Path, rows: int):
        self.folder, self.rows, self.calls = folder, rows, 0

    def encode(self, dataset: Any, encode: Callable[[Any], list[torch.Tensor]], columns: tuple) -> list[torch.Tensor]:
        n, call = len(dataset), self.calls
        self.calls += 1
        rank, world = (tdist.get_rank(), tdist.get_world_size()) if tdist.is_initialized() else (0, 1)
        where = self.folder / f"call{call}-n{n}-{digest_of(columns)}-rank{rank}of{world}"  # the rank's own shard
        parts = []
        for start in range(0, n, self.rows):
            path = where / f"rows{start}.safetensors"
            stored = _read_checked(path) if path.is_file() else None
            if stored is None:
                out = encode(Subset(dataset, range(start, min(n, start + self.rows))))
                stored = {str(i): t for i, t in enumerate(out)}
                try:
                    save_tensors(path, stored, {"sha256": tensors_checksum(stored)})
                except OSError:
                    pass  # an unwritable cache: FeatureCache.get says so once
            parts.append([stored[str(i)] for i in range(len(stored))])
        return [torch.cat(column) for column in zip(*parts)]


def digest_of(value: object) -> str:
    """A short hash of a value's repr (names a shard folder by what was encoded)."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:8]


def _read_checked(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a checksummed safetensors file, or None when it is damaged."""
    try:
        with safe_open(str(path), "pt") as f:
            expected = (f.metadata() or {}).get("sha256")
            out = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # safetensors raises its own error types for damaged files
        return None
    return out if expected is not None and expected == tensors_checksum(out) else None


#: the shards of the cache entry being computed (FeatureCache.get), read by encode_dataset
_SHARDS: contextvars.ContextVar[Shards | None] = contextvars.ContextVar("clipaln_shards", default=None)


class FeatureCache:
    """Tensors computed once and stored as safetensors, keyed by model + data + preprocessing.

    ``get(bundle, data_key, compute)`` returns the stored tensors when the key was seen before and
    otherwise calls compute() -> dict[str, Tensor], writes the result atomically (temp file + rename,
    so an interrupted run never leaves a half file) and returns it. Each entry carries a checksum of
    its tensors: a damaged entry is recomputed, never trusted. While compute() runs, encode_dataset
    writes what it encodes in shards of ``shard_rows`` rows beside the entry, so a killed encode
    resumes where it stopped. A folder that cannot be written warns once and the run goes on without
    storing. ``.hits`` and ``.misses`` count what happened.

    Args:
        directory: the cache folder (None: $CLIPALN_CACHE, else ~/.cache/clipaln).
        enabled: False computes every time and stores nothing.
        shard_rows: rows per shard of an encode in progress.
    """

    def __init__(self, directory=None, enabled: bool = True, shard_rows: int = 8192):
        self.dir = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.enabled = enabled
        self.shard_rows = shard_rows
        self.hits = self.misses = 0

    def path(self, bundle: ClipBundle, data_key: dict) -> Path:
        key = json.dumps({"model": model_fingerprint(bundle), "data": data_key}, sort_keys=True, default=str)
        return self.dir / f"{bundle.name.replace('/', '_')}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"

    def _read(self, path: Path) -> dict[str, torch.Tensor] | None:
        return _read_checked(path)

    def get(
        self,
        bundle: ClipBundle,
        data_key: dict,
        compute: Callable[[], dict[str, torch.Tensor]],
        superset: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """The tensors of (model, data_key): read when stored, else computed and stored.

        Args:
            bundle: the model; its weights' fingerprint is part of the key.
            data_key: what defines the data (a spec's key, with the track's own entries).
            compute: () -> {name: tensor}, called on a miss.
            superset: the key of an entry that holds every tensor this one would (a training run's
                features, for an eval that needs only the test split): read instead when it is stored.

        Returns:
            dict[str, torch.Tensor]: the tensors, on the CPU.
        """
        if not self.enabled:
            self.misses += 1
            return compute()
        if superset is not None and self.path(bundle, superset).is_file():
            out = self._read(self.path(bundle, superset))
            if out is not None:
                self.hits += 1
                return out
        path = self.path(bundle, data_key)
        if path.is_file():
            out = self._read(path)
            if out is not None:
                self.hits += 1
                return out
            warnings.warn(f"feature cache entry {path} is damaged: recomputing it", stacklevel=2)
        self.misses += 1
        shards = path.with_name(path.stem + ".shards")  # what a killed compute had encoded
        token = _SHARDS.set(Shards(shards, self.shard_rows))
        try:
            out = compute()
        finally:
            _SHARDS.reset(token)
        if dist.is_main():
            try:
                save_tensors(path, out, {"sha256": tensors_checksum(out)})
                shutil.rmtree(shards, ignore_errors=True)
            except OSError as e:
                if str(self.dir) not in _UNWRITABLE_WARNED:
                    _UNWRITABLE_WARNED.add(str(self.dir))
                    warnings.warn(
                        f"cannot write the feature cache in {self.dir} ({e.strerror or e}): going on without it "
                        "(set CLIPALN_CACHE to a writable folder, or pass --no-cache)",
                        stacklevel=2,
                    )
        return out
