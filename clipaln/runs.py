"""Runs: what `clipaln train` and `clipaln eval` do, as library calls that return plain dicts.

    result = runs.train_run("typographic", method="dpo", out="runs/dpo")          # the toy world
    result = runs.eval_run("typographic", projection="runs/dpo/projection.safetensors", t=1.5)

A run loads the model, builds the task's data and features (encoded once, cached), trains W (or
fine-tunes the image encoder, or both encoders with train_text) with the track's defaults,
evaluates, and writes OUT/projection.safetensors (OUT/model.safetensors for full fine-tuning: the
whole model under open_clip's names), OUT/metrics.json and OUT/history.jsonl (one line per step).
Under torchrun every rank trains and only rank 0 writes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from safetensors import safe_open

from . import conflicts, fold, manifest, reporting
from . import distributed as dist
from .data.files import image_identity
from .data.real import files_fingerprint, hashing_in_full, paths_fingerprint
from .data.real import photo_set as real_photo_set
from .features import FeatureCache, encoding_identity, model_fingerprint
from .finetune import saved_state
from .io import save_tensors, write_json, write_text
from .models import ClipBundle, load_clip
from .projection import FORMAT as PROJECTION_FORMAT
from .projection import SharedProjection, exponents
from .reporting import Reporter
from .toyworld.model import toy_config
from .tracks import TRACKS, gender, pairs, protocol, typographic
from .train import TrainConfig, check_checkpoint, checkpoint_step


def train_config(task: str, method: str, overrides: dict) -> TrainConfig:
    """The TrainConfig a run of `task` trains with: the track's defaults for `method`, then overrides."""
    return _track(task).train_config(method, **overrides)


def _track(task: str):
    if task not in TRACKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TRACKS)}")
    return TRACKS[task]


def make_spec(
    task: str,
    model: str = "toy",
    dataset: str | None = None,
    root: str | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = False,
    reg_images: str | None = None,
    val_share: float | None = None,
    whole: bool = False,
) -> typographic.Spec | gender.Spec | pairs.Spec:
    """The task's data: the toy world for the toy model, else a dataset by name (or "folder") at root.

    n_train / n_test: images to train on and to evaluate on (gender: people, spread over the
    toy world's (activity, gender) cells); None keeps the track's default. val_share (pairs): a share
    of the images held out for validation; whole (pairs): every row held out, a file scored whole."""
    conflicts.refuse("data", dict(task=task, dataset=dataset, root=root, n_train=n_train, n_test=n_test,
                                  download=download, reg_images=reg_images, val_share=val_share))  # fmt: skip
    options = {k: v for k, v in (("reg_images", reg_images), ("val_share", val_share), ("whole", whole)) if v}
    flags = protocol.DataFlags(model, dataset, root, n_train, n_test, seed, download)
    return _track(task).make_spec(flags, **options)


def features(
    bundle: ClipBundle,
    task: str,
    *,
    cache: bool = True,
    progress: bool = True,
    with_train: bool = True,
    spec: typographic.Spec | gender.Spec | pairs.Spec | None = None,
    workers: int | None = None,
    precision: str = "auto",
    **data,
) -> tuple[typographic.Spec | gender.Spec | pairs.Spec, typographic.Features | gender.Features | pairs.Features]:
    """(spec, features) of a task for a loaded model; `data` goes to make_spec (unless `spec` is given);
    workers and precision to the streaming encoder."""
    spec = spec or make_spec(task, model=bundle.name, **data)
    store = FeatureCache(enabled=cache)
    encoding = dict(progress=progress, workers=workers, precision=precision)
    return spec, _track(task).build_features(bundle, spec, store, with_train=with_train, **encoding)


def _finetune(bundle: ClipBundle, spec, feats, cfg, cache: bool, progress: bool, train_text: bool, lock_image: bool,
              checkpointing: dict, **encoding):  # fmt: skip
    towers = dict(train_text=train_text, lock_image=lock_image, workers=encoding.get("workers"))
    tuned, hist = typographic.finetune(bundle, spec, cfg, progress=progress, feats=feats, **towers, **checkpointing)
    store = FeatureCache(enabled=cache)
    after = typographic.build_features(tuned, spec, store, progress=progress, with_train=False, **encoding)
    return tuned, hist, typographic.evaluate(after, reference=feats)  # KL against the frozen model


