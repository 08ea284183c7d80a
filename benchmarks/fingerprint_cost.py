"""What it costs for the data's identity to follow its bytes: files_fingerprint on a folder of N
files (default 100,000 of 8 KiB, the size of a small JPEG), the first call (every byte read and
hashed) and a second call in the same process (memoised by stat), beside the old stat-only hash.

    python benchmarks/fingerprint_cost.py [--n 100000] [--kib 8] [--out benchmarks/results/fingerprint.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from clipaln.data.real import files_fingerprint


def stat_only(root: Path) -> str:
    """The fingerprint before issue #21: relative path, size and mtime (blind to swapped bytes)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--kib", type=int, default=8)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        payload = os.urandom(a.kib * 1024)
        for i in range(a.n):  # 100 class folders, as an ImageNet-100 layout would have
            folder = root / f"class_{i % 100:03d}"
            folder.mkdir(exist_ok=True)
            (folder / f"{i}.jpg").write_bytes(payload[: -1 - i % 7] + bytes([i % 251]))
        timings = {}
        for name, fn in (("stat_only_s", lambda: stat_only(root)), ("content_first_s", lambda: files_fingerprint(root)),
                         ("content_memoised_s", lambda: files_fingerprint(root))):  # fmt: skip
            start = time.perf_counter()
            fn()
            timings[name] = round(time.perf_counter() - start, 2)
    result = {
        "files": a.n,
        "kib_each": a.kib,
        "gib": round(a.n * a.kib / 2**20, 2),
        **timings,
        "cores": os.cpu_count(),
        "note": "first call reads and hashes every byte (page cache warm: the files were just written)",
    }
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
