"""clipaln: preference optimisation (DPO, IPO, KTO) for CLIP-like contrastive models."""

from ._version import __version__
from .models import ClipBundle, load_clip
from .policy import PreferenceData
from .projection import SharedProjection, SpectralScorer
from .runs import export_run as export
from .train import TrainConfig, fit_projection

__all__ = [
    "load_clip",
    "ClipBundle",
    "SharedProjection",
    "SpectralScorer",
    "PreferenceData",
    "TrainConfig",
    "fit_projection",
    "export",
    "__version__",
]
