"""The real path on the first GPU it meets, in one command within 8 minutes: ViT-B/32 encoding
(images/s), W's fit at ImageNet-1k's shape (steps/s), a full fine-tuning step with its data loading
(DataLoader workers, s/step) and notebook 05 end to end, on a random-init ViT-B-32 saved as a local
file laid out as OpenAI's weights are on the hub (so it loads with QuickGELU) and a synthetic
Oxford-IIIT Pets folder (no network needed: the weights do not change a timing). Writes benchmarks/results/gpu.json.

    python benchmarks/gpu_check.py                       # on a GPU machine
    python benchmarks/gpu_check.py --dry-run --out X     # every part, tiny, on the CPU (CI runs it)

Each part is timed on its own and an error in one is recorded in its place, so one failure does not
lose the others' numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "gpu.json"
SIZES = {  # (on a GPU, in --dry-run on the CPU)
    "encode_images": (8192, 16),
    "w_fit_steps": (100, 3),
    "finetune_images": (1024, 8),
    "finetune_batch": (256, 4),
    "pets_per_breed": (60, 4),
}


def size(name: str, dry: bool) -> int:
    return SIZES[name][1 if dry else 0]


def encode(device: str, dry: bool) -> dict:
    from clipaln.bench import encode_once

    workers = 0 if dry else min(8, os.cpu_count() or 1)
    return encode_once("ViT-B-32", size("encode_images", dry), workers, device, batch_size=256 if not dry else 8)


def w_fit(device: str, dry: bool) -> dict:
    from clipaln.bench.timing import w_fit_speed

    out = w_fit_speed(device, steps=size("w_fit_steps", dry))
    steps = 30 * 1_281_167 // 256  # 30 epochs of ImageNet-1k at batch 256
    out["imagenet_1k_30_epochs_h"] = round(steps / out["steps_per_s"] / 3600, 2)
    return out


def _folder(root: Path, classes: int, per_class: int) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (torch.rand(256, 256, 3, generator=g) * 255).byte().numpy()
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.jpg", quality=90)
    return root


def finetune_step(device: str, dry: bool, work: Path) -> dict:
    from clipaln.models import load_clip
    from clipaln.tracks import typographic

    n, batch = size("finetune_images", dry), size("finetune_batch", dry)
    root = _folder(work / "ft", 8, n // 8 + 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = load_clip("ViT-B-32", device=device)
    spec = typographic.real_spec("folder", str(root), n_train=n, n_test=8, seed=0)
    workers = 0 if dry else min(8, os.cpu_count() or 1)
    feats = typographic.build_features(bundle, spec, progress=False, workers=workers)
    cfg = typographic.train_config("dpo", lr=2e-5, epochs=1, batch_size=batch, bma=True)
    start = time.perf_counter()
    _, hist = typographic.finetune(bundle, spec, cfg, progress=False, feats=feats, workers=workers)
    total = time.perf_counter() - start
    elapsed = hist["elapsed_s"]
    steady = (elapsed[-1] - elapsed[0]) / max(1, len(elapsed) - 1)  # after the first step (start-up, workers)
    return {
        "model": "ViT-B-32",
        "batch": batch,
        "steps": len(elapsed),
        "s_per_step": round(steady, 3),
        "images_per_s": round(2 * batch / steady, 1) if steady > 0 else None,  # D_pref and D_reg images
        "total_s": round(total, 1),
        "workers": workers,
        "bf16": device.startswith("cuda"),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
    }


def _pets(root: Path, per_breed: int) -> Path:
    """Oxford-IIIT Pets as torchvision reads it: images/ and annotations/{trainval,test}.txt."""
    from PIL import Image

    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    (base / "images").mkdir()
    breeds = ["Abyssinian", "american_bulldog", "Bengal", "beagle"]
    g = torch.Generator().manual_seed(1)
    for split, offset in (("trainval", 0), ("test", 10_000)):
        lines = []
        for label, breed in enumerate(breeds, start=1):
            for i in range(per_breed):
                image_id = f"{breed}_{offset + i}"
                pixels = (torch.rand(200, 240, 3, generator=g) * 255).byte().numpy()
                Image.fromarray(pixels).save(base / "images" / f"{image_id}.jpg")
                lines.append(f"{image_id} {label} {1 + breed[0].isupper()} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def notebook_05(dry: bool, work: Path) -> dict:
    """Notebook 05 top to bottom in a kernel, its one setting pointed at a local ViT-B-32 file."""
    if dry:
        return {"skipped": "--dry-run: CI runs notebook 05 with nbval (the toy fallback on a CPU)"}
    import nbformat
    import open_clip
    from nbclient import NotebookClient
    from safetensors.torch import save_file

    weights = work / "vit_base_patch32_clip_224.openai" / "open_clip_model.safetensors"  # read as the tag's
    weights.parent.mkdir()
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    pets = _pets(work / "oxford_pets", size("pets_per_breed", dry))
    path = Path(__file__).parents[1] / "notebooks" / "05_real_clip_on_a_gpu.ipynb"
    nb = nbformat.read(path, as_version=4)
    setup = next(c for c in nb.cells if c.cell_type == "code" and "REAL_WEIGHTS" in c.source)
    setup.source = setup.source.replace('"openai"', repr(str(weights)), 1).replace(
        'os.path.expanduser("~/data/oxford_pets")', repr(str(pets)), 1
    )
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    fallback = any("FALLBACK" in o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    return {"seconds": round(time.perf_counter() - start, 1), "errors": len(errors), "fell_back_to_toy": fallback}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="every part, tiny, on the CPU")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = "cpu" if a.dry_run else ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        raise SystemExit("gpu_check: no CUDA device here (pass --dry-run to check the script on the CPU)")
    started = time.perf_counter()
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "dry_run": a.dry_run,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        parts = (
            ("encode_vit_b_32", lambda: encode(device, a.dry_run)),
            ("w_fit", lambda: w_fit(device, a.dry_run)),
            ("full_finetuning_step", lambda: finetune_step(device, a.dry_run, Path(tmp))),
            ("notebook_05", lambda: notebook_05(a.dry_run, Path(tmp))),
        )
        for name, part in parts:
            t0 = time.perf_counter()
            try:
                result[name] = part()
            except Exception as e:  # recorded in its place: the other parts' numbers still count
                result[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
            result[name]["part_s"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {json.dumps(result[name])[:300]}", flush=True)
    result["total_s"] = round(time.perf_counter() - started, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out} ({result['total_s']} s)")
    if any("error" in v for v in result.values() if isinstance(v, dict)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
