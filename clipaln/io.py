"""Atomic writes: a file is either the old version or the complete new one, never half."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from safetensors import SafetensorError


def read_text(path: str | Path) -> str:
    """A text file the user gave (CSV, JSONL, config) as UTF-8, a spreadsheet's BOM dropped; one
    ValueError naming the file, the byte and the fix when it is in another encoding (Latin-1, say)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}): save it as UTF-8 "
            "(a spreadsheet's 'CSV UTF-8'; iconv -f latin1 -t utf-8 converts a Latin-1 file)"
        ) from None


def print_json(obj: Any) -> None:
    """A result on stdout as JSON, one line when piped; NaN or infinity is one ValueError, never `NaN` in the output."""
    try:
        text = json.dumps(obj, indent=None if not sys.stdout.isatty() else 1, allow_nan=False)
    except ValueError:
        raise ValueError("a result is NaN or infinite (is |t| too large?); nothing printed") from None
    print(text)


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:  # Ctrl-C and SIGTERM too: never leave a half-written .tmp behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """JSON without NaN or inf (a ValueError names the problem instead of writing invalid JSON)."""
    try:
        text = json.dumps(obj, indent=1, default=float, allow_nan=False)
    except ValueError:
        raise ValueError(f"refusing to write {path}: a value is NaN or infinite") from None
    return write_text(path, text + "\n")


def append_json_line(path: str | Path, obj: Any) -> None:
    """One JSON line appended to `path` and on disk when this returns (a log that a crash keeps)."""
    try:
        text = json.dumps(obj, default=float, allow_nan=False)
    except ValueError:
        raise ValueError(f"refusing to write to {path}: a value is NaN or infinite") from None
    with open(path, "a", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


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
        os.chmod(tmp, 0o644 & ~_umask())  # safetensors writes 0600; weights are as readable as their JSON
        tmp.replace(path)
    except SafetensorError as e:  # a full or read-only disk: safetensors' own error type, an OSError here
        tmp.unlink(missing_ok=True)
        raise OSError(
            f"cannot write {path}: {str(e).strip().splitlines()[0] if str(e).strip() else 'I/O error'}"
        ) from None
    except BaseException:  # Ctrl-C and SIGTERM too: never leave a half-written .tmp behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
