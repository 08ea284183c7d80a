"""The `clipaln` command: tour, train, eval, bench.

Bad arguments exit with status 2 and one line on stderr; library errors (ValueError,
FileNotFoundError, RuntimeError, FloatingPointError) are reported the same way, without a
traceback. Under torchrun, `train` runs distributed and only rank 0 writes.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=None if not sys.stdout.isatty() else 1))


def cmd_eval(a) -> None:
    from .models import load_clip
    from .toyworld.phenomena import measure

    if a.target != "toy":
        raise ValueError(f"unknown eval target {a.target!r}; use 'toy'")
    bundle = load_clip("toy", pretrained=a.pretrained, device=a.device)
    result = measure(bundle, n=a.n, seed=a.seed)
    if a.json:
        _print_json(result)
    else:
        for k, v in result.items():
            print(f"{k:>36}: {v}")


def cmd_tour(a) -> None:
    from .models import load_clip, toy_paths
    from .toyworld.phenomena import measure

    print("clipaln toy-world tour: the project's own small CLIP, pretrained on a drawn world.")
    if not toy_paths()[1].is_file():
        print("WARNING: toy weights are missing, the model below is randomly initialised.")
    bundle = load_clip("toy", device=a.device)
    r = measure(bundle, n=a.n, seed=a.seed)
    pct = lambda v: f"{100 * v:5.1f}%"
    print(f"  zero-shot objects, clean images        {pct(r['object_accuracy'])}")
    print(f"  reading words (text-only images)       {pct(r['reading_accuracy'])}")
    print(f"  attacked objects (another word on it)  {pct(r['attack_object_accuracy'])}  "
          f"-> the written word wins {pct(r['attack_word_rate'])}")
    print(f"  activities of people                   {pct(r['activity_accuracy'])}")
    print(f"  gender (man/woman caption)             {pct(r['gender_accuracy'])}")
    print(f"  majority gender in top-10, skewed activities {pct(r['skew_majority_share_top10_mean'])}")
    print(f"  'a photo of a police officer' top-10: {r['police_officer_top10']}")

    from . import gender_track, typographic
    from .features import FeatureCache
    from .toyworld.config import SKEW

    print("\nTypographic attacks: train W with KTO (the strongest of DPO/IPO/KTO here) on 7,200 attacked images ...")
    feats = typographic.build_features(bundle, typographic.toy_spec(seed=a.seed), FeatureCache())
    W, _ = typographic.train(feats, typographic.train_config("kto", seed=a.seed), progress=False)
    sweep = typographic.TradeoffSweep(feats, W)
    print("      t   objects (clean)   objects (attacked)   reading")
    for t in (-2.0, 0.0, 1.0, 2.0):
        c = sweep.at(t)
        print(f"  {t:5.1f}   {c['O']:12.1f}%   {c['T']:15.1f}%   {c['OCR']:8.1f}%" + ("   <- the original model" if t == 0 else ""))
    print("\nGender bias: train W to reverse gender, then find the neutral point t* ...")
    g = gender_track.toy_features(bundle, seed=a.seed, cache=FeatureCache())
    Wg, _ = gender_track.train(g, "dpo", progress=False, seed=a.seed)
    s = gender_track.summary(g, Wg, skewed=list(SKEW))
    print(f"  share of the majority gender in the top 10 (skewed activities): t=0 {pct(s['t0']['majority_share'])}, "
          f"t=1 {pct(s['t1']['majority_share'])}, t*={s['t_star']:.2f} {pct(s['t_star_metrics']['majority_share'])}")
    print(f"  activity precision@10: t=0 {pct(s['t0']['precision'])}, t* {pct(s['t_star_metrics']['precision'])}")
    print("\nNext: the notebooks, `jupyter lab notebooks/`, from 00_the_toy_world.ipynb on.")


def _finite(x: str) -> float:
    import math

    v = float(x)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {x}")
    return v


def _positive(x: str) -> float:
    v = _finite(x)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {x}")
    return v


def _nonneg(x: str) -> float:
    v = _finite(x)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {x}")
    return v


def _track_spec(a):
    from . import typographic

    if a.model == "toy" and a.dataset in (None, "toy"):
        return typographic.toy_spec(a.n_train, a.n_test, a.seed)
    if a.dataset in (None, "toy"):
        raise ValueError("a real model needs --dataset NAME --root PATH (or --dataset folder --root PATH)")
    if a.root is None:
        raise ValueError("--dataset needs --root PATH")
    return typographic.real_spec(a.dataset, a.root, a.n_train, a.n_test, a.seed, download=a.download)


def _bundle(a):
    from .models import load_clip

    return load_clip(a.model, pretrained=a.pretrained, device=a.device)


def cmd_train(a) -> None:
    import time
    from pathlib import Path

    from . import distributed as dist
    from . import typographic
    from .features import FeatureCache
    from .io import save_tensors, write_json

    if dist.init() and a.device is None:
        a.device = dist.local_device()
    if a.task != "typographic":
        from . import gender_track

        return gender_track.cli_train(a)
    bundle = _bundle(a)
    spec = _track_spec(a)
    overrides = dict(beta=a.beta, lam=a.lam, epochs=a.epochs, lr=a.lr, seed=a.seed, bma=a.bma, batch_size=a.batch_size)
    if a.mode == "full":
        overrides["lr"] = a.lr or (1e-3 if a.model == "toy" else 2e-5)
        overrides["epochs"] = a.epochs or 3
    cfg = typographic.train_config(a.method, **overrides)
    t0 = time.perf_counter()
    out = Path(a.out)
    cache = FeatureCache(enabled=not a.no_cache)
    feats = typographic.build_features(bundle, spec, cache)
    meta = {"model": a.model, "pretrained": a.pretrained or "", "task": "typographic", "mode": a.mode}
    if a.mode == "w":
        proj, hist = typographic.train(feats, cfg, checkpoint=out / "checkpoint.safetensors",
                                       checkpoint_every=a.checkpoint_every if dist.is_main() else 0, resume=a.resume)
        trained = typographic.evaluate(feats, proj)
    else:
        tuned, hist = typographic.finetune(bundle, spec, cfg, feats=feats)
        trained = typographic.evaluate(typographic.build_features(tuned, spec, cache, with_train=False))
    if not dist.is_main():
        return
    if a.mode == "w":
        proj.save(out / "projection.safetensors", **meta)
        written = out / "projection.safetensors"
    else:
        written = save_tensors(out / "image_encoder.safetensors", tuned.model.visual.state_dict(), meta)
    metrics = {"base": typographic.evaluate(feats), "trained": trained, "config": {**cfg.__dict__, **meta},
               "seconds": round(time.perf_counter() - t0, 1), "final_loss": hist["loss"][-1], "world_size": dist.world()}
    write_json(out / "metrics.json", metrics)
    b, t = metrics["base"], metrics["trained"]
    print(f"O {b['O']:.1f} -> {t['O']:.1f}   T {b['T']:.1f} -> {t['T']:.1f}   T_unseen {b['T_unseen']:.1f} -> "
          f"{t['T_unseen']:.1f}   OCR {b['OCR']:.1f} -> {t['OCR']:.1f}   KL {t['KL']:.4f}")
    print(f"wrote {written} and {out / 'metrics.json'}")


def cmd_eval_track(a) -> None:
    from . import typographic
    from .features import FeatureCache
    from .projection import SharedProjection

    if a.target == "gender":
        from . import gender_track

        return gender_track.cli_eval(a)
    bundle = _bundle(a)
    proj = None
    if a.projection:
        proj = SharedProjection.load(a.projection, dim=bundle.embed_dim)
        trained_on = proj.metadata.get("model")
        if trained_on and trained_on != a.model:
            raise ValueError(f"{a.projection} was trained on model {trained_on!r}, not {a.model!r}")
        if a.t is not None:
            proj = proj.scaled(a.t)
    elif a.t is not None:
        raise ValueError("--t needs --projection FILE")
    feats = typographic.build_features(bundle, _track_spec(a), FeatureCache(enabled=not a.no_cache))
    result = {"t": a.t if proj is not None else None, **typographic.evaluate(feats, proj)}
    if a.json:
        _print_json(result)
    else:
        for k, v in result.items():
            print(f"{k:>16}: {v}")


def cmd_bench(a) -> None:
    from .features import FeatureCache

    if a.what == "typographic":
        from . import bench, typographic
        from .models import load_clip

        bundle = load_clip("toy", device=a.device)
        result = bench.typographic_table(bundle, typographic.toy_spec(a.n_train, a.n_test, a.seed),
                                         FeatureCache(enabled=not a.no_cache), seed=a.seed, progress=not a.json)
        if a.json:
            _print_json(result)
        else:
            print(bench.format_table(result))
    elif a.what == "speed":
        from . import speed

        _print_json(speed.run(a))
    else:
        from . import gender_track

        _print_json(gender_track.bench(a))


def _add_model_args(p, n_train=7200, n_test=600):
    p.add_argument("--model", default="toy", help="'toy' or an open_clip model name such as ViT-B-32")
    p.add_argument("--pretrained", default=None, help="open_clip tag (openai) or a local checkpoint file")
    p.add_argument("--dataset", default=None, help="toy (default for --model toy), a registry name such as food101, or folder")
    p.add_argument("--root", default=None, help="dataset folder")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    p.add_argument("--n-train", type=int, default=n_train)
    p.add_argument("--n-test", type=int, default=n_test)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="clipaln", description="Preference optimisation for CLIP-like models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tr = sub.add_parser("train", help="train a shared projection W")
    tr.add_argument("task", choices=["typographic", "gender"])
    _add_model_args(tr)
    tr.add_argument("--method", choices=["dpo", "ipo", "kto", "ce"], default="dpo")
    tr.add_argument("--beta", type=_positive, default=None)
    tr.add_argument("--lam", type=_nonneg, default=None, help="weight lambda of the KL regulariser")
    tr.add_argument("--epochs", type=int, default=None)
    tr.add_argument("--lr", type=_positive, default=None)
    tr.add_argument("--batch-size", type=int, default=None, help="global batch size (split across torchrun processes)")
    tr.add_argument("--bma", action="store_true", help="average the iterates with Beta(0.7, 0.7) weights")
    tr.add_argument("--mode", choices=["w", "full"], default="w",
                    help="w: train the shared projection on cached features; full: fine-tune the image encoder")
    tr.add_argument("--out", required=True, help="output folder")
    tr.add_argument("--checkpoint-every", type=int, default=20, help="write OUT/checkpoint.safetensors every N steps")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    tr.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="measure a model: `eval toy` (the toy phenomena), `eval typographic`, `eval gender`")
    e.add_argument("target", choices=["toy", "typographic", "gender"])
    _add_model_args(e)
    e.add_argument("--projection", default=None, help="projection.safetensors from `clipaln train`")
    e.add_argument("--t", type=_finite, default=None, help="scale the projection: W_t = U S^t V^T")
    e.add_argument("--n", type=int, default=240, help="held-out images per measurement (eval toy)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=lambda a: cmd_eval(a) if a.target == "toy" else cmd_eval_track(a))

    bn = sub.add_parser("bench", help="benchmarks printing JSON: typographic (results table), gender, speed")
    bn.add_argument("what", choices=["typographic", "gender", "speed"])
    bn.add_argument("--n-train", type=int, default=7200)
    bn.add_argument("--n-test", type=int, default=600)
    bn.add_argument("--seed", type=int, default=0)
    bn.add_argument("--device", default=None)
    bn.add_argument("--no-cache", action="store_true")
    bn.add_argument("--n-toy", type=int, default=2000, help="speed: clean (and as many attacked) toy images")
    bn.add_argument("--n-vit", type=int, default=None, help="speed: images for ViT-B-32 (default 2000 on a GPU, 256 on a CPU)")
    bn.add_argument("--json", action="store_true", help="print one JSON object (default for gender and speed)")
    bn.set_defaults(func=cmd_bench)

    t = sub.add_parser("tour", help="the toy-world tour: what the shipped toy CLIP does")
    t.add_argument("--n", type=int, default=240)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.set_defaults(func=cmd_tour)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("n", "n_train", "n_test", "epochs", "batch_size"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            print(f"clipaln: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as e:
        print(f"clipaln: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clipaln: interrupted", file=sys.stderr)
        return 130
    finally:
        from . import distributed

        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