def _resolved(pretrained: str | None) -> str | None:
    """A local checkpoint path as an absolute path (what a manifest records and compares); tags as given."""
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        return str(Path(pretrained).expanduser().resolve())
    return pretrained


def run_manifest(
    bundle: ClipBundle,
    pretrained: str | None,
    task: str,
    spec: typographic.Spec | gender.Spec | pairs.Spec,
    data: dict,
    **fields,
) -> dict:
    """The manifest of a run of `task` on `spec` (see clipaln.manifest): model, weights, data, split, ..."""
    return manifest.build(
        bundle_name=bundle.name,
        pretrained=pretrained,
        weights=model_fingerprint(bundle),
        task=task,
        data_key=spec.key,
        activation=bundle.activation,  # as the weights were trained: QuickGELU for OpenAI's
        **_data_fields(data),
        **fields,
    )


def _header(m: dict) -> dict:
    """What a projection or encoder file carries of its run's manifest: flat strings, and the whole as JSON."""
    flat = {k: m[k] for k in (*manifest.IDENTITY, "mode", *DATA_FIELDS) if k in m}
    return {**flat, "manifest": json.dumps(m, sort_keys=True, default=str)}


#: The arguments a run was started with, beside its checkpoints in OUT.partial (dropped with them).
REQUEST = "checkpoint.request.json"


def as_recorded(request: dict) -> dict:
    """train_run's keywords with local paths made absolute, as a started run records them (a resume
    may be typed in another folder)."""
    out = dict(request)
    for k in ("root", "reg_images"):
        if out.get(k):
            out[k] = str(Path(out[k]).expanduser().resolve())
    out["pretrained"] = _resolved(out.get("pretrained"))
    return out


def started_request(out: str | Path) -> dict | None:
    """The arguments the unfinished run in OUT.partial was started with (train_run's keywords, but
    out, resume, overwrite, device, cache and progress), or None when it recorded none. A run killed
    before its first checkpoint has its request too: --resume starts that request over from step 0."""
    work = Path(out).expanduser().with_name(Path(out).expanduser().name + ".partial")
    path = work / REQUEST
    if not path.is_file():
        return None
    fix = f"it is not what clipaln wrote: remove {work} to start over"
    try:
        request = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not JSON ({e}); {fix}") from None
    if not isinstance(request, dict):
        raise ValueError(f"{path} holds a {type(request).__name__}, not the run's request; {fix}")
    for field, kind in REQUEST_FIELDS.items():
        if not isinstance(request.get(field), kind):
            raise ValueError(f"{path}: {field} is {request.get(field)!r}, not a {kind.__name__}; {fix}")
    unknown = sorted(set(request) - {*REQUEST_FIELDS, *OPTIONAL_FIELDS})
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; {fix}")
    for field, kinds in OPTIONAL_FIELDS.items():
        value = request.get(field)
        if field in request and not (
            any(isinstance(value, k) and not (isinstance(value, bool) and k is not bool) for k in kinds)
            and (not isinstance(value, list) or all(isinstance(v, str) for v in value))
            and (not isinstance(value, float) or math.isfinite(value))
        ):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise ValueError(f"{path}: {field} is {value!r}, not {names}; {fix}")
    return request


