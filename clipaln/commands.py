"""The `clipaln` subcommands: tour, train, eval, bench, export (clipaln.cli starts them). Each parses,
validates, calls one library function (clipaln.runs or clipaln.bench) and prints; percentages are
for printing only.

Bad arguments exit with status 2 and one line on stderr; library errors (ValueError,
FileNotFoundError, RuntimeError, FloatingPointError) are reported the same way, without a
traceback. Under torchrun, `train` runs distributed and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

from safetensors import SafetensorError

from . import bench, conflicts, distributed, losses, manifest, runs, tracks
from .bench import registry as bench_registry
from .course import command as course_command
from .data.fingerprint import FULL_HASH_ENV
from .features import FeatureCache
from .flags import (
    BENCH_FLAGS,
    BENCH_READ_FLAGS,
    EVAL_FLAGS,
    EXPORT_FLAGS,
    MIN_TOY_N,
    OVERRIDE_FLAGS,
    TRACK_ONLY_FLAGS,
    TRAIN_FLAGS,
    add_flags,
    add_model_args,
    count,
    method_name,
)
from .io import print_json as _print_json
from .models import load_clip
from .parsing import COMMANDS, DESCRIPTION, Parser
from .toyworld.model import toy_paths
from .tracks import TRACKS, gender, phenomena
from .train import read_config


def _pct(v: float) -> str:
    return f"{100 * v:5.1f}%"


def _data_seed(args) -> int:
    """train's data seed: --data-seed, else --seed (one seed for both, as before --data-seed), else 0."""
    return next(s for s in (args.data_seed, args.seed, 0) if s is not None)


