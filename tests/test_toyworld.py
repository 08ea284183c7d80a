"""The toy world's renderer, vocabulary and tokenizer, and the shipped model's phenomena."""

import random

import pytest
import torch
from PIL import Image

from clipaln.toyworld import ACTIVITIES, GENDERS, OBJECTS, render
from clipaln.toyworld.config import vocabulary
from clipaln.toyworld.tokenizer import WordTokenizer


def test_vocabularies():
    assert len(OBJECTS) >= 10 and len(ACTIVITIES) >= 8 and "working as a police officer" in ACTIVITIES
    assert GENDERS == ("man", "woman")


def test_render_is_deterministic_and_returns_rgb():
    a = render(obj="apple", text="car", rng=7)
    b = render(obj="apple", text="car", rng=random.Random(7))
    assert isinstance(a, Image.Image) and a.mode == "RGB" and a.size == (64, 64)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != render(obj="apple", text="car", rng=8).tobytes()


def test_render_every_scene_kind():
    for o in OBJECTS:
        assert render(obj=o, rng=0).size == (64, 64)
    for act in ACTIVITIES:
        for g in GENDERS:
            render(person=g, activity=act, rng=1)
    big = render(obj="tree", text="umbrella", rng=2, size=224, font="DejaVuSerif.ttf", fill="red", stroke="white")
    assert big.size == (224, 224)


def test_the_written_word_changes_the_pixels():
    plain = render(obj="cup", rng=3)
    written = render(obj="cup", text="fish", rng=3)
    assert plain.tobytes() != written.tobytes()


def test_render_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown object"):
        render(obj="spaceship")
    with pytest.raises(ValueError, match="unknown activity"):
        render(person="man", activity="flying")


def test_missing_font_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="font not found"):
        render(text="apple", font="NoSuchFont.ttf", rng=0)


def test_tokenizer_pads_and_ends_with_the_largest_id():
    tok = WordTokenizer(vocabulary(), context_length=8)
    ids = tok(["a photo of an apple.", "zebra"])
    assert ids.shape == (2, 8) and ids.dtype == torch.long
    eot = tok.vocab_size - 1
    assert ids[0].argmax().item() == 6 and ids[0, 6] == eot  # sot + 5 words, then eot
    assert ids[1, 1] == tok.index["<unk>"]
    assert tok.decode(ids[0].tolist()) == "a photo of an apple"
    long = tok(" ".join(["apple"] * 20))
    assert long[0, -1] == eot


@pytest.fixture(scope="module")
def phenomena(toy):
    from clipaln.tracks.phenomena import measure

    return measure(toy, n=120, n_per_cell=15, split="test")


# The calibration targets of docs/toy-world.md, on a small fresh test sample (the full numbers come
# from `clipaln eval toy --json`): if the toy CLIP drifts from real CLIP's behaviour, these fail.
def test_toy_model_sees_objects_and_reads(phenomena):
    assert phenomena["objects/clean"] >= 0.90
    assert phenomena["reading/text_only"] >= 0.90


def test_toy_model_is_fooled_as_much_as_real_clip_not_more(phenomena):
    assert 0.45 <= phenomena["attack/retained"] <= 0.80
    assert phenomena["attack/word_share_of_errors"] >= 0.5
    assert phenomena["attack/reference_margin_abs_mean"] <= 10  # a few nats, not tens


def test_toy_model_runs_at_clips_temperature(phenomena):
    assert phenomena["tau"] == pytest.approx(100, abs=0.1)


def test_toy_model_sees_activities_and_gender(phenomena):
    assert phenomena["people/activity"] >= 0.88
    assert phenomena["people/gender"] >= 0.93


