"""The policy and its preference data: what would train on nonsense is one ValueError."""

import numpy as np
import pytest
import torch
from PIL import Image

from clipaln.data.gender import GenderCSV
from clipaln.data.real import class_prompts
from clipaln.features import encode_images
from clipaln.policy import PreferenceData, similarities
from clipaln.projection import SharedProjection, SpectralScorer


def small_data(**changes):
    g = torch.Generator().manual_seed(0)
    fields = dict(
        pref_images=torch.randn(6, 8, generator=g),
        y_w=[0, 1, 2, 0, 1, 2],
        y_l=[1, 2, 0, 2, 0, 1],
        texts=torch.randn(3, 8, generator=g),
        reg_images=torch.randn(6, 8, generator=g),
        logit_scale=100.0,
    )
    return PreferenceData(**{**fields, **changes})


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(logit_scale=4.605), "looks like log tau"),  # open_clip's model.logit_scale.item()
        (dict(y_w=[0.0, 1.7, 2.0, 0.0, 1.0, 2.0]), "whole class indices"),  # 1.7 was truncated to 1
        (dict(y_w="012012"), "not a string"),
        (dict(pref_images=np.zeros((6, 8), dtype=np.float32)), "torch tensor"),
        (dict(pref_images=torch.ones(6, 8, dtype=torch.long)), "floating-point"),
        (dict(reg_images=torch.full((6, 8), float("nan"))), "NaN"),
    ],
)
def test_preference_data_refuses_what_would_train_on_nonsense(changes, message):
    with pytest.raises(ValueError, match=message):
        small_data(**changes)


def test_misuse_is_one_value_error(toy):
    with pytest.raises(ValueError, match="torch tensor"):
        SharedProjection(4, np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        similarities(torch.full((2, 4), float("nan")), torch.randn(3, 4))
    with pytest.raises(ValueError, match="numpy"):
        encode_images(toy, np.zeros((2, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="not one string"):
        PreferenceData.from_captions(toy, torch.randn(1, toy.embed_dim), chosen="a cat.", rejected="a dog.")


def test_captions_the_tokenizer_cannot_tell_apart_are_refused(tmp_path, toy):
    from clipaln.tracks import pairs

    rows = [
        ("0.png", "a photo of a star.", "A photo of a STAR"),  # case and punctuation
        ("1.png", "a photo of a star.", "a photo of a cup."),
        ("2.png", "a photo of a cup.", "a photo of a key."),
    ]
    from PIL import Image

    for i, (name, *_) in enumerate(rows):
        Image.new("RGB", (8, 8), (80 * i, 0, 0)).save(tmp_path / name)  # three images, not one under three names
    (tmp_path / "p.csv").write_text("image,chosen,rejected\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    with pytest.raises(ValueError, match="pairs 1: chosen and rejected read the same"):
        pairs.build_features(toy, pairs.real_spec(str(tmp_path / "p.csv")), progress=False, workers=0)
    with pytest.raises(ValueError, match="read the same to the model's tokenizer"):
        PreferenceData.from_captions(toy, torch.randn(1, toy.embed_dim), chosen=["a star."], rejected=["A star"])


def test_library_misuse_raises_documented_errors(tmp_path):
    with pytest.raises(ValueError, match="integer"):
        SharedProjection(2.5)
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        SpectralScorer(SharedProjection(4), torch.ones(4), torch.ones(3, 4))
    for template in ("a photo of a %s.", "a photo of a {name}.", "no placeholder"):
        with pytest.raises(ValueError, match="template"):
            class_prompts(["cat", "dog"], template)
    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    (tmp_path / "people.csv").write_text("path,gender,activity\na.png,man,cooking\na.png,woman\n")
    with pytest.raises(ValueError, match="line 3"):
        GenderCSV(tmp_path / "people.csv")
