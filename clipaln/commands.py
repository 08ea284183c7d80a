"""The `clipaln` subcommands: tour, train, eval, bench, export (clipaln.cli starts them). Each parses,
validates, calls one library function (clipaln.runs or clipaln.bench) and prints; percentages are
for printing only.

Bad arguments exit with status 2 and one line on stderr; library errors (ValueError,
FileNotFoundError, RuntimeError, FloatingPointError) are reported the same way, without a
traceback. Under torchrun, `train` runs distributed and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from safetensors import SafetensorError

from . import bench, conflicts, distributed, losses, runs, tracks
from .bench import registry as bench_registry
from .course import command as course_command
from .data.real import FULL_HASH_ENV
from .features import PRECISIONS, FeatureCache
from .io import print_json as _print_json
from .models import load_clip
from .parsing import COMMANDS, DESCRIPTION, Parser
from .reporting import REPORTERS
from .toyworld.model import toy_paths
from .tracks import TRACKS, gender, phenomena
from .train import SCHEDULER_TYPES, read_config


def _pct(v: float) -> str:
    return f"{100 * v:5.1f}%"


def _data_seed(a) -> int:
    """train's data seed: --data-seed, else --seed (one seed for both, as before --data-seed), else 0."""
    return next(s for s in (a.data_seed, a.seed, 0) if s is not None)


def _data_args(a) -> dict:
    """The model and data flags every track command shares, as keyword arguments."""
    if getattr(a, "full_hash", False):  # read by data.real.files_fingerprint wherever the data is read
        os.environ[FULL_HASH_ENV] = "1"
    names = ("model", "pretrained", "dataset", "root", "download", "n_train", "n_test", "seed", "device")
    names += ("workers", "precision", "reg_images")
    return {
        **{k: getattr(a, k) for k in names},
        **({"seed": _data_seed(a), "val_share": a.val_share} if getattr(a, "func", None) is cmd_train else {}),
        "cache": not a.no_cache,
        "progress": not (getattr(a, "json", False) or getattr(a, "quiet", False)),
    }


def _print_trained(task: str, m: dict) -> None:
    """A finished run's metrics, as its track formats them (format_result / format_metrics), else as
    `name value` pairs."""
    track = TRACKS[task]
    if hasattr(track, "format_result"):  # gender: the trained W's rankings, prompt by prompt
        print(track.format_result(m["trained"]))
        return
    show = getattr(track, "format_metrics", lambda r: "  ".join(f"{k} {v}" for k, v in r.items()))
    print(f"base:    {show(m['base'])}\ntrained: {show(m['trained'])}")


def _train_request(a) -> dict:
    """train_run's keywords from the flags: a config file's fields, then the flags given."""
    overrides = read_config(a.config) if a.config else {}
    # a flag given wins over the config, the config over the default
    overrides.update({k: getattr(a, k) for k in OVERRIDE_FLAGS if getattr(a, k) is not None})
    if a.no_bma:
        overrides["bma"] = False
    method = a.method or overrides.pop("method", None) or "dpo"
    overrides.pop("method", None)
    request = dict(task=a.task, method=method, mode=a.mode, overrides=overrides, train_text=a.train_text)
    request |= {"lock_image": True} if a.lock_image else {}
    request |= dict(checkpoint_every=a.checkpoint_every, report_to=list(a.report_to or ()), eval_every=a.eval_every)
    request |= _data_args(a)
    conflicts.refuse("train-cli", {"lock_text": a.lock_text, "train_text": a.train_text})  # as typed
    return request


#: train flags a resumed run may change: how it runs and logs, not what it trains.
FREE_ON_RESUME = ("checkpoint_every", "report_to", "eval_every", "device", "cache", "progress", "workers")


#: train's flags that set a TrainConfig field, by their dest.
OVERRIDE_FLAGS = ("beta", "lam", "epochs", "lr", "batch_size", "orth", "warmup_ratio", "label_smoothing", "seed")
OVERRIDE_FLAGS += (  # TRL's names, with TRL's meaning (TrainConfig)
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "weight_decay",
    "lr_scheduler_type",
)
#: train's flags that say where and how to run, not what: never compared on resume.
NOT_COMPARED = ("resume", "out", "overwrite", "quiet", "no_cache", "config", "device", "workers", "lock_text")
_UNSET = object()


