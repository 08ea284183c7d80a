"""What a user's own files are, by content: an image is its decoded pixels (two files with the same
pixels are one image, whatever their names or bytes), and a CSV's header names each column once."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

from .real import _open_image


def image_identity(path: Path) -> str:
    """The sha256 of the image's decoded pixels (8-bit RGB, as the model reads it) and their size:
    re-encoded, renamed or re-saved with other metadata, an image keeps its identity. Decoded once
    per process for a file of the same size and modification time (train, then eval's checks)."""
    path = Path(path).resolve()
    st = path.stat()
    return _identity(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=65536)
def _identity(path: str, size: int, mtime_ns: int) -> str:
    im = _open_image(Path(path))
    h = hashlib.sha256(f"{im.width}x{im.height}:".encode())
    h.update(im.tobytes())
    return h.hexdigest()


def group_by_content(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """{identity: [paths with those pixels, sorted]}, in order of each group's first path."""
    groups: dict[str, list[Path]] = {}
    for p in sorted(set(paths)):
        groups.setdefault(image_identity(p), []).append(p)
    return groups


def read_csv_rows(path: Path, text: str, columns: Sequence[str], optional: Sequence[str] = ()) -> list[dict]:
    """The rows of a CSV whose header must name each of `columns` once, and nothing but them and
    `optional`: a duplicated, missing or unknown column is one line naming it (csv.DictReader would
    silently read the last of two columns of one name)."""
    header = next(csv.reader(io.StringIO(text, newline="")), [])
    names = [h.strip() for h in header]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{path}: the column {', '.join(twice)} appears twice in the header: keep one")
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{path}: the header lacks the column(s) {', '.join(missing)} (it needs {', '.join(columns)})")
    unknown = [n for n in names if n not in (*columns, *optional)]
    if unknown:
        raise ValueError(
            f"{path}: unknown column(s) {', '.join(repr(n) for n in unknown)} in the header "
            f"(the columns are {', '.join(columns)}): rename or remove them"
        )
    reader = csv.DictReader(io.StringIO(text, newline=""), fieldnames=names)
    next(reader)  # the header
    return list(reader)
