"""The experiments, one API each (Spec, toy_spec, build_features, DEFAULTS, train_config,
train(feats, cfg), evaluate(feats, projection), Sweep(feats, W).at(t)):

- typographic: resisting typographic attacks, the OCR-vs-detection trade-off (docs/method.md section 4);
- gender: reversing and neutralising gender in retrieval (docs/method.md section 5);
- pairs: your own task, (image, chosen caption, rejected caption) rows;
- phenomena: what the toy CLIP does, measured on fresh images (`clipaln eval toy`).
"""

from . import gender, pairs, phenomena, typographic

TRACKS = {"typographic": typographic, "gender": gender, "pairs": pairs}

__all__ = ["TRACKS", "gender", "pairs", "phenomena", "typographic"]
