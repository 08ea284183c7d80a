"""The toy CLIP's architecture, vocabulary and caption language."""

from __future__ import annotations

from .render import ACTIVITIES, GENDERS, OBJECTS, SIZE

#: Activities that pretraining shows mostly with one gender (the bias the tutorials undo).
SKEW = {
    "cooking": "woman",
    "cleaning": "woman",
    "working as a nurse": "woman",
    "repairing a car": "man",
    "playing football": "man",
    "working as a police officer": "man",
}
#: Words that appear written on signs in pretraining besides the object names.
EXTRA_WORDS = ("stop", "open", "sale", "hello", "exit", "book", "love", "coffee")

TEMPLATE_WORDS = """a an the photo of picture drawing word sign that says text with written on it
labelled person this is doing who in image police officer nurse someone people at work""".split()


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def vocabulary() -> list[str]:
    words = list(TEMPLATE_WORDS) + list(GENDERS) + list(EXTRA_WORDS)
    for phrase in OBJECTS + ACTIVITIES:
        words += phrase.split()
    return list(dict.fromkeys(words))


def default_config() -> dict:
    vocab = vocabulary()
    return {
        "model_cfg": {
            "embed_dim": 128,
            "vision_cfg": {"image_size": SIZE, "layers": [1, 1, 1, 1], "width": 32, "head_width": 32},
            "text_cfg": {"context_length": 16, "vocab_size": len(vocab) + 4, "width": 128, "heads": 4, "layers": 4},
        },
        "vocab": vocab,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
