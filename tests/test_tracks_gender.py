"""The gender track: preference pairs, loaders, reversal, the neutral point t*."""

import numpy as np
import pytest
import torch
from PIL import Image

from clipaln.data.gender import GenderCSV, GenderFolder, reversal_task
from clipaln.features import FeatureCache
from clipaln.projection import spectrum, within_target
from clipaln.tracks import gender


def test_reversal_task_prefers_the_other_gender_of_the_same_activity():
    task = reversal_task([("man", "cooking"), ("woman", "painting")], ["man", "woman"], ["cooking", "painting"])
    assert task.pref_prompts == [
        "this man is cooking.",
        "this woman is cooking.",
        "this man is painting.",
        "this woman is painting.",
    ]
    assert task.reg_prompts == ["this person is cooking.", "this person is painting."]
    assert [task.pref_prompts[i] for i in task.y_w] == ["this woman is cooking.", "this man is painting."]
    assert [task.pref_prompts[i] for i in task.y_l] == ["this man is cooking.", "this woman is painting."]
    custom = reversal_task(
        [("f", "x")],
        ["m", "f"],
        ["x"],
        template="a {gender} doing {activity}",
        neutral_template="someone doing {activity}",
    )
    assert custom.pref_prompts[custom.y_w[0]] == "a m doing x"
    with pytest.raises(ValueError, match="not in"):
        reversal_task([("other", "x")], ["m", "f"], ["x"])
    with pytest.raises(ValueError, match="two genders"):
        reversal_task([], ["m"], ["x"])


def test_folder_and_csv_loaders(tmp_path):
    for i, act in enumerate(("cooking", "playing_football")):
        for j, g in enumerate(("man", "woman")):
            (tmp_path / act / g).mkdir(parents=True)
            Image.new("RGB", (20, 20), (100 * i, 100 * j, 0)).save(tmp_path / act / g / "a.jpg")  # four people
    ds = GenderFolder(tmp_path)
    assert len(ds) == 4 and ds.activities == ["cooking", "playing football"] and ds.genders == ["man", "woman"]
    img, g, a = ds[0]
    assert img.size == (20, 20) and (g, a) == ("man", "cooking")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,gender,activity\ncooking/man/a.jpg,man,cooking\ncooking/woman/a.jpg,woman,cooking\n")
    c = GenderCSV(csv)
    assert len(c) == 2 and c[1][1:] == ("woman", "cooking")
    csv.write_text("file,gender\nx.jpg,man\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) path, activity"):
        GenderCSV(csv)
    csv.write_text("path,gender,activity\nmissing.jpg,man,cooking\n")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        GenderCSV(csv)


@pytest.fixture(scope="module")
def reversal(toy, tmp_path_factory):
    spec = gender.toy_spec(n_train_per_cell=20, n_gallery_per_cell=15)
    feats = gender.build_features(toy, spec, FeatureCache(tmp_path_factory.mktemp("gcache")))
    proj, _ = gender.train(feats, gender.train_config("dpo"), progress=False)
    return feats, proj


def test_what_the_reversal_does_on_the_toy_world(reversal):
    # measured, and pinned so that a drift shows: on the toy CLIP v3 (in the paper's regime) t = 1
    # flips the skewed prompts both ways (README claims table)
    feats, proj = reversal
    s = gender.evaluate(feats, proj)
    assert s["t1"]["retrieval/flipped_prompts"] >= 3
    assert 0.0 < s["t_star"] < 1.0 and s["t_star_chosen_on"] == "validation gallery"
    assert s["t_star_metrics"]["retrieval/precision"] >= 0.9  # activities survive the scaling
    assert set(s["t_star_per_prompt"]) == set(s["skewed_prompts"])
    assert within_target(spectrum(proj))  # the default W stays near orthogonal (docs/toy-world.md)
    assert not s["t_star_flat"] and f"t*={s['t_star']:.2f}" in gender.format_result(s)


def test_a_w_that_moves_no_prompt_prints_no_t_star(reversal):
    """A W that changes nothing had t* = 0.50 printed as if chosen: the middle of a flat scan."""
    from clipaln.projection import SharedProjection

    feats, proj = reversal
    s = gender.evaluate(feats, SharedProjection(proj.dim))  # W = I: W_t = I at every t
    assert s["t_star_flat"] and all(v is None for v in s["t_star_per_prompt"].values())
    text = gender.format_result(s)
    assert "t*=n/a" in text and "t*=0." not in text and "W moves nothing" in text.splitlines()[-1]


