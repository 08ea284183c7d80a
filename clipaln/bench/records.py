"""Recorded results: what a benchmark was made with, and reading a recorded one back (notebooks show
recorded multi-seed tables instead of training them again)."""

from __future__ import annotations

import json
from pathlib import Path

from .._version import __version__
from ..features import (
    model_fingerprint,
)
from ..models import ClipBundle
from ..tracks import gender, typographic


def made_with(bundle: ClipBundle, spec: typographic.Spec | gender.Spec) -> dict:
    """What a result was measured on: the model's weights (fingerprint), the data (the spec's key)
    and clipaln's version. Saved in every table's JSON so that `recorded` can tell whose it is."""
    return {
        "model": model_fingerprint(bundle),
        "data": json.loads(json.dumps(spec.key, default=str)),
        "clipaln": __version__,
    }


def recorded(path: str | Path, bundle: ClipBundle, spec: typographic.Spec | gender.Spec) -> dict | None:
    """A table saved as JSON (`clipaln bench ... --json > path`) if it was measured on this model's
    weights and this spec's data; None if the file is absent or was measured on anything else.
    Notebooks show a recorded many-seed table this way and check one live seed against it."""
    path = Path(path)
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    mine = made_with(bundle, spec)
    theirs = result.get("made_with", {})
    if any(theirs.get(k) != mine[k] for k in ("model", "data")):
        return None
    return {**result, "recorded_in": str(path)}


def provenance(result: dict) -> str:
    """One line saying where a table's numbers come from: a recording (which file, which clipaln) or this run."""
    how = f"seeds {result['seeds']}, {result['total_seconds']:.0f} s to measure"
    if "recorded_in" in result:
        version = result["made_with"]["clipaln"]
        return f"recorded in {result['recorded_in']} by clipaln {version} ({how}) on this model and data"
    return f"measured now ({how})"