#: What a request file must hold, and of what type; and what it may hold (train_run's other keywords).
REQUEST_FIELDS = {"task": str, "method": str, "mode": str, "overrides": dict}
_N = (int, type(None))
_S = (str, type(None))
OPTIONAL_FIELDS = {
    "checkpoint_every": _N,
    "train_text": (bool,),
    "lock_image": (bool,),
    "report_to": (list,),
    "eval_every": _N,
    "model": _S,
    "pretrained": _S,
    "dataset": _S,
    "root": _S,
    "n_train": _N,
    "n_test": _N,
    "seed": _N,
    "reg_images": _S,
    "val_share": (float, int, type(None)),
    "download": (bool,),
    "precision": (str,),
}  # fmt: skip (how a run reads its data and where it runs, the flags of the resume give: never recorded)


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
    """Train on a task and write OUT/{projection or image_encoder}.safetensors, metrics.json,
    history.jsonl and run.json (the manifest), all or nothing (see manifest.RunFolder).

    mode "w": the shared projection W on cached features; "full": fine-tune the image encoder
    (typographic task). overrides: TrainConfig fields (None keeps the track's default). OUT is checked
    before any work; an existing run is replaced only with overwrite; resume continues the unfinished
    run in OUT.partial and refuses one of another model, weights, data or config. report_to:
    "tensorboard" (events in OUT/tensorboard) and/or "wandb", each step under TRL's names. eval_every:
    validation metrics of the current W every so many steps (track.validator), in the history and
    under "eval/" in the reporters. Returns
    {"metrics": ..., "written": [paths]} (an empty dict on ranks other than 0)."""
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
        spec = make_spec(task, model=model, **data)  # a bad data flag is one line before the model loads
        if getattr(spec, "duplicates", None) and dist.is_main():
            print(duplicates_line(spec.duplicates), file=sys.stderr)
        bundle = load_clip(model, pretrained=pretrained, device=device)
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
                    raise ValueError(f"--eval-every scores W on validation data, and this {task} data has none")
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
            "base": track.evaluate(feats),
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


#: What a run records of the data it trained on, so that eval can take the same split.
DATA_FIELDS = ("dataset", "root", "n_train", "n_test", "seed", "reg_images", "val_share")


def _data_fields(data: dict) -> dict:
    root = data.get("root")
    return {
        "dataset": data.get("dataset") or "",
        "root": str(Path(root).expanduser().resolve()) if root else "",
        "n_train": data.get("n_train") or "",
        "n_test": data.get("n_test") or "",
        "seed": data.get("seed", 0),
        "reg_images": str(Path(data["reg_images"]).expanduser().resolve()) if data.get("reg_images") else "",
        **({"val_share": data["val_share"]} if data.get("val_share") else {}),
    }


def _same_data(recorded: dict, data: dict) -> dict:
    """The data flags of an eval, with what the user left out (None) taken from the run's manifest."""
    filled = dict(data)
    for k in DATA_FIELDS:
        if filled.get(k) is None and recorded.get(k, "") != "":
            convert = {"n_train": int, "n_test": int, "seed": int, "val_share": float}.get(k, lambda v: v)
            filled[k] = convert(recorded[k])
    return filled


def _check_projection(path, recorded: dict, current: dict) -> None:
    """Refuse (one line) a file of another run: one whose manifest differs from `current` (model,
    pretrained, task, weights: whichever the caller names) on an entry both have."""
    differ = manifest.differences(recorded, current, list(current))
    if differ:
        hint = " (pass --allow-other-weights to score it anyway)" if differ == ["weights"] else ""
        raise ValueError(f"{path} belongs to another run: {manifest.describe(recorded, current, differ)}{hint}")


def _identity(bundle: ClipBundle, pretrained, allow_other_weights: bool, **more) -> dict:
    """What a file must share with this model to be scored by it: name, weights tag, and (unless the
    user allows other weights) the weights' fingerprint."""
    current = {"model": bundle.name, "pretrained": pretrained or "", **more}
    if not allow_other_weights:
        current["weights"] = model_fingerprint(bundle)
    return current


