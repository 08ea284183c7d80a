"""clipaln: preference optimisation (DPO, IPO, KTO) for CLIP-like contrastive models."""

from . import runs, tracks
from ._version import __version__
from .features import FeatureCache
from .losses import register as register_loss
from .models import ClipBundle, load_clip
from .policy import PreferenceData, similarities
from .projection import SharedProjection, SpectralScorer
from .runs import export_run as export
from .tracks.pairs import read_pairs
from .train import TrainConfig, fit_projection, preference_accuracy

__all__ = [
    "load_clip",
    "ClipBundle",
    "SharedProjection",
    "SpectralScorer",
    "PreferenceData",
    "TrainConfig",
    "fit_projection",
    "export",
    "FeatureCache",
    "similarities",
    "read_pairs",
    "preference_accuracy",
    "register_loss",
    "runs",
    "tracks",
    "__version__",
]