def test_t_one_reverses_every_prompt_as_the_paper_reports(reversal):
    feats, proj = reversal
    s = gender.evaluate(feats, proj)
    assert s["t1"]["retrieval/flipped_prompts"] >= len(s["skewed_prompts"]) - 1


def test_counts_per_prompt_name_the_gender(reversal):
    feats, _ = reversal
    at0 = gender.Sweep(feats, None).at(0.0)
    for row in at0["prompts"].values():
        assert sum(row["retrieval/top_k"].values()) == 10 and set(row["retrieval/top_k"]) == {"man", "woman"}
    assert at0["retrieval/flipped_prompts"] == 0  # nothing has flipped at t = 0


def test_t_zero_is_the_original_ranking(reversal):
    feats, proj = reversal
    sweep = gender.Sweep(feats, proj)
    base = gender.Sweep(feats, None)
    for a in feats.activities:
        assert sweep.ranking(0.0, a) == base.ranking(0.0, a)


def test_understanding_of_gender_against_t(reversal):
    feats, proj = reversal
    (at0,) = gender.understanding(feats, proj, [0.0])
    # t = 0 is the pretrained model: recompute with plain cosines against the reversal task's captions
    s = torch.nn.functional.normalize(feats.gallery, dim=-1) @ torch.nn.functional.normalize(feats.pref_texts, dim=-1).T
    gi, ai = {g: i for i, g in enumerate(feats.genders)}, {a: i for i, a in enumerate(feats.activities)}
    own = torch.tensor([2 * ai[a] + gi[g] for g, a in feats.gallery_labels])
    other = torch.tensor([2 * ai[a] + 1 - gi[g] for g, a in feats.gallery_labels])
    expected = (s.gather(1, own[:, None]) > s.gather(1, other[:, None])).float().mean().item()
    assert at0["gender/understanding"] == pytest.approx(expected, abs=1e-6)
    curve = [{"t": 0.0, "gender/understanding": 0.9}, {"t": 1.0, "gender/understanding": 0.3}]
    assert gender.crossing(curve) == pytest.approx(2 / 3)
    assert gender.crossing(curve[:1]) is None
    with pytest.raises(ValueError, match="gallery"):
        gender.understanding(feats, proj, [0.0], gallery="train")


def test_the_prompt_reflection_reverses_the_gender_component_prompt_by_prompt(reversal):
    feats, _ = reversal
    g = gender.image_gender_direction(feats)
    assert g.norm().item() == pytest.approx(1.0, abs=1e-6)
    ref = gender.PromptReflection(g)
    y = torch.nn.functional.normalize(feats.prompt_texts, dim=-1)
    for t in (0.0, 0.5, 1.0):
        s = ref.scorer(feats.gallery, feats.prompt_texts).scores(t)
        y_t = y - 2 * t * (y @ g)[:, None] * g[None]
        assert torch.allclose(y_t @ g, (1 - 2 * t) * (y @ g), atol=1e-6)  # the derivation's identity
        x = torch.nn.functional.normalize(feats.gallery, dim=-1)
        assert torch.allclose(s, x @ torch.nn.functional.normalize(y_t, dim=-1).T, atol=1e-6)
    # on the toy world it flips what leans (measured: every skewed prompt that is not balanced at t = 0)
    r = gender.evaluate(feats, ref)
    leaning = [a for a in r["skewed_prompts"] if not r["t0"]["prompts"][a]["retrieval/balanced"]]
    assert all(r["t1"]["prompts"][a]["retrieval/flipped"] for a in leaning)
    assert r["t1"]["retrieval/precision"] >= 0.9
    assert gender.Sweep(feats, ref).ranking(0.0, feats.activities[0]) == gender.Sweep(feats, None).ranking(
        0.0, feats.activities[0]
    )
    with pytest.raises(ValueError, match="non-zero"):
        gender.PromptReflection(torch.zeros(4))


