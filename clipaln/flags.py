"""The command line's flags, each listed once: (flag, argparse keywords) tables by command, and the
argparse types that check a value as it is typed (one line for a bad one). clipaln.commands builds
its parser from them."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

from . import losses
from .config import SCHEDULER_TYPES
from .features import PRECISIONS
from .parsing import count
from .reporting import REPORTERS

#: train's flags that set a TrainConfig field, by their dest.
OVERRIDE_FLAGS = ("beta", "lam", "epochs", "lr", "batch_size", "orth", "warmup_ratio", "label_smoothing", "seed")
OVERRIDE_FLAGS += (  # TRL's names, with TRL's meaning (TrainConfig)
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "weight_decay",
    "lr_scheduler_type",
)


#: The fewest images `eval toy` judges its calibration targets on: two per object class, so that no
#: class's rate is read from one image.
MIN_TOY_N = 24
#: eval flags that only eval typographic / gender use.
TRACK_ONLY_FLAGS = (
    "--projection",
    "--image-encoder",
    "--photos",
    "--t",
    "--root",
    "--n-train",
    "--n-test",
    "--allow-other-data",
    "--allow-other-weights",
    "--choose-t",
    "--download",
    "--reg-images",
    "--workers",
    "--no-cache",
)


def method_name(name: str) -> str:
    """A registered loss's name (one line naming the methods, and a plugin that failed to load, if not)."""
    try:
        losses.method(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def seed_list(x: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in x.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {x}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"must be distinct integers, got {x}")
    return seeds


def number(low: float | None = None, strict: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float, optionally > low (strict) or >= low."""

    def finite_number(x: str) -> float:
        try:
            v = float(x)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {x!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {x}")
        if low is not None and (v <= low if strict else v < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {x}")
        return v

    return finite_number


#: The model and data flags every track command shares: (flag, argparse keywords); --model and --seed,
#: whose defaults differ between train and eval, are added by _add_model_args.
MODEL_FLAGS = (
    ("--pretrained", dict(default=None, help="open_clip tag (openai) or a local checkpoint file")),
    (
        "--dataset",
        dict(
            default=None,
            help="toy (default for --model toy), a registry name (food101, imagenet100, ...), folder, or people",
        ),
    ),
    ("--root", dict(default=None, help="dataset folder")),
    (
        "--pairs",
        dict(dest="root", metavar="FILE", help="train/eval pairs: a .csv or .jsonl of image, chosen, rejected"),
    ),
    ("--reg-images", dict(default=None, help="pairs: a folder of images for D_reg (default: the pairs')")),
    ("--download", dict(action="store_true", help="let torchvision download the dataset")),
    (
        "--full-hash",
        dict(action="store_true", help="fingerprint the data by every byte (default: sizes and a sample)"),
    ),
    ("--n-train", dict(type=count(1), default=None, help="training images (default: the track's)")),
    ("--n-test", dict(type=count(1), default=None, help="test images (default: the track's)")),
    ("--device", dict(default=None)),
    ("--no-cache", dict(action="store_true", help="do not read or write the feature cache")),
    ("--quiet", dict(action="store_true", help="no progress bars (logs, batch jobs, notebooks)")),
    ("--workers", dict(type=count(0), default=None, help="DataLoader workers (default: cores - 1, at most 8)")),
    (
        "--precision",
        dict(choices=list(PRECISIONS), default="auto", help="encoding: auto (bf16 on CUDA, else fp32)"),
    ),
)


def add_flags(p: argparse.ArgumentParser, table: Sequence[tuple[str, dict]]) -> None:
    for flag, keywords in table:
        p.add_argument(flag, **keywords)


def add_model_args(p: argparse.ArgumentParser, seed_default: int | None = 0, model_default: str | None = "toy") -> None:
    p.add_argument(
        "--model",
        default=model_default,
        help="'toy' or an open_clip model name such as ViT-B-32" + ("" if model_default else " (eval: the run's)"),
    )
    p.add_argument(
        "--seed",
        type=int,
        default=seed_default,
        help="the data's seed; in train also the training seed (a --config seed sets only that); eval: the run's",
    )
    add_flags(p, MODEL_FLAGS)


#: train's flags beyond the model and data ones (--method is added apart: its choices include plugins).
TRAIN_FLAGS = (
    (
        "--data-seed",
        dict(type=int, default=None, help="the data's split and draws alone (default: --seed); --seed then trains"),
    ),
    ("--config", dict(default=None, help="a JSON or YAML file of TrainConfig fields; flags given win")),
    (
        "--val-share",
        dict(
            type=number(0),
            default=None,
            help="pairs: a share of the images held out to validate on (eval --split val)",
        ),
    ),
    ("--beta", dict(type=number(0, strict=True), default=None)),
    ("--lam", dict(type=number(0), default=None, help="weight lambda of the KL regulariser")),
    ("--epochs", dict(type=count(1), default=None)),
    ("--lr", dict(type=number(0, strict=True), default=None)),
    ("--batch-size", dict(type=count(1), default=None, help="global batch (split across torchrun ranks)")),
    ("--orth", dict(type=number(0), default=None, help="weight of the penalty ||W^T W - I||_F^2 / d (0: none)")),
    ("--no-bma", dict(action="store_true", help="keep the last iterate, not the Beta(0.7, 0.7) average")),
    ("--warmup-ratio", dict(type=number(0), default=None, help="share of steps with a linear warm-up (default 0.1)")),
    ("--label-smoothing", dict(type=number(0), default=None, help="cDPO's eps, the share of flipped pairs (0.1)")),
    (
        "--per-device-train-batch-size",
        dict(type=count(1), default=None, help="TRL's: per rank; global = this x ranks x accumulation steps"),
    ),
    ("--gradient-accumulation-steps", dict(type=count(1), default=None, help="micro-batches per step (TRL's)")),
    ("--max-grad-norm", dict(type=number(0, strict=True), default=None, help="clip the gradient norm (TRL's)")),
    ("--weight-decay", dict(type=number(0), default=None, help="Adamax's weight decay (default 0)")),
    ("--lr-scheduler-type", dict(choices=list(SCHEDULER_TYPES), default=None, help="after warm-up (cosine)")),
    (
        "--report-to",
        dict(
            nargs="+",
            choices=list(REPORTERS),
            default=None,
            help="also log every step to TensorBoard (OUT/tensorboard) and/or W&B, under TRL's metric names",
        ),
    ),
    (
        "--eval-every",
        dict(
            type=count(1),
            default=None,
            help="score W on the validation data every N steps (history, eval/ in TensorBoard)",
        ),
    ),
    ("--mode", dict(choices=["w", "full"], default="w", help="w: the shared W; full: fine-tune encoders")),
    ("--train-text", dict(action="store_true", help="with --mode full: train the text encoder too")),
    ("--lock-image", dict(action="store_true", help="with --mode full --train-text: keep the image tower frozen")),
    ("--lock-text", dict(action="store_true", help="with --mode full: keep the text tower frozen (the default)")),
    ("--out", dict(required=True, help="output folder")),
    (
        "--checkpoint-every",
        dict(type=count(0), default=None, help="checkpoint every N steps (default: W 20, full 200; 0: never)"),
    ),
    ("--resume", dict(action="store_true", help="continue the unfinished run in OUT.partial")),
    ("--overwrite", dict(action="store_true", help="replace an existing run in OUT")),
)


#: eval's flags beyond the model and data ones.
EVAL_FLAGS = (
    ("--allow-other-data", dict(action="store_true", help="score a projection on data it was not trained for")),
    (
        "--allow-other-weights",
        dict(action="store_true", help="score a projection with model weights it was not trained on"),
    ),
    ("--projection", dict(default=None, help="projection.safetensors from `clipaln train`")),
    (
        "--image-encoder",
        dict(default=None, help="model.safetensors from --mode full (or an image_encoder.safetensors)"),
    ),
    (
        "--photos",
        dict(default=None, help="eval typographic: a real photo set (annotation.json, or label=X_text=Y.jpg)"),
    ),
    (
        "--t",
        dict(
            type=number(),
            nargs="+",
            default=None,
            help="scale the projection: W_t = U S^t V^T; several values (--t -1 0 1) print one row each",
        ),
    ),
    (
        "--choose-t",
        dict(action="store_true", help="typographic: choose t on the run's validation split, report test at it"),
    ),
    ("--n", dict(type=count(1), default=None, help="eval toy: held-out images per measurement (default 240)")),
    (
        "--split",
        dict(
            choices=["test", "val"],
            default="test",
            help="the test split (reported) or the validation split (what settings are chosen on)",
        ),
    ),
    ("--json", dict(action="store_true", help="print one JSON object")),
)


#: bench's flags: (flag, argparse keywords).
BENCH_FLAGS = (
    ("--model", dict(default="toy", help="encode, paper: toy or an open_clip name (encode: random init)")),
    (
        "--pretrained",
        dict(default=None, help="paper: open_clip tag (openai) or a checkpoint file (default: random init)"),
    ),
    (
        "--data-root",
        dict(default=None, help="paper: a folder of the Table 1 datasets, one folder each by registry name"),
    ),
    (
        "--train-on",
        dict(default="imagenet100", help="paper: the dataset W trains on (default imagenet100, as the authors)"),
    ),
    (
        "--rows",
        dict(default=None, help="paper: a new JSON Lines file that gets each finished cell as it is scored"),
    ),
    ("--n", dict(type=count(1), default=2000, help="encode: N (it also encodes 10 N)")),
    ("--workers", dict(type=count(0), default=None, help="encode: k workers (default: cores - 1)")),
    ("--n-train", dict(type=count(1), default=None)),
    ("--n-test", dict(type=count(1), default=None)),
    ("--seed", dict(type=int, default=0, help="the data's seed (which images are drawn)")),
    (
        "--seeds",
        dict(type=seed_list, default=None, help="training seeds to average over (default 0,1,2; tune 0; paper --seed)"),
    ),
    ("--device", dict(default=None)),
    ("--no-cache", dict(action="store_true")),
    ("--n-toy", dict(type=count(1), default=2000, help="speed: clean (and as many attacked) toy images")),
    (
        "--n-vit",
        dict(type=count(1), default=None, help="speed: images for ViT-B-32 (default 2000 on a GPU, 256 on a CPU)"),
    ),
    ("--json", dict(action="store_true", help="print one JSON object (always for gender, regime and speed)")),
)


#: export's flags.
EXPORT_FLAGS = (
    ("--projection", dict(default=None, help="projection.safetensors from `clipaln train`")),
    ("--image-encoder", dict(default=None, help="model.safetensors from `clipaln train --mode full`")),
    ("--t", dict(type=number(), default=1.0, help="the scale to fold in (default 1)")),
    (
        "--out",
        dict(
            required=True,
            help="a folder in open_clip's hub layout (local-dir:), or one file NAME.safetensors (config: NAME.json)",
        ),
    ),
    ("--overwrite", dict(action="store_true", help="replace an existing export at --out")),
    ("--device", dict(default=None)),
    ("--allow-other-weights", dict(action="store_true", help="export although the weights changed")),
)
#: bench's flags a benchmark must declare it reads (Bench.reads) to be given.
BENCH_READ_FLAGS = ("model", "n", "workers", "n_train", "n_test", "seed", "seeds", "no_cache", "n_toy", "n_vit")
BENCH_READ_FLAGS += ("pretrained", "data_root", "train_on", "rows")
