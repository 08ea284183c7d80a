"""The gender experiment end to end: train W to reverse gender, find the neutral point t*, retrieve.

After training, t = 0 is the original model, t = 1 reverses its notion of gender, and an
intermediate t* neutralises it (docs/method.md section 5). The retrieval prompts are neutral ("a photo
of a person {activity}."); the gallery is gender-balanced; for each prompt we count the men and
women in the top k, and track MaxSkew@k, NDKL and the activity precision@k.

The same API as clipaln.tracks.typographic: Spec, toy_spec, build_features, DEFAULTS,
train_config, train(feats, cfg), evaluate(feats, projection), Sweep(feats, W).at(t).
"""

from .analysis import PromptReflection, activity_gaps, caption_pull, image_gender_direction, lean_terms, metric
from .experiment import (
    Sweep,
    build_features,
    crossing,
    evaluate,
    evaluator,
    find_neutral_t,
    format_result,
    train,
    understanding,
    validator,
)
from .spec import (
    DEFAULTS,
    RETRIEVAL_TEMPLATE,
    WEAK_CUE_SHARE,
    Features,
    Spec,
    make_spec,
    methods,
    real_spec,
    toy_spec,
    train_config,
)

__all__ = [
    "DEFAULTS",
    "RETRIEVAL_TEMPLATE",
    "WEAK_CUE_SHARE",
    "Features",
    "PromptReflection",
    "Spec",
    "Sweep",
    "activity_gaps",
    "build_features",
    "caption_pull",
    "crossing",
    "evaluate",
    "evaluator",
    "find_neutral_t",
    "format_result",
    "image_gender_direction",
    "lean_terms",
    "make_spec",
    "methods",
    "metric",
    "real_spec",
    "toy_spec",
    "train",
    "train_config",
    "understanding",
    "validator",
]