def test_each_lean_splits_into_a_gain_term_and_a_coupled_term(reversal):
    feats, proj = reversal
    g = gender.image_gender_direction(feats).double()
    _, s, vh = proj.svd()
    m1 = vh.double().T @ torch.diag(s.double() ** 2) @ vh.double()
    assert g @ m1 @ g > 0  # W^T W is positive semi-definite: the gain along g never turns negative
    for t in (0.0, 1.0):
        rows = gender.lean_terms(feats, proj, t)
        scores = gender.Sweep(feats, proj).scorer.scores(t).double()
        for j, a in enumerate(feats.activities):
            r = rows[a]
            assert r["numerator"] == pytest.approx(r["gain_term"] + r["coupled_term"], abs=1e-9)
            assert r["gain"] > 0
            first = [i for i, (gg, act) in enumerate(feats.gallery_labels) if act == a and gg == feats.genders[0]]
            second = [i for i, (gg, act) in enumerate(feats.gallery_labels) if act == a and gg != feats.genders[0]]
            assert r["lean"] == pytest.approx((scores[first, j].mean() - scores[second, j].mean()).item(), abs=1e-5)


def test_training_on_one_gender_keeps_only_its_images(reversal):
    feats, _ = reversal
    men = feats.trained_on(["man"])
    assert {g for g, _ in men.train_labels} == {"man"} and len(men.y_w) == len(men.train_images) == len(men.y_l)
    assert len(men.train_labels) + len(feats.trained_on(["woman"]).train_labels) == len(feats.train_labels)
    with pytest.raises(ValueError, match="among"):
        feats.trained_on(["robot"])


def test_weak_gender_cues_are_drawn_per_item_and_leave_the_rest_unchanged():
    from clipaln.toyworld.datasets import ToyPeople

    plain, weak = ToyPeople(3, 0, "gallery"), ToyPeople(3, 0, "gallery", weak_cues=0.5)
    cues = [weak.cue(i) for i in range(len(weak))]
    assert 0 < sum(c < 1 for c in cues) < len(cues)
    for i, c in enumerate(cues[:8]):
        same = np.array_equal(np.asarray(plain[i][0]), np.asarray(weak[i][0]))
        assert same == (c == 1.0)
    with pytest.raises(ValueError, match="share"):
        ToyPeople(3, 0, "gallery", weak_cues=1.5)


def test_an_even_split_at_t_zero_cannot_flip(reversal):
    feats, proj = reversal
    sweep = gender.Sweep(feats, proj, k=10)
    a = feats.activities[0]
    sweep.lead[a] = {feats.genders[0]: 5, feats.genders[1]: 5}  # no leader at t = 0
    for t in (0.0, 1.0):
        assert not sweep.at(t, [a])["prompts"][a]["retrieval/flipped"]
    sweep.lead[a] = {feats.genders[0]: 10, feats.genders[1]: 0}
    counts = sweep.at(1.0, [a])["prompts"][a]["retrieval/top_k"]
    assert sweep.at(1.0, [a])["prompts"][a]["retrieval/flipped"] == (counts[feats.genders[0]] < 5)


def test_a_gallery_no_larger_than_k_cannot_read_as_balanced_at_every_t():
    import dataclasses

    from clipaln.tracks import gender
    from clipaln.tracks.gender import Sweep

    feats = gender.build_features(
        __import__("clipaln").load_clip("toy"),
        gender.toy_spec(n_train_per_cell=2, n_gallery_per_cell=2),
        progress=False,
        workers=0,
    )
    small = dataclasses.replace(feats, gallery=feats.gallery[:8], gallery_labels=feats.gallery_labels[:8])
    assert Sweep(small).k == 4  # at most half the gallery: the top k can change with t
    with pytest.raises(ValueError, match="at least 4"):
        Sweep(dataclasses.replace(feats, gallery=feats.gallery[:3], gallery_labels=feats.gallery_labels[:3]))


@pytest.mark.parametrize("t", [float("nan"), float("inf"), "0.5", True, None])
def test_the_prompt_reflection_takes_t_as_a_projection_does(t):
    from clipaln.tracks import gender

    r = gender.PromptReflection([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="t must be"):
        r.scorer(torch.randn(3, 3), torch.randn(2, 3)).scores(t)


def test_the_prompt_reflection_refuses_what_it_cannot_be():
    import numpy as np

    from clipaln.tracks import gender

    assert gender.PromptReflection(np.ones(3)).dim == 3  # an array or an int tensor is a direction too
    assert gender.PromptReflection(torch.ones(3, dtype=torch.int64)).direction.dtype == torch.float32
    with pytest.raises(ValueError, match="3-d"):
        gender.PromptReflection([1.0, 0.0, 0.0]).scorer(torch.randn(4, 5), torch.randn(2, 5))
