"""clipaln: preference optimisation (DPO, IPO, KTO) for CLIP-like contrastive models."""
from .models import ClipBundle, load_clip
from .projection import SharedProjection, SpectralScorer
from .train import PreferenceData, TrainConfig, fit_projection

__version__ = "0.1.0"
__all__ = ["load_clip", "ClipBundle", "SharedProjection", "SpectralScorer", "PreferenceData",
           "TrainConfig", "fit_projection", "__version__"]