def _typed(argv) -> set[str]:
    """The dests of the train flags typed on the command line (a flag typed at its default counts)."""
    parser = build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    for action in train._actions:
        if action.dest not in ("help", "task"):
            action.default = _UNSET
    return {k for k, v in vars(parser.parse_args(argv)).items() if v is not _UNSET and k != "func"}


def _asked(a, typed: set[str], request: dict, started: dict, theirs: dict) -> dict:
    """{name: (typed, the run's)} for each flag typed (or config field given) that says what the run trains.
    On resume --seed is the training seed; the data seed is compared only when --data-seed is typed."""
    typed = typed - set(NOT_COMPARED) - set(FREE_ON_RESUME)
    fields = set(read_config(a.config)) if a.config else set()
    asked = {"task": (a.task, started.get("task"))}
    mine, recorded = request["overrides"], runs.as_recorded(request)
    effective = runs.train_config(started["task"], started["method"], theirs).__dict__  # what the run trains with
    for dest in typed | fields:
        if dest in OVERRIDE_FLAGS or dest in fields - {"method"}:
            asked[dest] = (mine.get(dest), effective.get(dest))
        elif dest == "no_bma":
            asked["bma"] = (False, effective["bma"])
        elif dest == "data_seed":
            asked["data_seed"] = (a.data_seed, started.get("seed"))
        elif dest in recorded:
            asked[dest] = (recorded[dest], started.get(dest))
    return asked


def _as_started(a, request: dict) -> dict:
    """--resume: the run's own request from OUT.partial, so no flag need be typed again; a flag typed
    that differs from it is refused (a resumed run continues as it started), except those that say how
    it runs and logs (FREE_ON_RESUME). A TrainConfig field the run did not set is compared with what
    it trains with, the track's default."""
    started = runs.started_request(a.out)
    if started is None:  # nothing recorded: the run starts over, from the flags
        return request
    theirs, typed = started.pop("overrides"), _typed(a.argv)
    for name, (mine, was) in _asked(a, typed, request, started, theirs).items():
        if mine != was:
            flag = name if name == "task" else "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {mine} differs from the run's {was} ({a.out}.partial): refusing to resume")
    typed = {"bma" if d == "no_bma" else d for d in typed}
    free = {k: request[k] for k in request if k not in started or (k in FREE_ON_RESUME and k in typed)}
    overrides = {**theirs, **{k: v for k, v in request["overrides"].items() if k in typed or a.config}}
    return {**started, **free, "overrides": overrides}


def cmd_train(a: argparse.Namespace) -> None:
    request = _train_request(a)
    if a.resume:
        request = _as_started(a, request)
    result = runs.train_run(out=a.out, resume=a.resume, overwrite=a.overwrite, **request)
    if not result:  # a rank other than 0
        return
    _print_trained(request["task"], result["metrics"])
    print("wrote " + ", ".join(result["written"]))


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


def _eval_toy(a) -> dict:
    given = [f for f in TRACK_ONLY_FLAGS if getattr(a, f.lstrip("-").replace("-", "_")) not in (None, False)]
    given += ["--precision"] if a.precision != "auto" else []
    if given or a.model not in (None, "toy") or a.dataset not in (None, "toy"):
        raise ValueError(
            "eval toy measures the shipped toy CLIP itself on fresh renders: it takes no --model, --dataset, "
            + ", ".join(given or ["--projection"])
        )
    if a.n is not None and a.n < MIN_TOY_N:
        raise ValueError(f"eval toy measures rates over --n images: at least {MIN_TOY_N} (default 240)")
    bundle = load_clip("toy", pretrained=a.pretrained, device=a.device)
    result = phenomena.measure(bundle, n=a.n or 240, seed=a.seed or 0, split=a.split)
    return {**result, "targets": phenomena.check_targets(result)}


def _print_eval(result: dict) -> None:
    if "rows" in result:  # several t: one row per t, the metrics as columns
        keys = [k for k, v in result["rows"][0].items() if type(v) in (int, float) and k != "t"]
        print("t".rjust(6) + "".join(k.rjust(max(12, len(k) + 2)) for k in keys))
        for row in result["rows"]:
            print(f"{row['t']:6.2f}" + "".join(f"{row[k]:{max(12, len(k) + 2)}.4f}" for k in keys))
        print(f"source: {result['source']}")
    else:
        for k, v in result.items():
            print(f"{k:>40}: {v}")


