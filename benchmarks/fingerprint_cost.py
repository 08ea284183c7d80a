"""What the data's identity costs at ImageNet scale: files_fingerprint on a synthetic tree of N small
files (default 1,000,000 of 2 KiB in 1,000 class folders), in its default mode (relative paths and
sizes of every file, every byte of one file in 256) and with --full-hash (every byte), beside the
stat-only hash of the files' paths, sizes and times. Reports seconds, the share of the bytes each
mode read, and whether it was computed once (a second call is timed too).

    python benchmarks/fingerprint_cost.py [--n 1000000] [--kib 2] [--full-up-to 100000] \
        [--out benchmarks/results/fingerprint.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from clipaln.data import fingerprint


def stat_only(root: Path) -> str:
    """Relative path, size and mtime of every file: what reading no byte at all costs."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return round(time.perf_counter() - start, 2), value


def measure(root: Path, total_bytes: int, full: bool) -> dict:
    read: list[int] = []  # list.append is atomic under the GIL; += on a shared int from threads is not
    original = fingerprint._sha256

    def counting(path):
        read.append(os.path.getsize(path))
        return original(path)

    fingerprint._sha256, fingerprint._DIGESTS = counting, {}
    try:
        seconds, value = timed(lambda: fingerprint.files_fingerprint(root, full=full))
    finally:
        fingerprint._sha256 = original
    return {
        "s": seconds,
        "bytes_read_share": round(sum(read) / total_bytes, 5),
        "files_read": len(read),
        "fingerprint": value,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--kib", type=int, default=2)
    ap.add_argument("--full-up-to", type=int, default=100_000, help="time --full-hash on the first this many")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        payload = os.urandom(a.kib * 1024)
        start = time.perf_counter()
        for i in range(a.n):  # 1,000 class folders, as ImageNet lays out its training set
            folder = root / f"class_{i % 1000:04d}"
            if i < 1000:
                folder.mkdir(parents=True)
            (folder / f"{i}.jpg").write_bytes(payload[: -1 - i % 7] + bytes([i % 251]))
        made_s = round(time.perf_counter() - start, 1)
        total = sum(len(payload) - i % 7 for i in range(a.n))
        stat_s, _ = timed(lambda: stat_only(root))
        default = measure(root, total, full=False)
        again_s, again = timed(lambda: fingerprint.files_fingerprint(root, full=False))
        part = Path(tmp) / "part"  # --full-hash on a tenth of the tree (it reads every byte)
        part.mkdir()
        for folder in sorted(root.iterdir())[: max(1, 1000 * a.full_up_to // a.n)]:
            os.symlink(folder, part / folder.name)
        sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(part, followlinks=True) for f in fs]
        full = measure(part, sum(sizes), full=True)
        full["files"] = len(sizes)
    result = {
        "files": a.n,
        "kib_each": a.kib,
        "gib": round(total / 2**30, 2),
        "made_in_s": made_s,
        "stat_only_s": stat_s,
        "default": default,
        "default_again_s": again_s,
        "default_same_again": again == default["fingerprint"],
        "full_hash_on_part": full,
        "cores": os.cpu_count(),
        "note": "page cache warm (the files were just written); default: paths and sizes of all, every byte of 1 in "
        f"{fingerprint.SAMPLE_ONE_IN} files",
    }
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
