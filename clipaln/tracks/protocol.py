"""What a track is: the contract `runs` and the command line hold each experiment to.

A track is a module (or any object) with the five functions of `Track`; `clipaln.tracks.register`
adds it to `TRACKS` (or the entry-point group "clipaln.tracks" of an installed package, for the
shell), after which `clipaln train NAME` and `clipaln eval NAME` run it (CONTRIBUTING.md has the
recipe; tests/test_tracks_protocol.py and tests/test_plugins.py add one each way). A method it does
not train is refused by its train_config. Optional members, with the defaults `runs` takes where a
track has none:

- `validator(feats) -> Callable[[W | None], dict] | None`: validation metrics for `--eval-every`
  (default: none, and `--eval-every` is refused);
- `evaluator(feats, projection, split) -> Callable[[float], dict]`: t -> its metrics of W_t on the
  split, "test" or "val" (default: `evaluate(feats, W_t)` on the test split; "val" is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..projection import SharedProjection
from ..train import TrainConfig


@dataclass(frozen=True)
class DataFlags:
    """The command line's data flags, as every track's make_spec reads them."""

    model: str = "toy"
    dataset: str | None = None
    root: str | None = None
    n_train: int | None = None  # None: the track's default
    n_test: int | None = None
    seed: int = 0
    download: bool = False


@runtime_checkable
class Track(Protocol):
    def make_spec(self, data: DataFlags) -> Any:
        """The task's data from the command line's data flags: a spec with a `key` (str) that names the
        data (the feature cache's key and what eval checks a run's split against). A flag it does not
        read is refused with one line (ValueError), never ignored."""

    def build_features(self, bundle: Any, spec: Any, cache: Any = None, **encoding: Any) -> Any:
        """The spec's images and captions encoded by `bundle` (a ClipBundle), through `cache` (a
        FeatureCache or None); `encoding`: progress, workers, precision, with_train (False: only what
        evaluation reads)."""

    def train_config(self, method: str, **overrides: Any) -> TrainConfig:
        """The TrainConfig of `method` on this track, `overrides` (TrainConfig fields) applied."""

    def train(self, feats: Any, cfg: TrainConfig, **training: Any) -> tuple[SharedProjection, Any]:
        """(W, its history): the shared projection fitted to the features' training pairs.
        `training`: progress, validate, device and the checkpointing keywords of
        `clipaln.train.fit_projection`, passed on to it."""

    def evaluate(self, feats: Any, projection: SharedProjection | None = None) -> dict:
        """The track's metrics on the test split, of the base model (None) or of W: fractions,
        namespaced (`accuracy/...`, `preference/...`), and None where a metric does not apply."""


def evaluator(
    track: Any, feats: Any, projection: SharedProjection | None, split: str = "test"
) -> Callable[[float], dict]:
    """t -> the track's metrics of W_t on `split`: the track's own `evaluator`, or `evaluate` on the
    test split (a track without one has no validation split to score)."""
    if hasattr(track, "evaluator"):
        return track.evaluator(feats, projection, split)
    if split != "test":
        raise ValueError("this track has no validation split to score")
    return lambda t: track.evaluate(feats, None if projection is None else projection.scaled(t))