def cmd_eval(a: argparse.Namespace) -> None:
    if a.target == "toy":
        result = _eval_toy(a)
    else:
        conflicts.refuse("eval", {"task": a.target, "n": a.n})
        result = runs.eval_run(
            a.target,
            projection=a.projection,
            image_encoder=a.image_encoder,
            photos=a.photos,
            t=None if a.t is None else (a.t[0] if len(a.t) == 1 else a.t),
            allow_other_data=a.allow_other_data,
            allow_other_weights=a.allow_other_weights,
            choose_t=a.choose_t,
            split=a.split,
            **_data_args(a),
        )
    _print_json(result) if a.json else _print_eval(result)


def _sliders(c: bench_registry.Context) -> dict:
    from .widgets import bench as sliders_bench  # matplotlib and ipywidgets: only for this benchmark

    return sliders_bench(c.cache)


bench_registry.register("sliders", bench_registry.Bench(_sliders, needs="own", reads=frozenset({"no_cache"})))


def cmd_bench(a: argparse.Namespace) -> None:
    spec = bench_registry.BENCHES[a.what]
    given = [f for f, d in a.flag_defaults.items() if getattr(a, f) != d and f not in spec.reads]
    if given:  # a flag it does not read would be ignored: refused
        names = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ValueError(f"bench {a.what} does not read {names}: it would be ignored")
    result = bench_registry.run(a.what, {k: v for k, v in vars(a).items() if k not in ("func", "flag_defaults")})
    _print_json(result) if a.json or spec.markdown is None else print(spec.markdown(result))


