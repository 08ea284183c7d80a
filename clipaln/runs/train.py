"""train_run: what `clipaln train` does."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .. import conflicts, manifest, models, reporting
from .. import distributed as dist
from ..features import FeatureCache, encoding_identity
from ..finetune import saved_state
from ..io import save_tensors, write_json, write_text
from ..models import ClipBundle
from ..reporting import Reporter
from ..tracks import typographic
from ..train import check_checkpoint, checkpoint_step
from .common import (
    _header,
    _resolved,
    _track,
    duplicates_line,
    features,
    make_spec,
    run_manifest,
    without_w,
)
from .request import REQUEST, as_recorded


def _finetune(bundle: ClipBundle, spec, feats, cfg, cache: bool, progress: bool, train_text: bool, lock_image: bool,
              checkpointing: dict, **encoding):  # fmt: skip
    towers = dict(train_text=train_text, lock_image=lock_image, workers=encoding.get("workers"))
    tuned, hist = typographic.finetune(bundle, spec, cfg, progress=progress, feats=feats, **towers, **checkpointing)
    store = FeatureCache(enabled=cache)
    after = typographic.build_features(tuned, spec, store, progress=progress, with_train=False, **encoding)
    return tuned, hist, typographic.evaluate(after, reference=feats)  # KL against the frozen model


def train_run(
    task: str,
    *,
    method: str = "dpo",
    out: str | Path,
    mode: str = "w",
    overrides: dict | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    train_text: bool = False,
    lock_image: bool = False,
    report_to: Sequence[str] = (),
    eval_every: int = 0,
    model: str = "toy",
    pretrained: str | None = None,
    device: str | None = None,
    cache: bool = True,
    progress: bool = True,
    **data,
) -> dict:
    """Train on a task and write OUT, all or nothing (manifest.RunFolder): projection.safetensors (or
    model.safetensors for full fine-tuning: the whole model under open_clip's names), metrics.json,
    history.jsonl (one line per step) and run.json (the manifest). OUT is checked before any work.
    Under torchrun every rank trains and only rank 0 writes.

    Args:
        task: a registered track ("typographic", "gender", "pairs", or a plugin's).
        method: a registered loss ("dpo", "ipo", "kto", "ce", ...).
        out: the run's folder.
        mode: "w" trains the shared projection W on cached features; "full" fine-tunes the image
            encoder (typographic task).
        overrides: TrainConfig fields; None keeps the track's default.
        checkpoint_every: steps between checkpoints in OUT.partial (None: W 20, full 200; 0: never).
        resume: continue the unfinished run in OUT.partial; one of another model, weights, data or
            config is refused.
        overwrite: replace a finished run in OUT (otherwise refused).
        train_text: full mode: fine-tune the text encoder too.
        lock_image: full mode: keep the image encoder frozen (open_clip's --lock-image).
        report_to: "tensorboard" (OUT/tensorboard) and/or "wandb", each step under TRL's names.
        eval_every: validation metrics of the current W every so many steps (the track's validator),
            in the history and under "eval/" in the reporters; 0: off.
        model: "toy" or an open_clip model name.
        pretrained: an open_clip tag or a local checkpoint (load_clip).
        device: where the model runs and W trains (None: a GPU where there is one).
        cache: read and write the feature cache.
        progress: show progress bars.
        **data: the data flags (make_spec: dataset, root, n_train, n_test, seed, reg_images,
            val_share, download) and the encoder's (workers, precision).

    Returns:
        dict: {"metrics": {"base", "trained", "config", ...}, "written": [paths]}; an empty dict on
        ranks other than 0.
    """
    track = _track(task)
    if mode not in ("w", "full"):
        raise ValueError(f"unknown mode {mode!r}; use w or full")
    conflicts.refuse("train", dict(task=task, mode=mode, train_text=train_text, lock_image=lock_image,
                                   overrides=overrides, eval_every=eval_every, **data))  # fmt: skip
    track.train_config(method, **(overrides or {}))  # a bad value is one line before any work
    if eval_every and not hasattr(track, "validator"):
        raise ValueError(f"--eval-every scores W on validation data: the {task} track has none (no validator)")
    reporting.check(report_to)
    pretrained = _resolved(pretrained)
    encoding = {k: data.pop(k) for k in ("workers", "precision") if k in data}
    root = Path(data["root"]).expanduser().resolve() if data.get("root") else None
    if root is not None and root.is_dir() and Path(out).expanduser().resolve().is_relative_to(root):
        raise ValueError(
            f"--out {out} lies inside the dataset folder {root}: its files would be read as data; write it elsewhere"
        )
    if dist.init() and device is None:
        device = dist.local_device()
    started = time.perf_counter()
    with manifest.RunFolder(out, overwrite=overwrite, resume=resume, writer=dist.is_main()) as folder:
        resume = folder.resume  # False when OUT.partial held no checkpoint yet: the run starts over
        if not resume and dist.is_main():  # what --resume reads back, so that no flag must be typed again
            asked = dict(task=task, method=method, mode=mode, overrides=overrides or {}, train_text=train_text,
                         lock_image=lock_image,
                         checkpoint_every=checkpoint_every, report_to=list(report_to), eval_every=eval_every,
                         model=model, pretrained=pretrained, **data, **encoding)  # fmt: skip
            asked.pop("workers", None)  # how to read the data, not what: free to change on resume
            write_json(folder.work / REQUEST, as_recorded(asked))
        models.check_model(model, pretrained)  # a bad name, tag or file, then a bad data flag: one line
        spec = make_spec(task, model=model, **data)  # before the model loads
        if task == "typographic" and not resume:  # a size typed for a new run is a size used
            typographic.refuse_capped_sizes(spec, data.get("n_train"), data.get("n_test"))
        if getattr(spec, "duplicates", None) and dist.is_main():
            print(duplicates_line(spec.duplicates), file=sys.stderr)
        bundle = models.load_clip(model, pretrained=pretrained, device=device)
        overrides = dict(overrides or {})
        if mode == "full":  # the model's own starting rate and the paper's 3 epochs, unless given
            overrides["lr"] = overrides.get("lr") or bundle.finetune_lr
            overrides["epochs"] = overrides.get("epochs") or 3
            overrides["orth"] = 0.0
        cfg = track.train_config(method, **overrides)
        run = run_manifest(bundle, pretrained, task, spec, data, mode=mode, train_text=train_text, t=1.0,
                           **({"lock_image": True} if lock_image else {}))  # fmt: skip
        # what the checkpoint pins: the run (model, weights, task, data) and how its features are made
        identity = {k: run[k] for k in manifest.IDENTITY} | encoding_identity(bundle, encoding.get("precision", "auto"))
        work = folder.work
        checkpoint = work / "checkpoint.safetensors"
        if resume:  # before any image is encoded
            check_checkpoint(checkpoint, {**asdict(cfg), **identity})
        spec, feats = features(bundle, task, cache=cache, progress=progress, spec=spec, **encoding)
        # W (default: a checkpoint every 20 steps) or the encoders (every 200: a checkpoint is the model)
        every = checkpoint_every if checkpoint_every is not None else (20 if mode == "w" else 200)
        start = checkpoint_step(checkpoint) if resume else None  # TensorBoard drops what came after it
        reporter = Reporter(report_to, work / "tensorboard", {**asdict(cfg), **identity}, Path(out).name, start)
        checkpointing = dict(checkpoint=checkpoint, checkpoint_every=every if dist.is_main() else 0, resume=resume,
                             identity=identity, report=reporter if report_to else None,
                             eval_every=eval_every or 0)  # fmt: skip
        try:
            if mode == "w":
                validate = getattr(track, "validator", lambda feats: None)(feats) if eval_every else None
                if eval_every and validate is None:
                    none = typographic.NO_VALIDATION if task == "typographic" else f"this {task} data has none"
                    raise ValueError(f"--eval-every scores W on validation data, and {none}")
                # W trains where the model runs
                proj, hist = track.train(feats, cfg, progress=progress, validate=validate, device=bundle.device,
                                         **checkpointing)  # fmt: skip
                trained = track.evaluate(feats, proj)
            else:
                tuned, hist, trained = _finetune(bundle, spec, feats, cfg, cache, progress, train_text, lock_image,
                                                 checkpointing, **encoding)  # fmt: skip
        finally:
            reporter.close()
        if not dist.is_main():
            return {}
        run["config"] = dict(cfg.__dict__)
        header = _header(run)
        if mode == "w":
            written = proj.save(work / "projection.safetensors", **header)
        else:  # the whole model under open_clip's names: open_clip loads it as it is
            written = save_tensors(work / "model.safetensors", saved_state(tuned.model), header)
        metrics = {
            "base": track.evaluate(feats) if mode == "w" else without_w(track.evaluate(feats)),  # full: no W at all
            "trained": trained,
            "config": {**cfg.__dict__, "model": model, "pretrained": pretrained or "", "task": task, "mode": mode},
            "seconds": round(time.perf_counter() - started, 1),  # this invocation
            "train_seconds": hist["elapsed_s"][-1] if hist.get("elapsed_s") else None,  # every step, resumes too
            "final_loss": hist["loss"][-1] if hist["loss"] else None,
            "world_size": dist.world(),
        }
        steps = [json.dumps({k: v[i] for k, v in hist.items()}) for i in range(len(hist["loss"]))]
        names = [written.name, write_json(work / "metrics.json", metrics).name]
        names.append(write_text(work / "history.jsonl", "\n".join(steps) + "\n").name)
        final = folder.commit(run)
        return {"metrics": metrics, "written": [str(final / n) for n in [*names, manifest.MANIFEST]]}