def _data_args(args) -> dict:
    """The model and data flags every track command shares, as keyword arguments."""
    if getattr(args, "full_hash", False):  # read by data.fingerprint.files_fingerprint wherever the data is read
        os.environ[FULL_HASH_ENV] = "1"
    names = ("model", "pretrained", "dataset", "root", "download", "n_train", "n_test", "seed", "device")
    names += ("workers", "precision", "reg_images")
    return {
        **{k: getattr(args, k) for k in names},
        **({"seed": _data_seed(args), "val_share": args.val_share} if getattr(args, "func", None) is cmd_train else {}),
        "cache": not args.no_cache,
        "progress": not (getattr(args, "json", False) or getattr(args, "quiet", False)),
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


def _train_request(args) -> dict:
    """train_run's keywords from the flags: a config file's fields, then the flags given."""
    overrides = read_config(args.config) if args.config else {}
    # a flag given wins over the config, the config over the default
    overrides.update({k: getattr(args, k) for k in OVERRIDE_FLAGS if getattr(args, k) is not None})
    if args.no_bma:
        overrides["bma"] = False
    method = args.method or overrides.pop("method", None) or "dpo"
    overrides.pop("method", None)
    request = dict(task=args.task, method=method, mode=args.mode, overrides=overrides, train_text=args.train_text)
    request |= {"lock_image": True} if args.lock_image else {}
    logging = dict(report_to=list(args.report_to or ()), eval_every=args.eval_every)
    request |= dict(checkpoint_every=args.checkpoint_every, **logging)
    request |= _data_args(args)
    conflicts.refuse("train-cli", {"lock_text": args.lock_text, "train_text": args.train_text, "mode": args.mode})
    return request


_UNSET = object()


def _flags_typed(argv) -> set[str]:
    """The dests of the train flags typed on the command line (a flag typed at its default counts)."""
    parser = build_parser()
    train = next(x for x in parser._actions if isinstance(x, argparse._SubParsersAction)).choices["train"]
    for action in train._actions:
        if action.dest not in ("help", "task"):
            action.default = _UNSET
    return {k for k, v in vars(parser.parse_args(argv)).items() if v is not _UNSET and k != "func"}


def cmd_train(args: argparse.Namespace) -> None:
    request = _train_request(args)
    if args.resume:  # the run's own request; a flag typed that differs from it is one line
        config_fields = set(read_config(args.config)) if args.config else None
        request = runs.resumed_request(request, args.out, _flags_typed(args.argv), config_fields, args.data_seed)
    result = runs.train_run(out=args.out, resume=args.resume, overwrite=args.overwrite, **request)
    if not result:  # a rank other than 0
        return
    _print_trained(request["task"], result["metrics"])
    print("wrote " + ", ".join(result["written"]))


def _eval_toy(args) -> dict:
    given = [f for f in TRACK_ONLY_FLAGS if getattr(args, f.lstrip("-").replace("-", "_")) not in (None, False)]
    given += ["--precision"] if args.precision != "auto" else []
    given += ["--model"] if args.model not in (None, "toy") else []
    given += ["--dataset"] if args.dataset not in (None, "toy") else []
    if given:  # only what was typed
        raise ValueError(f"eval toy measures the shipped toy CLIP on fresh renders: it takes no {', '.join(given)}")
    if args.n is not None and args.n < MIN_TOY_N:
        raise ValueError(f"eval toy measures rates over --n images: at least {MIN_TOY_N} (default 240)")
    bundle = load_clip("toy", pretrained=args.pretrained, device=args.device)
    result = phenomena.measure(bundle, n=args.n or 240, seed=args.seed or 0, split=args.split)
    return {**result, "targets": phenomena.check_targets(result)}


def _print_eval(result: dict) -> None:
    if "rows" in result:  # several t: one row per t, the metrics as columns
        keys = [k for k, v in result["rows"][0].items() if type(v) in (int, float) and k != "t"]
        print("t".rjust(6) + "".join(k.rjust(max(12, len(k) + 2)) for k in keys))
        width = lambda k: max(12, len(k) + 2)
        cell = lambda k, v: f"{v:{width(k)}d}" if type(v) is int else f"{round(v, 4) + 0.0:{width(k)}.4f}"
        for row in result["rows"]:  # an integer as one (k 10, not 10.0000); no -0.0000 (a KL of -1e-9)
            print(f"{row['t']:6.2f}" + "".join(cell(k, row[k]) for k in keys))
        print(f"source: {result['source']}")
    else:
        for k, v in result.items():
            print(f"{k:>40}: {v}")


def cmd_eval(args: argparse.Namespace) -> None:
    if args.target == "toy":
        result = _eval_toy(args)
    else:
        conflicts.refuse("eval", {"task": args.target, "n": args.n})
        result = runs.eval_run(
            args.target,
            projection=args.projection,
            image_encoder=args.image_encoder,
            photos=args.photos,
            t=None if args.t is None else (args.t[0] if len(args.t) == 1 else args.t),
            allow_other_data=args.allow_other_data,
            allow_other_weights=args.allow_other_weights,
            choose_t=args.choose_t,
            split=args.split,
            **_data_args(args),
        )
    _print_json(result) if args.json else _print_eval(result)


def _sliders(c: bench_registry.Context) -> dict:
    from .widgets import bench as sliders_bench  # matplotlib and ipywidgets: only for this benchmark

    return sliders_bench(c.cache)


bench_registry.register("sliders", bench_registry.Bench(_sliders, needs="own", reads=frozenset({"no_cache"})))


def cmd_bench(args: argparse.Namespace) -> None:
    spec = bench_registry.BENCHES[args.what]
    given = [f for f, d in args.flag_defaults.items() if getattr(args, f) != d and f not in spec.reads]
    if given:  # a flag it does not read would be ignored: refused
        names = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ValueError(f"bench {args.what} does not read {names}: it would be ignored")
    result = bench_registry.run(args.what, {k: v for k, v in vars(args).items() if k not in ("func", "flag_defaults")})
    _print_json(result) if args.json or spec.markdown is None else print(spec.markdown(result))


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


def cmd_tour(args: argparse.Namespace) -> None:
    print("clipaln toy-world tour: the project's own small CLIP, pretrained on a drawn world.")
    if not toy_paths()[1].is_file():
        print("WARNING: toy weights are missing, the model below is randomly initialised.")
    print("Measuring the toy CLIP, then training W against typographic attacks (KTO) and to reverse gender (DPO) ...")
    r = bench.tour(load_clip("toy", device=args.device), n=args.n, seed=args.seed, cache=FeatureCache(), progress=False)
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


def _add_train(sub) -> None:
    tr = sub.add_parser("train", help=COMMANDS["train"])
    tr.add_argument("task", choices=list(TRACKS))
    add_model_args(tr, seed_default=None)
    tr.add_argument(
        "--method", type=method_name, default=None, help=f"{', '.join(losses.LOSSES)} (default: the config's, else dpo)"
    )
    add_flags(tr, TRAIN_FLAGS)
    tr.set_defaults(func=cmd_train)


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help=COMMANDS["eval"])
    e.add_argument("target", choices=["toy", *TRACKS])
    add_model_args(e, seed_default=None, model_default=None)
    add_flags(e, EVAL_FLAGS)
    e.set_defaults(func=cmd_eval)