def _method(name: str) -> str:
    """A registered loss's name (one line naming the methods, and a plugin that failed to load, if not)."""
    try:
        losses.method(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def _seeds(x: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in x.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {x}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"must be distinct integers, got {x}")
    return seeds


#: What the tour prints of the toy CLIP's phenomena: label, metric.
TOUR_PHENOMENA = (
    ("zero-shot objects, clean images", "objects/clean"),
    ("reading words (text-only images)", "reading/text_only"),
    ("attacked objects (another word on it)", "attack/object_accuracy"),
    ("  ... share of clean accuracy kept", "attack/retained"),
    ("  ... the written word wins", "attack/word_rate"),
    ("activities of people", "people/activity"),
    ("gender (man/woman caption)", "people/gender"),
)


def cmd_tour(a: argparse.Namespace) -> None:
    print("clipaln toy-world tour: the project's own small CLIP, pretrained on a drawn world.")
    if not toy_paths()[1].is_file():
        print("WARNING: toy weights are missing, the model below is randomly initialised.")
    print("Measuring the toy CLIP, then training W against typographic attacks (KTO) and to reverse gender (DPO) ...")
    r = bench.tour(load_clip("toy", device=a.device), n=a.n, seed=a.seed, cache=FeatureCache(), progress=False)
    p = r["phenomena"]
    for label, key in TOUR_PHENOMENA:
        print(f"  {label:<46} {_pct(p[key])}")
    print(f"  '{phenomena.POLICE_PROMPT}' top 10: {p['retrieval/police_top10']}")
    print(
        "\nTypographic attacks, W trained with KTO:\n"
        "      t   objects (clean)   objects (attacked)   written word (OCR)   text-only images"
    )
    for c in r["typographic"]["curve"]:
        print(
            f"  {c['t']:5.1f}   {_pct(c['accuracy/clean']):>15}   {_pct(c['accuracy/attacked']):>18}   "
            f"{_pct(c['accuracy/ocr']):>18}   {_pct(c['accuracy/text_only']):>16}"
            + ("   <- the original model" if c["t"] == 0 else "")
        )
    print("\nGender, W trained with DPO to reverse gender; men / women in the top 10 of each skewed activity:")
    print(gender.format_result(r["gender"]))
    print(
        "\nNext: the notebooks, 00_the_toy_world.ipynb on. They are not in the installed package: they are in "
        f"the repository's notebooks/ folder (git clone {_repository()}, then `jupyter lab notebooks/`; "
        "each notebook also opens in Colab from its badge)."
    )


def _repository() -> str:
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata("clipaln").get_all("Project-URL") or []
    except PackageNotFoundError:
        urls = []
    return next((u.split(",", 1)[1].strip() for u in urls if u.startswith("Repository")), "the repository")


# --- the parser -------------------------------------------------------------------------------


def _number(low: float | None = None, strict: bool = False):
    """An argparse type: a finite float, optionally > low (strict) or >= low."""

    def parse(x: str) -> float:
        v = float(x)
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {x}")
        if low is not None and (v <= low if strict else v < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {x}")
        return v

    return parse


def _count(minimum: int):
    def parse(x: str) -> int:
        v = int(x)
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {x}")
        return v

    return parse


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
    ("--pairs", dict(dest="root", help="train/eval pairs: a .csv or .jsonl of image, chosen, rejected")),
    ("--reg-images", dict(default=None, help="pairs: a folder of images for D_reg (default: the pairs')")),
    ("--download", dict(action="store_true", help="let torchvision download the dataset")),
    (
        "--full-hash",
        dict(action="store_true", help="fingerprint the data by every byte (default: sizes and a sample)"),
    ),
    ("--n-train", dict(type=_count(1), default=None, help="training images (default: the track's)")),
    ("--n-test", dict(type=_count(1), default=None, help="test images (default: the track's)")),
    ("--device", dict(default=None)),
    ("--no-cache", dict(action="store_true", help="do not read or write the feature cache")),
    ("--quiet", dict(action="store_true", help="no progress bars (logs, batch jobs, notebooks)")),
    ("--workers", dict(type=_count(0), default=None, help="DataLoader workers (default: cores - 1, at most 8)")),
    (
        "--precision",
        dict(choices=list(PRECISIONS), default="auto", help="encoding: auto (bf16 on CUDA, else fp32)"),
    ),
)


def _add_flags(p, table) -> None:
    for flag, keywords in table:
        p.add_argument(flag, **keywords)


def _add_model_args(p, seed_default: int | None = 0, model_default: str | None = "toy") -> None:
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
    _add_flags(p, MODEL_FLAGS)


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
            type=_number(0),
            default=None,
            help="pairs: a share of the images held out to validate on (eval --split val)",
        ),
    ),
    ("--beta", dict(type=_number(0, strict=True), default=None)),
    ("--lam", dict(type=_number(0), default=None, help="weight lambda of the KL regulariser")),
    ("--epochs", dict(type=_count(1), default=None)),
    ("--lr", dict(type=_number(0, strict=True), default=None)),
    ("--batch-size", dict(type=_count(1), default=None, help="global batch (split across torchrun ranks)")),
    ("--orth", dict(type=_number(0), default=None, help="weight of the penalty ||W^T W - I||_F^2 / d (0: none)")),
    ("--no-bma", dict(action="store_true", help="keep the last iterate, not the Beta(0.7, 0.7) average")),
    ("--warmup-ratio", dict(type=_number(0), default=None, help="share of steps with a linear warm-up (default 0.1)")),
    ("--label-smoothing", dict(type=_number(0), default=None, help="cDPO's eps, the share of flipped pairs (0.1)")),
    (
        "--per-device-train-batch-size",
        dict(type=_count(1), default=None, help="TRL's: per rank; global = this x ranks x accumulation steps"),
    ),
    ("--gradient-accumulation-steps", dict(type=_count(1), default=None, help="micro-batches per step (TRL's)")),
    ("--max-grad-norm", dict(type=_number(0, strict=True), default=None, help="clip the gradient norm (TRL's)")),
    ("--weight-decay", dict(type=_number(0), default=None, help="Adamax's weight decay (default 0)")),
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
            type=_count(1),
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
        dict(type=_count(0), default=None, help="checkpoint every N steps (default: W 20, full 200; 0: never)"),
    ),
    ("--resume", dict(action="store_true", help="continue the unfinished run in OUT.partial")),
    ("--overwrite", dict(action="store_true", help="replace an existing run in OUT")),
)