def _load_encoder(bundle: ClipBundle, path, pretrained, allow_other_weights: bool) -> tuple[ClipBundle, dict]:
    """The bundle with a fine-tuned image encoder (or whole model) from `clipaln train --mode full`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder file not found: {path}")
    with safe_open(str(path), "pt") as f:
        recorded = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if recorded.get("format") == PROJECTION_FORMAT:
        raise ValueError(f"{path} is a projection W, not an encoder: pass it as --projection")
    _check_projection(path, recorded, _identity(bundle, pretrained, allow_other_weights))  # its base model
    whole = any(k.startswith("visual.") for k in state)
    tuned = copy.deepcopy(bundle.model)
    try:
        (tuned if whole else tuned.visual).load_state_dict(state)
    except RuntimeError as e:  # the first line is only "Error(s) in loading state_dict": say which keys
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[1] if len(lines) > 1 else lines[0]
        raise ValueError(f"{path} does not fit {bundle.name}: {reason[:200]}") from None
    return dataclasses.replace(bundle, model=tuned, _embed_dim=None), recorded


def eval_run(
    task: str,
    *,
    projection: str | Path | None = None,
    image_encoder: str | Path | None = None,
    photos: str | Path | None = None,
    t: float | Sequence[float] | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    device: str | None = None,
    cache: bool = True,
    progress: bool = True,
    allow_other_data: bool = False,
    allow_other_weights: bool = False,
    choose_t: bool = False,
    split: str = "test",
    **data,
) -> dict:
    """Evaluate the base model, W_t of a projection file, or a fine-tuned image encoder, on a task's
    test data (only what it scores) or, with `photos`, on a real typographic photo set. split "val":
    the run's validation split instead (typographic: clean and attacked accuracy and OCR on the
    validation images; gender: retrieval on the validation gallery), what settings are chosen on. choose_t
    (typographic, with a projection): t chosen on the run's validation split
    (typographic.choose_t), the test metrics at that t.

    typographic: the track's metrics at t (default 1); gender: the retrieval metrics of the skewed
    prompts at t (default 1 with a projection, else 0). A file written by train_run carries its run's
    manifest: eval refuses another model, weights or task, takes the data flags left out (None) from
    the run, and refuses other data (whose test split could hold the run's training images) unless
    allow_other_data (a photo set is never training data). A projection with no record of its training
    data (a W fitted on hand-made PreferenceData) is refused unless allow_other_data. model / pretrained
    left None come from the projection's manifest (else the toy). Several t (a list) load the model and
    encode once and return {"rows": [one result per t], "source": ...}. The result's "source" says what was scored."""
    if split not in ("test", "val"):
        raise ValueError(f"split is 'test' or 'val', got {split!r}")
    conflicts.refuse("eval", dict(task=task, projection=projection, image_encoder=image_encoder, t=t,
                                  choose_t=choose_t, photos=photos, split=split, **data))  # fmt: skip
    ts = None if t is None or isinstance(t, (int, float)) else [_t_value(v) for v in t]
    t = None if t is None else (ts[0] if ts is not None else _t_value(t))
    _track(task)
    encoding = {k: data.pop(k) for k in ("workers", "precision") if k in data}
    for f in (projection, image_encoder):
        if f is not None and Path(f).expanduser().is_file():
            manifest.verify(Path(f).expanduser())  # the bytes its run wrote, before anything reads them
    if model is None:  # the run's model and weights, as its manifest names them
        meta = SharedProjection.load(Path(projection).expanduser()).metadata if projection is not None else {}
        model = meta.get("model") or "toy"
        pretrained = pretrained if pretrained is not None else (meta.get("pretrained") or None)
    pretrained = _resolved(pretrained)
    bundle = load_clip(model, pretrained=pretrained, device=device)
    proj, recorded = None, {}
    if projection is not None:  # checked before any image is encoded
        proj = SharedProjection.load(Path(projection).expanduser(), dim=bundle.embed_dim)
        recorded = proj.metadata
        _check_projection(projection, recorded, _identity(bundle, pretrained, allow_other_weights, task=task))
        if "data" not in recorded and photos is None and not allow_other_data:
            raise ValueError(
                f"{projection} carries no record of the data it was trained on, so this test split could hold "
                "its training images; pass --allow-other-data to score it anyway"
            )
    base = bundle
    if image_encoder is not None:
        bundle, recorded = _load_encoder(bundle, image_encoder, pretrained, allow_other_weights)
    t = (1.0 if proj is not None else 0.0) if t is None else t
    scaled = proj.scaled(t) if proj is not None else None
    source = {
        "projection": str(Path(projection).expanduser().resolve()) if projection else None,
        "image_encoder": str(Path(image_encoder).expanduser().resolve()) if image_encoder else None,
        "t": t if proj is not None else None,
        "model": model,
        "pretrained": pretrained or "",
        "weights": model_fingerprint(base),
    }
    if photos is not None:
        photo_set = real_photo_set(photos)
        source |= {"photos": str(Path(photos).expanduser().resolve()), "files": files_fingerprint(photo_set.root)}
        result = typographic.evaluate_photos(bundle, photo_set, scaled, **encoding)
        return {"t": source["t"], **result, "source": source}
    data = _same_data(recorded, data) if recorded else data
    data["seed"] = 0 if data.get("seed") is None else data["seed"]
    whole = _separate_pairs_file(recorded, data, split) if task == "pairs" and not allow_other_data else False
    full = json.loads(recorded.get("data_key") or "{}").get("files", "").startswith("content:")
    with hashing_in_full(full or None):  # the run's files were fingerprinted by content: so are these
        spec = make_spec(task, model=model, whole=whole, **data)
    if "data" in recorded and recorded["data"] != manifest.digest(spec.key) and not (allow_other_data or whole):
        raise ValueError(
            f"{projection or image_encoder} was trained on other data (or the files under its root changed since): "
            "its test split would not be this one and could hold training images; omit the data flags to use "
            "the run's, or pass --allow-other-data"
        )
    source |= {"data": manifest.digest(spec.key), "data_key": spec.key, "split": split}
    if image_encoder is not None:  # KL against the frozen model, on the same test images
        _, ref = features(base, task, cache=cache, progress=progress, with_train=False, spec=spec, **encoding)
        _, feats = features(bundle, task, cache=cache, progress=progress, with_train=False, spec=spec, **encoding)
        return {"t": None, **typographic.evaluate(feats, reference=ref), "source": source}
    if choose_t:  # t on the validation split (encoded with the training split, as the run was), test at that t
        _, feats = features(bundle, task, cache=cache, progress=progress, with_train=True, spec=spec, **encoding)
        chosen = typographic.choose_t(feats, proj)
        return {
            "t": chosen["t"],
            **chosen["test"],
            "chosen_on": chosen["chosen_on"],
            "val": chosen["val"],
            "source": {**source, "t": chosen["t"]},
        }
    val = split == "val"  # the typographic validation split is encoded with the training split
    _, feats = features(bundle, task, cache=cache, progress=progress, with_train=val, spec=spec, **encoding)
    scores = protocol.evaluator(_track(task), feats, proj, split)
    at = lambda t: {"t": t if proj is not None else None, **scores(t)}
    if ts is not None:
        return {"rows": [at(v) for v in ts], "source": {**source, "t": ts}}
    return {**at(t), "source": source}


def duplicates_line(duplicates: dict[str, list[str]]) -> str:
    """One line on images a pairs file lists under several names: how many, each with its count."""

    def one(first: str, more: list[str]) -> str:
        names = ", ".join(Path(m).name for m in more[:2]) + (", ..." if len(more) > 2 else "")
        return f"{Path(first).name} x{1 + len(more)} (also {names})"

    shown = "; ".join(one(first, more) for first, more in list(duplicates.items())[:3])
    return (
        f"note: {len(duplicates)} image(s) are listed under more than one name (the same pixels), kept together "
        f"in one split: {shown}{' ...' if len(duplicates) > 3 else ''}"
    )


def _separate_pairs_file(recorded: dict, data: dict, split: str) -> bool:
    """Is `data` a pairs file other than the run's, none of whose images the run trained on (then it is
    scored whole, every row held out)? A file holding training images is refused in one line."""
    if not recorded.get("root") or not data.get("root"):
        return False
    if Path(data["root"]).expanduser().resolve() == Path(recorded["root"]):
        return False
    given = Path(data["root"]).expanduser().resolve()
    files = paths_fingerprint([given, *sorted({r[0] for r in pairs.read_pairs(given)})])
    if files == json.loads(recorded.get("data_key") or "{}").get("files"):  # the run's file, copied elsewhere
        return False
    if split == "val":
        raise ValueError("--split val scores the run's own validation pairs: omit --pairs")
    try:
        own = _same_data(recorded, {k: None for k in DATA_FIELDS})
        run = make_spec("pairs", **{k: v for k, v in own.items() if v is not None and k != "dataset"})
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(
            f"cannot check that {data['root']} holds none of the run's training images (its own pairs file: {e}); "
            "pass --allow-other-data to score it anyway, split as the run's was"
        ) from None
    # an image is its decoded pixels: a training image re-saved or renamed is still a training image
    trained: dict[str, str] = {}
    for i in run.train_idx:  # each image by its first name in the run's file
        trained.setdefault(image_identity(run.rows[i][0]), run.rows[i][0].name)
    mine = {image_identity(p) for p in {r[0] for r in pairs.read_pairs(data["root"])}}
    seen = sorted(trained[h] for h in mine & set(trained))
    if seen:
        raise ValueError(
            f"{data['root']} holds {len(seen)} image(s) this W was trained on ({', '.join(seen[:3])}): score a file "
            "without them, or pass --allow-other-data to split it as the run's was"
        )
    return True


def _t_value(t) -> float:
    """One t of an eval, as a float (one line for what is not a finite number)."""
    return float(exponents(t))


def export_run(
    projection: str | Path,
    *,
    out: str | Path,
    t: float = 1.0,
    device: str | None = None,
    allow_other_weights: bool = False,
    overwrite: bool = False,
    model: str | None = None,
    pretrained: str | None = None,
) -> dict:
    """Fold W_t of a projection (a file, or a SharedProjection in memory) into its model and write it
    for plain open_clip: OUT.safetensors (and, for the toy or any registered config, OUT.json beside
    it), or, when OUT has no suffix, a folder in open_clip's hub layout with a model card, which
    "local-dir:OUT" loads. The model and weights come from the projection's record (a W fitted on
    PreferenceData from clipaln carries one), or from model= and pretrained=; the weights are checked
    against its fingerprint. Nothing existing is replaced unless overwrite."""
    if isinstance(projection, SharedProjection):
        path, meta = Path("the projection in memory"), dict(projection.metadata)
    else:
        path = Path(projection).expanduser()
        if path.is_file():
            manifest.verify(path)
        meta = SharedProjection.load(path).metadata
    if model is not None:
        meta = {**meta, "model": model, "pretrained": pretrained or meta.get("pretrained", "")}
    if "model" not in meta:
        raise ValueError(
            f"{path} carries no record of its model: pass model= (and pretrained=) to export, or fit W on "
            "PreferenceData that records one (PreferenceData.from_captions and the tracks' features do)"
        )
    model, pretrained = meta["model"], meta.get("pretrained") or None
    out = Path(out).expanduser().absolute()
    fold.check_out(out, overwrite)  # before the model loads (seconds for a ViT)
    bundle = load_clip(model, pretrained=pretrained, device=device or "cpu")
    proj = projection if isinstance(projection, SharedProjection) else SharedProjection.load(path, dim=bundle.embed_dim)
    if proj.dim != bundle.embed_dim:
        raise ValueError(f"{path} is {proj.dim}-d; {model}'s embeddings are {bundle.embed_dim}-d")
    _check_projection(path, meta, _identity(bundle, pretrained, allow_other_weights))  # any task folds alike
    other_weights = bool(meta.get("weights")) and meta["weights"] != model_fingerprint(bundle)
    if other_weights:  # allowed, and said: a W folded into weights it was not trained on
        warnings.warn(
            f"{path} was trained on other weights of {model} than {pretrained or 'its random init'}: "
            "the export folds it into these, as --allow-other-weights asked",
            stacklevel=2,
        )
    toy = toy_config() if model == "toy" and pretrained is None else None
    header = {
        "source": str(path.resolve()) if path.is_file() else "memory",
        "t": t,
        "model": model,
        "pretrained": pretrained or "",
        "format": "pt",
    }
    if toy is not None:  # not open_clip's default normalisation: pass image_mean / image_std when loading
        header |= {"image_mean": json.dumps(toy["image_mean"]), "image_std": json.dumps(toy["image_std"])}
    config = fold.open_clip_config(model, toy, quick_gelu=bundle.activation == "quick_gelu")
    if out.is_symlink() and not out.exists():
        raise ValueError(
            f"--out {out} is a symbolic link to nothing ({os.readlink(out)}): remove it or choose another --out"
        )
    with manifest.OutLock(out.with_suffix("") if out.suffix else out):  # one export (or run) of OUT at a time
        state = fold.fold_projection(bundle.model, proj.scaled(t).exact)
        card = lambda: _model_card(path, meta, model, pretrained, t, other_weights)
        written = _write_export(state, out, config, _preprocess_cfg(bundle), header, card, overwrite, model)
    return {
        "written": [str(p) for p in written],
        "model": model,
        "t": t,
        "layout": "file" if out.suffix else "folder",
        **{k: header[k] for k in ("image_mean", "image_std") if k in header},
    }


def _write_export(state, out: Path, config, preprocess: dict, header: dict, card, overwrite: bool, model: str):
    """One .safetensors (with its config beside it), or an open_clip hub folder with a model card."""
    if out.suffix:
        return fold.export_checkpoint(state, out, config, header, overwrite)
    if config is None:
        raise ValueError(f"open_clip has no config for {model!r}: export it as one .safetensors file instead")
    return fold.export_folder(state, out, config, preprocess, header, card(), overwrite)


def export_finetuned(
    model_file: str | Path,
    *,
    out: str | Path,
    device: str | None = None,
    allow_other_weights: bool = False,
    overwrite: bool = False,
) -> dict:
    """Write the model a full fine-tuning run trained (OUT/model.safetensors of `train --mode full`)
    for plain open_clip, as export_run writes a W folded in: a folder with its config (QuickGELU where
    its weights were trained with it), its weights under open_clip's names and a model card, or one
    .safetensors file. Its base model is checked against the run's record first."""
    path = Path(model_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"fine-tuned model not found: {path}")
    manifest.verify(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("mode") != "full":
        raise ValueError(
            f"{path} is not the model of a full fine-tuning run (train --mode full): export a W with --projection"
        )
    model, pretrained = meta["model"], meta.get("pretrained") or None
    out = Path(out).expanduser().absolute()
    fold.check_out(out, overwrite)
    base = load_clip(model, pretrained=pretrained, device=device or "cpu")
    tuned, recorded = _load_encoder(base, path, pretrained, allow_other_weights)
    header = {"source": path.name, "model": model, "pretrained": _names_only(pretrained or ""), "mode": "full"}
    config = fold.open_clip_config(model, None, quick_gelu=base.activation == "quick_gelu")
    card = lambda: _finetuned_card(path, meta, model, pretrained)
    with manifest.OutLock(out.with_suffix("") if out.suffix else out):
        written = _write_export(
            saved_state(tuned.model), out, config, _preprocess_cfg(base), header, card, overwrite, model
        )
    return {"written": [str(p) for p in written], "model": model, "layout": "file" if out.suffix else "folder"}


def _finetuned_card(path: Path, meta: dict, model: str, pretrained) -> str:
    """README.md for an exported fine-tuned model."""
    weights = f"weights `{_names_only(pretrained)}`" if pretrained else "random init (seeded), not trained weights"
    run = json.loads(meta.get("manifest") or "{}")
    trained = "both encoders" if run.get("train_text") else "the image encoder"
    lines = [
        f"# {model} fine-tuned with clipaln (full fine-tuning of {trained})",
        "",
        f"Base model: open_clip `{model}`, {weights}. Preference optimisation (Afzali et al., ICLR 2025) trained",
        f"{trained}; the weights are the whole model under open_clip's names.",
        "",
        "```python",
        "import open_clip",
        'model, _, preprocess = open_clip.create_model_and_transforms("local-dir:PATH/TO/THIS/FOLDER")',
        'tokenizer = open_clip.get_tokenizer("local-dir:PATH/TO/THIS/FOLDER")  # no clipaln needed',
        "```",
        "",
        "## The run (run.json)",
        "",
        "```json",
        json.dumps(_names_only(run), indent=1),
        "```",
    ]
    return "\n".join(lines) + "\n"


def _preprocess_cfg(bundle: ClipBundle) -> dict:
    """open_clip's preprocess_cfg (size, mean, std) of the bundle's own image transform."""
    from torchvision.transforms import Normalize, Resize

    steps = getattr(bundle.preprocess, "transforms", [])
    norm = next((s for s in steps if isinstance(s, Normalize)), None)
    size = next((s.size for s in steps if isinstance(s, Resize)), None)
    out = {}
    if norm is not None:
        out |= {"mean": [float(m) for m in norm.mean], "std": [float(s) for s in norm.std]}
    if size is not None:
        out["size"] = size if isinstance(size, int) else list(size)
    return out


def _model_card(path: Path, meta: dict, model: str, pretrained, t: float, other_weights: bool = False) -> str:
    """README.md for an exported folder: what it is, how to load it, and the run it came from (file
    paths by their names only: a card is shared, the folders it came from are not)."""
    run = path.parent / "run.json"
    metrics = path.parent / "metrics.json"
    if pretrained:
        weights = f", weights `{_names_only(pretrained)}`"
    else:
        weights = " (the toy CLIP of clipaln)" if model == "toy" else " at random init (seeded), not trained weights"
    lines = [
        f"# {model} with clipaln's W_t folded in (t = {t})",
        "",
        f"Base model: open_clip `{model}`"
        + weights
        + ". W_t = U S^t V^T (Afzali et al., ICLR 2025) is multiplied into the last linear map of each tower,",
        "so this model scores every (image, caption) pair as clipaln's W_t does.",
        "",
        *(
            [
                "**W was trained on other weights than these** (exported with --allow-other-weights): its",
                "numbers are not this model's.",
                "",
            ]
            if other_weights
            else []
        ),
        "```python",
        "import open_clip",
        'model, _, preprocess = open_clip.create_model_and_transforms("local-dir:PATH/TO/THIS/FOLDER")',
        *(
            [
                "# the toy CLIP reads a 66-word vocabulary, not CLIP's BPE: open_clip.get_tokenizer would",
                "# give the wrong one. Its tokenizer comes with clipaln (pip install clipaln):",
                "import clipaln",
                'tokenizer = clipaln.load_clip("toy").tokenizer',
            ]
            if model == "toy"
            else ['tokenizer = open_clip.get_tokenizer("local-dir:PATH/TO/THIS/FOLDER")  # no clipaln needed']
        ),
        "```",
        "",
        "## The projection",
        "",
        "```json",
        json.dumps(_names_only({k: meta[k] for k in sorted(meta)}), indent=1),
        "```",
    ]
    for title, f in (("The run (run.json)", run), ("Its metrics (metrics.json)", metrics)):
        if path.is_file() and f.is_file():  # a W from memory has no run beside it
            text = json.dumps(_names_only(json.loads(f.read_text())), indent=1)
            lines += ["", f"## {title}", "", "```json", text, "```"]
    return "\n".join(lines) + "\n"


def _names_only(value):
    """`value` with every absolute path in it (a string, or inside JSON text, lists and dicts) cut to
    its last part."""
    if isinstance(value, dict):
        return {k: _names_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_names_only(v) for v in value]
    if isinstance(value, str):
        if value.startswith(("{", "[")):
            try:
                return json.dumps(_names_only(json.loads(value)), sort_keys=True)
            except ValueError:
                pass
        return re.sub(r"(?<![\w.])(?:/|~/|[A-Za-z]:\\)[^\s\"']*", lambda m: Path(m.group()).name or m.group(), value)
    return value