def _add_bench(sub) -> None:
    bn = sub.add_parser("bench", help=COMMANDS["bench"])
    bn.add_argument("what", choices=list(bench_registry.BENCHES))
    add_flags(bn, BENCH_FLAGS)
    bn.set_defaults(func=cmd_bench, flag_defaults={f: bn.get_default(f) for f in BENCH_READ_FLAGS})  # the parser's own


def cmd_export(args: argparse.Namespace) -> None:
    conflicts.refuse("export", dict(projection=args.projection, image_encoder=args.image_encoder, t=args.t))
    common = dict(out=args.out, device=args.device, overwrite=args.overwrite)
    common |= dict(allow_other_weights=args.allow_other_weights)
    if args.image_encoder is not None:
        result = runs.export_finetuned(args.image_encoder, **common)
        print(f"wrote the fine-tuned {result['model']}: " + ", ".join(result["written"]))
    else:
        result = runs.export_run(args.projection, t=args.t, **common)
        print(f"folded W_t (t = {result['t']}) into {result['model']}; wrote " + ", ".join(result["written"]))
    if result["layout"] == "folder":
        print(f'load with open_clip.create_model_and_transforms("local-dir:{args.out}")')
    elif "image_mean" in result:
        print(f"load with image_mean={result['image_mean']}, image_std={result['image_std']} (the toy's normalisation)")


def _add_export(sub) -> None:
    x = sub.add_parser("export", help=COMMANDS["export"])
    add_flags(x, EXPORT_FLAGS)
    x.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="clipaln", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train(sub)
    _add_eval(sub)
    _add_bench(sub)
    _add_export(sub)
    t = sub.add_parser("tour", help=COMMANDS["tour"])
    t.add_argument("--n", type=count(1), default=240)
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


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning in one line: `clipaln: warning: ...` for ours, `warning (torch, FutureWarning): ...` for a
    library's (named by its folder under site-packages, else its file)."""
    text = " ".join(str(message).split())
    if Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent):
        return f"clipaln: warning: {text}\n"
    parts = Path(filename).with_suffix("").parts
    packages = [i for i, p in enumerate(parts[:-1]) if p in ("site-packages", "dist-packages")]
    source = parts[packages[-1] + 1] if packages else Path(filename).stem
    return f"warning ({source}, {category.__name__}): {text}\n"


def main(argv: Sequence[str] | None = None) -> int:
    losses.load_plugins()  # before the parser, so that --method knows installed losses (a broken one costs itself)
    tracks.load_plugins()  # ... and train / eval their installed tracks
    bench_registry.load_plugins()  # ... and bench its installed benchmarks
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what was typed (train --resume compares it)
    typed = manifest.TYPED.set(args.argv)  # run.json's command
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main else None
    formatwarning, warnings.formatwarning = warnings.formatwarning, _warning_line
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
        if warnings.formatwarning is _warning_line:  # not another thread's main, which will restore it
            warnings.formatwarning = formatwarning
        manifest.TYPED.reset(typed)
        distributed.cleanup()
        if on_main:
            signal.signal(signal.SIGTERM, previous)
    return 0
