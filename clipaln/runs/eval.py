"""eval_run: what `clipaln eval` does."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from safetensors import safe_open

from .. import conflicts, manifest, models
from ..data.files import image_identity
from ..data.fingerprint import files_fingerprint, hashing_in_full, paths_fingerprint
from ..data.real import photo_set as real_photo_set
from ..features import model_fingerprint
from ..projection import SharedProjection
from ..tracks import pairs, protocol, typographic
from .common import (
    DATA_FIELDS,
    _check_projection,
    _identity,
    _load_encoder,
    _resolved,
    _same_data,
    _t_value,
    _track,
    features,
    make_spec,
)


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
    test data (only what it scores), or, with ``photos``, on a real typographic photo set.

    A file written by train_run carries its run's manifest: eval refuses another model, weights or
    task, takes the data flags left out (None) from the run, and refuses other data (whose test
    split could hold the run's training images) unless allow_other_data (a photo set is never
    training data). A projection with no record of its training data is refused unless
    allow_other_data.

    Args:
        task: a registered track.
        projection: a projection.safetensors from train_run (None: the base model).
        image_encoder: a model.safetensors from ``--mode full``.
        photos: typographic: a real photo set (annotation.json, or label=X_text=Y.jpg files).
        t: the scale of W_t, or several (one row each, one model load and one encode); None: 1 with a
            projection, else 0.
        model: "toy" or an open_clip name; None: the projection's run's (else the toy).
        pretrained: its weights; None: the projection's run's.
        device: where the model runs.
        cache: read and write the feature cache.
        progress: show progress bars.
        allow_other_data: score data other than the run's.
        allow_other_weights: score with weights other than the run's.
        choose_t: typographic: t chosen on the run's validation split (typographic.choose_t), the test
            metrics at that t.
        split: "test" (reported) or "val" (what settings are chosen on).
        **data: the data flags (make_spec) and the encoder's (workers, precision).

    Returns:
        dict: the track's metrics at t with "t" and "source" (what was scored: files, model, weights,
        data); with several t, {"rows": [one result per t], "source": ...}.
    """
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
        meta = {}
        if projection is not None:
            meta = SharedProjection.load(Path(projection).expanduser()).metadata
        elif image_encoder is not None and Path(image_encoder).expanduser().is_file():
            with safe_open(str(Path(image_encoder).expanduser()), "pt") as f:
                meta = f.metadata() or {}
        model = meta.get("model") or "toy"
        pretrained = pretrained if pretrained is not None else (meta.get("pretrained") or None)
    pretrained = _resolved(pretrained)
    models.check_model(model, pretrained)  # one line for a bad name, tag or file, before the data flags
    spec = None
    if projection is None and image_encoder is None and photos is None:  # the base model, on the data given:
        data["seed"] = 0 if data.get("seed") is None else data["seed"]  # a bad data flag is one line before
        spec = make_spec(task, model=model, **data)  # the model loads
    bundle = models.load_clip(model, pretrained=pretrained, device=device)
    proj, recorded = None, {}
    if projection is not None:  # checked before any image is encoded
        proj = SharedProjection.load(Path(projection).expanduser(), dim=bundle.embed_dim)
        recorded = proj.metadata
        # PreferenceData.from_captions records the task "pairs"; a W it made before 2026-12-07 says "captions"
        fitted_in_python = task == "pairs" and recorded.get("task") == "captions"
        tasks = {} if fitted_in_python else {"task": task}
        _check_projection(projection, recorded, _identity(bundle, pretrained, allow_other_weights, **tasks))
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
    if spec is None:
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
    given = {image_identity(p) for p in {r[0] for r in pairs.read_pairs(data["root"])}}
    seen = sorted(trained[h] for h in given & set(trained))
    if seen:
        raise ValueError(
            f"{data['root']} holds {len(seen)} image(s) this W was trained on ({', '.join(seen[:3])}): score a file "
            "without them, or pass --allow-other-data to split it as the run's was"
        )
    return True