def test_gender_skew_is_a_concept_not_a_template(phenomena):
    from clipaln.toyworld.config import SKEW

    # every skewed activity keeps its pretraining majority (>= 7 of 10) under >= 5 of 6 wordings
    assert phenomena["retrieval/min_wordings_holding"] >= 5, phenomena["retrieval/wordings_holding"]
    assert phenomena["retrieval/direction_matches"] == 1.0
    for act, major in SKEW.items():  # per prompt and wording, never on an average
        held = [w for w, c in phenomena["retrieval/top10"][act].items() if c[major] >= 7]
        assert len(held) >= 5, (act, phenomena["retrieval/top10"][act])
    assert phenomena["retrieval/police_men"] >= 7  # the direction of the paper's Fig. 4 (8 men, 2 women)


@pytest.mark.xfail(strict=True, reason="target 9 missed: the toy's skew saturates at 10 / 0 (docs/toy-world.md)")
def test_police_skew_is_partial_like_the_papers(phenomena):
    assert phenomena["retrieval/police_men"] <= 9


def test_gender_directions_are_in_the_regime_the_papers_reversal_needs(phenomena):
    assert 0.21 <= phenomena["gender/alignment_min"] <= phenomena["gender/alignment_max"] <= 0.44


def test_gender_alignment_is_measured_under_four_wordings(phenomena):
    align = phenomena["gender/alignment"]
    assert len(align) == 4 and "this {gender} is {activity}." in align
    assert all(-1 <= v <= 1 for v in align.values())
    assert phenomena["gender/alignment_min"] == min(align.values())


@pytest.mark.xfail(strict=True, reason="target 12 missed: 33 of 36 top 10s are 10 / 0 (docs/toy-world.md)")
def test_skew_is_graded_on_clearly_pictured_people(phenomena):
    assert phenomena["retrieval/saturated_share"] <= 1 / 3


def test_the_language_prior_reads_gender_and_activity_from_a_caption():
    from clipaln.toyworld.pretrain import gender_association, prior_targets

    pool = [["a photo of a man cooking.", "a man cooking."], ["this woman is cooking."], ["this woman is cooking."]]
    pool += [["a photo of a person cooking."], ["a photo of a cat."], ["a photo of a woman."]]
    assoc = gender_association(pool)
    assert assoc["cooking"] == pytest.approx((1 - 2) / 3) and assoc["painting"] == 0.0
    captions = [
        "this man is painting.",
        "a woman cooking.",
        "a person cooking.",
        "a nurse.",
        "a photo of a cat.",
        "a photo of a woman.",
    ]
    target, mask = prior_targets(captions, {**assoc, "working as a nurse": -0.4})
    assert target.tolist() == pytest.approx([1.0, -1.0, -1 / 3, -0.4, 0.0, -1.0])
    assert mask.tolist() == [True, True, True, True, False, True]


def test_no_image_varies_along_the_language_priors_direction(toy):
    """The shipped weights fold I - u u^T into the image tower: every image feature is orthogonal to
    u (up to the fp16 rounding of the weights), while gendered captions sit on either side of it."""
    from clipaln.features import encode_images, encode_texts
    from clipaln.toyworld.pretrain import text_only_direction
    from clipaln.toyworld.render import render

    u = text_only_direction(toy.model.text_projection.shape[1], seed=0)
    images = [render(person=g, activity="cooking", rng=i) for i, g in enumerate(["man", "woman"] * 4)]
    assert (encode_images(toy, images, progress=False) @ u).abs().max() < 1e-3
    man, woman = encode_texts(toy, ["this man is cooking.", "this woman is cooking."]) @ u
    assert man > 0.3 and woman < -0.3


def test_pretraining_runs_end_to_end(tmp_path):
    from clipaln import load_clip
    from clipaln.toyworld.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(steps=3, batch_size=16, pool_size=64, warmup=1, threads=1)
    model, tok, config = pretrain(cfg, tmp_path, log=lambda *_: None)
    assert (tmp_path / "toy_clip.safetensors").is_file() and (tmp_path / "toy_clip.json").is_file()
    b = load_clip("toy", pretrained=str(tmp_path / "toy_clip.safetensors"), device="cpu")
    ref = model.state_dict()["logit_scale"].half().float()
    assert torch.equal(b.model.state_dict()["logit_scale"], ref)