def _add_train(sub) -> None:
    tr = sub.add_parser("train", help=COMMANDS["train"])
    tr.add_argument("task", choices=list(TRACKS))
    _add_model_args(tr, seed_default=None)
    tr.add_argument(
        "--method", type=_method, default=None, help=f"{', '.join(losses.LOSSES)} (default: the config's, else dpo)"
    )
    _add_flags(tr, TRAIN_FLAGS)
    tr.set_defaults(func=cmd_train)


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
            type=_number(),
            nargs="+",
            default=None,
            help="scale the projection: W_t = U S^t V^T; several values (--t -1 0 1) print one row each",
        ),
    ),
    (
        "--choose-t",
        dict(action="store_true", help="typographic: choose t on the run's validation split, report test at it"),
    ),
    ("--n", dict(type=_count(1), default=None, help="eval toy: held-out images per measurement (default 240)")),
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


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help=COMMANDS["eval"])
    e.add_argument("target", choices=["toy", *TRACKS])
    _add_model_args(e, seed_default=None, model_default=None)
    _add_flags(e, EVAL_FLAGS)
    e.set_defaults(func=cmd_eval)


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
    ("--n", dict(type=_count(1), default=2000, help="encode: N (it also encodes 10 N)")),
    ("--workers", dict(type=_count(0), default=None, help="encode: k workers (default: cores - 1)")),
    ("--n-train", dict(type=_count(1), default=None)),
    ("--n-test", dict(type=_count(1), default=None)),
    ("--seed", dict(type=int, default=0, help="the data's seed (which images are drawn)")),
    (
        "--seeds",
        dict(type=_seeds, default=None, help="training seeds to average over (default 0,1,2; tune 0; paper --seed)"),
    ),
    ("--device", dict(default=None)),
    ("--no-cache", dict(action="store_true")),
    ("--n-toy", dict(type=_count(1), default=2000, help="speed: clean (and as many attacked) toy images")),
    (
        "--n-vit",
        dict(type=_count(1), default=None, help="speed: images for ViT-B-32 (default 2000 on a GPU, 256 on a CPU)"),
    ),
    ("--json", dict(action="store_true", help="print one JSON object (always for gender, regime and speed)")),
)


def _add_bench(sub) -> None:
    bn = sub.add_parser("bench", help=COMMANDS["bench"])
    bn.add_argument("what", choices=list(bench_registry.BENCHES))
    _add_flags(bn, BENCH_FLAGS)
    flags = ("model", "n", "workers", "n_train", "n_test", "seed", "seeds", "no_cache", "n_toy", "n_vit")
    flags += ("pretrained", "data_root", "train_on", "rows")
    bn.set_defaults(func=cmd_bench, flag_defaults={f: bn.get_default(f) for f in flags})  # the parser's own


def cmd_export(a: argparse.Namespace) -> None:
    conflicts.refuse("export", dict(projection=a.projection, image_encoder=a.image_encoder, t=a.t))
    common = dict(out=a.out, device=a.device, allow_other_weights=a.allow_other_weights, overwrite=a.overwrite)
    if a.image_encoder is not None:
        result = runs.export_finetuned(a.image_encoder, **common)
        print(f"wrote the fine-tuned {result['model']}: " + ", ".join(result["written"]))
    else:
        result = runs.export_run(a.projection, t=a.t, **common)
        print(f"folded W_t (t = {result['t']}) into {result['model']}; wrote " + ", ".join(result["written"]))
    if result["layout"] == "folder":
        print(f'load with open_clip.create_model_and_transforms("local-dir:{a.out}")')
    elif "image_mean" in result:
        print(f"load with image_mean={result['image_mean']}, image_std={result['image_std']} (the toy's normalisation)")


def _add_export(sub) -> None:
    x = sub.add_parser("export", help=COMMANDS["export"])
    x.add_argument("--projection", default=None, help="projection.safetensors from `clipaln train`")
    x.add_argument("--image-encoder", default=None, help="model.safetensors from `clipaln train --mode full`")
    x.add_argument("--t", type=_number(), default=1.0, help="the scale to fold in (default 1)")
    x.add_argument(
        "--out",
        required=True,
        help="a folder in open_clip's hub layout (local-dir:), or one file NAME.safetensors (config: NAME.json)",
    )
    x.add_argument("--overwrite", action="store_true", help="replace an existing export at --out")
    x.add_argument("--device", default=None)
    x.add_argument("--allow-other-weights", action="store_true", help="export although the weights changed")
    x.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="clipaln", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train(sub)
    _add_eval(sub)
    _add_bench(sub)
    _add_export(sub)
    t = sub.add_parser("tour", help=COMMANDS["tour"])
    t.add_argument("--n", type=_count(1), default=240)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.set_defaults(func=cmd_tour)
    course_command.add_parser(sub)
    return p


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.filename:
        text = f"{e.strerror or text}: {e.filename}"
    return text if len(text) <= 400 else text[:397] + "..."


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a batch system's stop) cleans up as Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    losses.load_plugins()  # before the parser, so that --method knows installed losses (a broken one costs itself)
    tracks.load_plugins()  # ... and train / eval their installed tracks
    bench_registry.load_plugins()  # ... and bench its installed benchmarks
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what was typed (train --resume compares it)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            args.func(args)
    except (ValueError, OSError, RuntimeError, FloatingPointError, SafetensorError) as e:
        print(f"clipaln: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clipaln: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.cleanup()
        if on_main:
            signal.signal(signal.SIGTERM, previous)
    return 0
