"""What a dataset is, by content: a fingerprint of the files under a folder (paths, sizes, and the
bytes of a sample, or of every file with --full-hash) or of the files a list names, and the sha256 of
one file, memoised per process."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch.distributed as torch_dist

from .. import distributed as dist

#: sha256 of a file's bytes, memoised per process by what the file system says of it (path, size,
#: modification and change times, inode): a swap, a rewrite or a re-extraction changes one of those.
_DIGESTS: dict[tuple, str] = {}


def _stat_key(path) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of the file's bytes: the data's identity follows its content, not its name or times."""
    return _digests([Path(path)])[0]


def _digests(paths: list[Path]) -> list[str]:
    keys = [_stat_key(p) for p in paths]
    missing = [(p, k) for p, k in zip(paths, keys) if k not in _DIGESTS]
    if missing:
        with ThreadPoolExecutor(max_workers=8) as pool:  # reading is the cost; sha256 releases the GIL
            for (_, k), digest in zip(missing, pool.map(_sha256, [p for p, _ in missing])):
                _DIGESTS[k] = digest
    return [_DIGESTS[k] for k in keys]


#: The default fingerprint hashes every byte of one file in this many, chosen by its relative path.
SAMPLE_ONE_IN = 256
#: Set to 1 to hash every byte of every file (what `--full-hash` sets).
FULL_HASH_ENV = "CLIPALN_FULL_HASH"


def full_hash() -> bool:
    """Whether fingerprints read every byte (CLIPALN_FULL_HASH=1, --full-hash) or sample."""
    return os.environ.get(FULL_HASH_ENV, "").lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def hashing_in_full(setting: bool | None) -> Iterator[None]:
    """Within the block, full_hash() is `setting` (None: as it was)."""
    before = os.environ.get(FULL_HASH_ENV)
    if setting is not None:
        os.environ[FULL_HASH_ENV] = "1" if setting else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FULL_HASH_ENV, None)
        else:
            os.environ[FULL_HASH_ENV] = before


def _walk(root: Path) -> list[tuple[str, int, Path]]:
    """(relative path, size, path) of every file under root, in a stable order; a folder linked into
    itself is walked once."""
    files: list[tuple[str, int, Path]] = []
    stack = [root]
    seen = {(root.stat().st_dev, root.stat().st_ino)}
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.is_dir(follow_symlinks=True):
                st = os.stat(e.path)
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    stack.append(Path(e.path))
            elif e.is_file(follow_symlinks=True):
                path = Path(e.path)
                files.append((path.relative_to(root).as_posix(), e.stat(follow_symlinks=True).st_size, path))
    return files


def _sampled(relative: str) -> bool:
    return int(hashlib.sha256(relative.encode()).hexdigest()[:8], 16) % SAMPLE_ONE_IN == 0


def files_fingerprint(root: str | Path, full: bool | None = None) -> str:
    """The identity of the files under root, independent of where root is (a copy elsewhere has the
    same): every file's relative path and size, and the sha256 of every byte of a sample of the files
    (one in SAMPLE_ONE_IN, chosen by relative path; at least 8). Adding, removing, renaming or moving a
    file, or changing its size, changes it; so does any edit of a sampled file. full (default: the
    CLIPALN_FULL_HASH setting, `--full-hash`): hash every byte of every file, which also sees a
    same-size edit of any file, at the cost of reading the whole dataset (100,000 files of 8 KiB:
    16.7 s on 2 cores). Under torchrun rank 0 computes it and the others receive it.
    The result names its mode ("sampled:..." or "content:..."); benchmarks/fingerprint_cost.py
    measures both."""
    full = full_hash() if full is None else full
    if dist.active():  # read once per run, not once per rank
        result = [None]
        if dist.is_main():
            with dist.suspended():
                result = [files_fingerprint(root, full)]
        torch_dist.broadcast_object_list(result, src=0)
        return result[0]
    root = Path(root)
    files = _walk(root)
    h = hashlib.sha256(b"content" if full else b"sampled")
    for relative, size, _ in files:
        h.update(f"{relative}\0{size}\n".encode())
    chosen = files if full else [f for f in files if _sampled(f[0])]
    if not full and len(chosen) < min(8, len(files)):  # a small folder: its first files by path hash
        ranked = sorted(files, key=lambda f: hashlib.sha256(f[0].encode()).hexdigest())
        chosen = sorted({*chosen, *ranked[:8]})
    for (relative, _, _), digest in zip(chosen, _digests([f[2] for f in chosen])):
        h.update(f"{relative}\0{digest}\n".encode())
    return ("content:" if full else "sampled:") + h.hexdigest()[:16]


def paths_fingerprint(paths: Iterable[str | Path]) -> str:
    """A hash of the listed files, for datasets that list their images (a CSV, a pairs file) rather
    than own a folder: each file's path relative to the first one's folder (the list file's: a copy of
    the whole elsewhere has the same) and the sha256 of its bytes."""
    resolved = [Path(p).resolve() for p in paths]
    base = resolved[0].parent if resolved else Path("/")
    h = hashlib.sha256()
    for p, digest in zip(resolved, _digests(resolved)):
        h.update(f"{os.path.relpath(p, base)}\0{digest}\n".encode())
    return h.hexdigest()[:16]
