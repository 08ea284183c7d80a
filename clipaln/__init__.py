"""clipaln: preference optimisation (DPO, IPO, KTO) for CLIP-like contrastive models.

The names below load on first use (PEP 562), so that `clipaln --help` does not wait for torch."""

import importlib

from ._version import __version__

#: Public name -> (module, attribute; None: the module itself).
_PUBLIC = {
    "load_clip": ("models", "load_clip"),
    "ClipBundle": ("models", "ClipBundle"),
    "SharedProjection": ("projection", "SharedProjection"),
    "SpectralScorer": ("projection", "SpectralScorer"),
    "PreferenceData": ("policy", "PreferenceData"),
    "TrainConfig": ("train", "TrainConfig"),
    "fit_projection": ("train", "fit_projection"),
    "export": ("runs", "export_run"),
    "FeatureCache": ("features", "FeatureCache"),
    "similarities": ("policy", "similarities"),
    "read_pairs": ("tracks.pairs", "read_pairs"),
    "preference_accuracy": ("train", "preference_accuracy"),
    "register_loss": ("losses", "register"),
    "runs": ("runs", None),
    "tracks": ("tracks", None),
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'clipaln' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    loaded = importlib.import_module(f"{__name__}.{module}")
    value = loaded if attribute is None else getattr(loaded, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
