"""Atomic writes: a file is either the old version or the complete new one, never half."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def write_json(path: str | Path, obj) -> Path:
    """JSON without NaN or inf (a ValueError names the problem instead of writing invalid JSON)."""
    try:
        text = json.dumps(obj, indent=1, default=float, allow_nan=False)
    except ValueError:
        raise ValueError(f"refusing to write {path}: a value is NaN or infinite") from None
    return write_text(path, text + "\n")


def save_tensors(path: str | Path, tensors: dict, metadata: dict | None = None) -> Path:
    """Write tensors as safetensors, atomically (temp file + rename); metadata values as strings."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={k: str(v) for k, v in (metadata or {}).items()} or None,
        )
    except SafetensorError as e:  # a full or read-only disk: safetensors' own error type, an OSError here
        tmp.unlink(missing_ok=True)
        raise OSError(
            f"cannot write {path}: {str(e).strip().splitlines()[0] if str(e).strip() else 'I/O error'}"
        ) from None
    tmp.replace(path)
    return path
