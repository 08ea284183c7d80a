"""Encode images and texts once with a frozen CLIP; everything downstream works on features.

All embeddings returned here are L2-normalised float32 tensors on the CPU.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from . import distributed as dist
from .data.real import Subset
from .feature_cache import _SHARDS
from .feature_cache import FeatureCache as FeatureCache  # the cache's API, re-exported where it was
from .feature_cache import model_fingerprint as model_fingerprint
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


def zero_shot_texts(bundle: ClipBundle, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(K, d) zero-shot classifier of a prompt ensemble, made by open_clip's own
    build_zero_shot_classifier: each class's caption under every template ("a bad photo of a {}."),
    normalised, averaged and normalised again."""
    if not templates or not class_names:
        raise ValueError("a prompt ensemble needs at least one template and one class name")
    import open_clip  # here, not at the top: a command line that fails on its flags never loads it

    weights = open_clip.build_zero_shot_classifier(
        bundle.model, bundle.tokenizer, list(class_names), list(templates), device=bundle.device
    )
    return weights.T.float().cpu()  # (d, K) there, (K, d) as every clipaln text matrix


#: Precisions for encoding: "auto" is bf16 autocast on CUDA and fp32 elsewhere.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def default_workers() -> int:
    """DataLoader workers for image preprocessing: one per core but one, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def encoding_identity(bundle: ClipBundle, precision: str = "auto") -> dict[str, str]:
    """What changes the features a run trains on besides the weights and the data: the towers'
    activation, the image preprocessing (its transforms, sizes, interpolation, mean and std) and the
    precision the encoders run in on this device ("auto": bf16 on a GPU, fp32 on a CPU). A checkpoint
    pins these, so that a resume elsewhere (another device, another precision) is refused, not mixed."""
    preprocess = re.sub(r" at 0x[0-9a-f]+", "", repr(bundle.preprocess))  # no memory addresses
    return {
        "activation": bundle.activation or "",
        "preprocess": hashlib.sha256(preprocess.encode()).hexdigest()[:16],
        "precision": resolve_precision(precision, bundle.device),
    }


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision on a device, None for fp32 (no autocast)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision(precision, device))


#: On a CPU the image tower runs in slices of this many images: a convolutional tower's activations
#: then stay in cache. With channels-last, encoding the toy's 17,400 typographic images took 41 s
#: instead of 69 s on 2 cores (1.7x, end to end).
CPU_SLICE = 64


def _embed_images(bundle: ClipBundle, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Normalised float32 embeddings of a preprocessed batch, on the CPU. The input is channels-last
    (oneDNN's fast layout for convolutions; a transformer's patch embedding takes it as well)."""
    x = x.to(bundle.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    parts = x.split(CPU_SLICE) if bundle.device.type == "cpu" else (x,)
    with torch.autocast(bundle.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return torch.cat([F.normalize(bundle.model.encode_image(p).float(), dim=-1).cpu() for p in parts])


def _worker_errors_unwrapped(loader):
    """The loader's batches. An error in a DataLoader worker comes back wrapped ("Caught ValueError in
    DataLoader worker process 0. Original Traceback ..."), its message last: re-raised as that one line,
    so the error names the file that failed."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as e:
            text = str(e)
            if "unable to resize file" in text or ("No space left on device" in text and "shm" in text):
                # the workers pass batches through shared memory (/dev/shm), which a container may keep tiny
                raise RuntimeError(
                    "the data loader's workers ran out of shared memory (/dev/shm is full or small): "
                    "pass --workers 0 (workers=0), or give the container more shared memory (docker --shm-size)"
                ) from None
            if "in DataLoader worker process" not in text:
                raise
            last = [line for line in text.strip().splitlines() if line.strip()][-1]
            kind, _, message = last.partition(": ")
            message = message if kind.replace(".", "").isidentifier() and message else last
            try:
                error = type(e)(message)
            except Exception:
                error = RuntimeError(message)
            raise error from None
        yield batch


class Columns(torch.utils.data.Dataset):
    """The items of `base` (tuples), with the PIL images of `image_columns` preprocessed and the
    integers of `int_columns` kept: what a DataLoader worker returns."""

    def __init__(self, base, preprocess, image_columns: Sequence[int], int_columns: Sequence[int] = ()):
        self.base, self.preprocess = base, preprocess
        self.image_columns, self.int_columns = tuple(image_columns), tuple(int_columns)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        images = tuple(self.preprocess(item[c]) for c in self.image_columns)
        return images + tuple(torch.tensor(int(item[c])) for c in self.int_columns)


@torch.no_grad()
def encode_dataset(
    bundle: ClipBundle,
    dataset: Any,
    image_columns: Sequence[int] = (0,),
    int_columns: Sequence[int] = (),
    *,
    batch_size: int = 256,
    workers: int | None = None,
    precision: str = "auto",
    progress: bool = True,
    desc: str = "encode images",
    stats: dict | None = None,
) -> list[torch.Tensor]:
    """Stream a dataset of tuples through the image encoder, batch by batch: images are loaded and
    preprocessed by DataLoader workers (none for a single batch; pinned memory on CUDA) and only the
    embeddings are kept, so memory does not grow with the number of images. Returns one (N, d)
    normalised embedding tensor per image column, then one (N,) tensor per int column.

    Under torchrun each rank encodes its shard and the rows are gathered. `stats`, when given,
    receives "wait_s" (time the model waited for data), "total_s" and "images"."""
    n = len(dataset)
    if n == 0:
        raise ValueError("encode_dataset got no images")
    shards = _SHARDS.get()
    if shards is not None and not dist.active():  # a cache entry in the making: written shard by shard
        _SHARDS.set(None)
        try:
            encode = lambda part: encode_dataset(
                bundle, part, image_columns, int_columns, batch_size=batch_size, workers=workers,
                precision=precision, progress=progress, desc=desc, stats=stats,
            )  # fmt: skip
            return shards.encode(dataset, encode, (tuple(image_columns), tuple(int_columns)))
        finally:
            _SHARDS.set(shards)
    if dist.active() and n >= dist.world():
        idx = dist.shard_indices(n)
        with dist.suspended():
            local = encode_dataset(
                bundle,
                Subset(dataset, idx),
                image_columns,
                int_columns,
                batch_size=batch_size,
                workers=workers,
                precision=precision,
                progress=progress and dist.is_main(),
                desc=desc,
                stats=stats,
            )
        return [dist.gather_rows(x.to(bundle.device), n).cpu() for x in local]
    device = bundle.device
    dtype = autocast_dtype(precision, device)
    workers = default_workers() if workers is None else workers
    if n <= batch_size:  # one batch: a worker would overlap nothing with the model and only add its start (~0.3 s)
        workers = 0
    if workers:
        # An earlier loader's iterator that only the garbage collector frees would be copied into the
        # new workers when they fork, and its __del__ would run there, printing "Exception ignored ...
        # can only test a child process" tracebacks. Measured in a kernel with progress bars on
        # (tests/test_notebooks_cold.py): collecting here, in the parent, removes them.
        gc.collect()
    loader = torch.utils.data.DataLoader(
        Columns(dataset, bundle.preprocess, image_columns, int_columns),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    k = len(image_columns)
    # the outputs are allocated once, at full size, and filled batch by batch: many small long-lived
    # tensors between the transient image buffers would fragment the heap, and memory would creep
    # with the number of images when the main process also renders them (workers=0)
    outs: list[torch.Tensor] = []
    wait, row = 0.0, 0
    started = tick = time.perf_counter()
    for batch in tqdm(
        _worker_errors_unwrapped(loader),
        desc=desc,
        unit="batch",
        total=len(loader),
        disable=not progress or len(loader) < 2,
    ):
        wait += time.perf_counter() - tick
        x = torch.cat(batch[:k])  # (k b, 3, H, W): one pass for every column
        emb = _embed_images(bundle, x, dtype)
        parts = list(emb.chunk(k)) + list(batch[k:])
        if not outs:
            outs = [torch.empty((n, *p.shape[1:]), dtype=p.dtype) for p in parts]
        b = len(parts[0])
        for out, part in zip(outs, parts):
            out[row : row + b] = part
        row += b
        del x, emb, parts, batch
        tick = time.perf_counter()
    if row != n:
        raise RuntimeError(f"the data loader gave {row} items where the dataset has {n}")
    if stats is not None:
        stats.update(wait_s=wait, total_s=time.perf_counter() - started, images=n * k)
    return outs


class PreprocessedView:
    """Images of one column of a dataset, preprocessed only when a batch asks for them:
    view[idx] -> (len(idx), 3, H, W). Full fine-tuning indexes it like a tensor, so memory holds
    one batch, not the dataset; `workers` threads render and preprocess a batch."""

    def __init__(self, dataset, column: int, preprocess, workers: int | None = None):
        self.dataset, self.column, self.preprocess = dataset, column, preprocess
        self.workers = default_workers() if workers is None else workers
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def row(self, i: int) -> torch.Tensor:
        """Image i, preprocessed: (3, H, W)."""
        return self.preprocess(self.dataset[i][self.column])

    def __getitem__(self, idx) -> torch.Tensor:
        idx = [int(i) for i in idx]
        if self.workers > 0 and len(idx) > 1:
            if self._pool is None:  # one pool for the whole training run, not one per batch
                self._pool = ThreadPoolExecutor(self.workers)
            return torch.stack(list(self._pool.map(self.row, idx)))
        return torch.stack([self.row(i) for i in idx])


class _Singles:
    """A list of images as a dataset of 1-tuples."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return (self.images[i],)


@torch.no_grad()
def encode_images(
    bundle: ClipBundle,
    images: Sequence[Image.Image] | torch.Tensor,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "encode images",
    precision: str = "auto",
) -> torch.Tensor:
    """(N, d) normalised image embeddings of a list of PIL images (in memory: no workers) or of a
    preprocessed (N, 3, H, W) batch. Under torchrun each rank encodes its shard."""
    if type(images).__module__.startswith("numpy"):
        raise ValueError(
            "encode_images takes PIL images or a preprocessed torch tensor, not a numpy array: "
            "[PIL.Image.fromarray(a) for a in arrays] converts uint8 (H, W, 3) images"
        )
    if isinstance(images, torch.Tensor) and (images.ndim != 4 or not images.is_floating_point()):
        raise ValueError(
            f"a tensor of images must be preprocessed floats (N, 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if not isinstance(images, torch.Tensor):
        images = list(images)
        if not images:
            raise ValueError("encode_images got no images")
        return encode_dataset(
            bundle,
            _Singles(images),
            batch_size=batch_size,
            workers=0,
            precision=precision,
            progress=progress,
            desc=desc,
        )[0]
    if len(images) == 0:
        raise ValueError("encode_images got no images")
    if dist.active() and len(images) >= dist.world():
        with dist.suspended():
            out = encode_images(bundle, images[dist.shard_indices(len(images))], batch_size, progress, desc, precision)
        return dist.gather_rows(out.to(bundle.device), len(images)).cpu()
    dtype = autocast_dtype(precision, bundle.device)
    out = []
    batches = images.split(batch_size)
    for x in tqdm(batches, desc=desc, unit="batch", disable=not progress or len(batches) < 2):
        out.append(_embed_images(bundle, x, dtype))
    return torch.cat(out)
