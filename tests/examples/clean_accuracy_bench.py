"""A benchmark in one file (CONTRIBUTING.md's recipe, run by tests/test_bench.py): the toy CLIP's clean
accuracy on the typographic track's test split, before any W."""

from clipaln.bench.registry import Context
from clipaln.tracks import typographic


def clean_accuracy(c: Context) -> dict:
    feats = typographic.build_features(c.bundle, c.spec, c.cache, progress=False, with_train=False)  # test images only
    return {"accuracy/clean": typographic.evaluate(feats)["accuracy/clean"], "n_test": len(feats.test.labels)}
