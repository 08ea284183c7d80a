"""The typographic experiment end to end: build D_pref / D_reg, encode once, train W, evaluate, sweep t.

One API for both experiments (see clipaln.tracks): Spec, toy_spec / real_spec, build_features,
DEFAULTS, train_config, train(feats, cfg), evaluate(feats, projection), Sweep(feats, W).at(t).
The same functions serve the toy world and real data: both give (image, label) datasets, and
attacks are written by clipaln.data.typographic.attack.

Metrics (docs/method.md section 4), fractions in [0, 1]: accuracy/clean (the paper's O), accuracy/attacked
(T, training style), accuracy/attacked_unseen (T_unseen: other fonts, colours, sizes, rotation,
words never written in training), accuracy/ocr (OCR as the paper's Fig. 2 plots it: naming the
written word on the same attacked images), accuracy/text_only (reading text-only images over the
class names), kl/clean = KL(pi_ref || pi) on clean test images, and W's spectrum (w/orthogonality_gap,
w/s_min, w/s_max; clipaln.projection.spectrum).
"""

from .experiment import (
    CHOOSE_TS,
    DEFAULTS,
    DIAL_TS,
    MAX_CLEAN_DROP,
    MIN_CLEAN_ON_DIAL,
    SHORT_NAMES,
    Sweep,
    build_features,
    choose_t,
    dial,
    evaluate,
    evaluate_photos,
    evaluate_split,
    evaluator,
    format_metrics,
    in_percent,
    per_direction_reading,
    train,
    train_config,
    validator,
    zero_shot,
)
from .finetune import adversarial_finetune, finetune, robust_accuracy
from .spec import (
    NO_VALIDATION,
    Features,
    Spec,
    Split,
    attacked_datasets,
    ensemble,
    make_spec,
    prompts_for,
    real_spec,
    refuse_capped_sizes,
    toy_spec,
)

__all__ = [
    "CHOOSE_TS",
    "DEFAULTS",
    "DIAL_TS",
    "MAX_CLEAN_DROP",
    "NO_VALIDATION",
    "MIN_CLEAN_ON_DIAL",
    "SHORT_NAMES",
    "Features",
    "Spec",
    "Split",
    "Sweep",
    "adversarial_finetune",
    "attacked_datasets",
    "ensemble",
    "build_features",
    "choose_t",
    "dial",
    "evaluate",
    "evaluate_photos",
    "evaluate_split",
    "evaluator",
    "finetune",
    "format_metrics",
    "in_percent",
    "make_spec",
    "per_direction_reading",
    "prompts_for",
    "real_spec",
    "refuse_capped_sizes",
    "robust_accuracy",
    "toy_spec",
    "train",
    "train_config",
    "validator",
    "zero_shot",
]
