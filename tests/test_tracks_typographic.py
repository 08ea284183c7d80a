"""The typographic track: attack renderer, dataset wrapper, loaders, cache, training, sweep."""

import json

import pytest
import torch
from PIL import Image

from clipaln.data.real import ImageFolderDataset, MaterzynskaDataset, TypographicPhotoFolder, class_prompts, spec
from clipaln.data.typographic import COLORS, TypographicDataset, attack
from clipaln.features import FeatureCache
from clipaln.policy import PreferenceData
from clipaln.projection import spectrum, within_target
from clipaln.tracks import typographic


def test_attack_works_on_any_image_size_and_is_seeded():
    for size in [(32, 32), (224, 224), (640, 300), (100, 800)]:
        img = Image.new("RGB", size, "gray")
        a, b = attack(img, "apple", rng=3), attack(img, "apple", rng=3)
        assert a.size == size and a.tobytes() == b.tobytes() and a.tobytes() != img.tobytes()
    assert img.tobytes() == Image.new("RGB", (100, 800), "gray").tobytes()  # the input is untouched


def test_attack_protocol_choices():
    img = Image.new("RGB", (224, 224), (128, 128, 128))
    for seed in range(20):
        out = attack(img, "golden retriever", rng=seed)
        colors = set(c for _, c in out.getcolors(224 * 224))
        assert colors & set(COLORS.values())  # the fill or stroke is one of the eight colours
    with pytest.raises(ValueError, match="differ"):
        attack(img, "apple", fill="red", stroke="red")
    with pytest.raises(ValueError):
        attack(img, "   ")


def test_two_word_names_go_on_two_lines():
    img = Image.new("RGB", (224, 224), "white")
    one = attack(img, "ice", rng=1, fill="black", stroke="red", size=30, position=(10, 10))
    two = attack(img, "ice cream", rng=1, fill="black", stroke="red", size=30, position=(10, 10))
    rows = lambda im: {y for y in range(224) for x in range(0, 224, 2) if im.getpixel((x, y)) != (255, 255, 255)}
    assert max(rows(two)) - min(rows(two)) > 1.6 * (max(rows(one)) - min(rows(one)))


def test_dataset_wrapper_is_reproducible_and_never_writes_the_true_label():
    base = [(Image.new("RGB", (64, 64), (i * 20, 100, 100)), i % 4) for i in range(10)]
    ds = TypographicDataset(base, ["cat", "dog", "car", "cup"], seed=5, copies=2)
    assert len(ds) == 20
    items = [ds[i] for i in range(len(ds))]
    again = [ds[i] for i in range(len(ds))]
    for (_, a, y, w), (_, a2, _, w2) in zip(items, again):
        assert w != y and w == w2 and a.tobytes() == a2.tobytes()
    restricted = TypographicDataset(base, ["cat", "dog", "car", "cup"], written_classes=[0, 1])
    assert all(restricted[i][3] in (0, 1) for i in range(len(restricted)))
    with pytest.raises(ValueError):
        TypographicDataset(base, ["cat"])


def test_registry_has_the_papers_datasets_and_templates():
    names = {
        "imagenet100",
        "caltech101",
        "oxford_pets",
        "stanford_cars",
        "flowers102",
        "fgvc_aircraft",
        "dtd",
        "sun397",
        "eurosat",
        "food101",
    }
    assert names <= set(typographic_datasets())
    assert spec("food101").prompt("pizza") == "a photo of a pizza, a type of food."
    assert spec("dtd").prompt("striped") == "striped texture."
    with pytest.raises(ValueError, match="unknown dataset"):
        spec("mnist")
    with pytest.raises(ValueError, match="empty"):
        class_prompts([])


def typographic_datasets():
    from clipaln.data.real import DATASETS

    return DATASETS


def _folder(tmp_path, classes=("cat", "dog"), n=2, size=40):
    for c in classes:
        (tmp_path / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (size, size), (i * 50, 80, 160)).save(tmp_path / c / f"{i}.png")
    return tmp_path


def test_image_folder_dataset_and_bad_files(tmp_path):
    root = _folder(tmp_path / "ok")
    ds = ImageFolderDataset(root)
    assert ds.classes == ["cat", "dog"] and len(ds) == 4 and ds[3][1] == 1
    (root / "dog" / "broken.jpg").write_bytes(b"not an image")
    bad = ImageFolderDataset(root)
    with pytest.raises(ValueError, match="broken.jpg"):
        [bad[i] for i in range(len(bad))]
    assert len(ImageFolderDataset(root, skip_bad=True)) == 4
    with pytest.raises(FileNotFoundError):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path / "empty")


def test_typographic_photo_folder_and_materzynska_annotation(tmp_path):
    paint = tmp_path / "paint"
    paint.mkdir()
    for label, text in [("dog", "cat"), ("cat", "dog"), ("cat", "ipod")]:
        Image.new("RGB", (30, 30)).save(paint / f"label={label}_text={text}.jpg")
    Image.new("RGB", (30, 30)).save(paint / "unrelated.jpg")
    ds = TypographicPhotoFolder(paint)
    assert ds.classes == ["cat", "dog", "ipod"] and len(ds) == 3  # the written words are classes too
    rows = sorted((ds[i][1], ds[i][2]) for i in range(3))
    assert rows == [(0, 1), (0, 2), (1, 0)]
    only_labels = TypographicPhotoFolder(paint, classes=["cat", "dog"])  # a given class list: other words are -1
    assert sorted((only_labels[i][1], only_labels[i][2]) for i in range(3)) == [(0, -1), (0, 1), (1, 0)]

    mat = tmp_path / "mat"
    mat.mkdir()
    ann = {}
    for i, (t, a) in enumerate([("apple", "ipod"), ("ipod", "apple")]):
        Image.new("RGB", (30, 30)).save(mat / f"{i}.jpg")
        ann[f"{i}.jpg"] = {"true object": t, "typographic attack label": a}
    (mat / "annotation.json").write_text(json.dumps(ann))
    m = MaterzynskaDataset(mat)
    assert m.classes == ["apple", "ipod"] and [(m[i][1], m[i][2]) for i in range(2)] == [(0, 1), (1, 0)]
    (mat / "annotation.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        MaterzynskaDataset(mat)


@pytest.fixture(scope="module")
def toy_feats(toy, tmp_path_factory):
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    spec = typographic.toy_spec(n_train=2400, n_test=240)
    feats = typographic.build_features(toy, spec, cache)
    again = typographic.build_features(toy, spec, cache)
    assert cache.misses == 1 and cache.hits == 1  # the second call encoded nothing
    assert torch.equal(feats.train.attacked, again.train.attacked)
    return feats


def test_feature_cache_key_changes_with_the_data(toy, tmp_path):
    calls = []
    cache = FeatureCache(tmp_path)
    f = lambda: calls.append(1) or {"x": torch.ones(2)}
    cache.get(toy, {"n": 1}, f)
    cache.get(toy, {"n": 1}, f)
    cache.get(toy, {"n": 2}, f)
    assert len(calls) == 2 and not list(tmp_path.glob("*.tmp"))


def test_dpo_on_the_toy_world_raises_T_and_keeps_O(toy_feats):
    base = typographic.evaluate(toy_feats)
    proj, _ = typographic.train(toy_feats, typographic.train_config("dpo"), progress=False)
    after = typographic.evaluate(toy_feats, proj)
    assert after["accuracy/attacked"] >= base["accuracy/attacked"] + 0.25
    assert after["accuracy/clean"] >= base["accuracy/clean"] - 0.03
    # t = 0 reproduces the base row exactly
    assert typographic.evaluate(toy_feats, proj.scaled(0)) == pytest.approx(base, abs=1e-6)


def test_t_sweep_trades_reading_for_seeing(toy_feats):
    proj, _ = typographic.train(toy_feats, typographic.train_config("dpo"), progress=False)
    sweep = typographic.Sweep(toy_feats, proj)
    at_neg, at_zero, at_one = sweep.at(-1.0), sweep.at(0.0), sweep.at(1.0)
    ocr, seen, clean = "accuracy/ocr", "accuracy/attacked", "accuracy/clean"
    # on the same attacked images: t = 1 sees more and reads the written word less; t = -1 reads it more
    assert at_one[seen] > at_zero[seen] + 0.2 and at_one[ocr] < at_zero[ocr] - 0.2
    assert at_neg[ocr] > at_zero[ocr] + 0.1 and at_neg[seen] < at_zero[seen]
    # a dial, not a cliff: W stays near orthogonal, clean accuracy holds at t = -1 and T moves in steps
    # (on these 2,400 training pairs clean accuracy falls to 33% at t = -2, where the README's 7,200 keep 74-76%)
    assert within_target(spectrum(proj))
    assert at_neg[clean] >= 0.9 and typographic.dial(sweep)["dial/max_attacked_step"] <= 0.35
    base = typographic.evaluate(toy_feats)
    for key in (clean, seen, ocr, "accuracy/text_only"):
        assert at_zero[key] == pytest.approx(base[key], abs=1e-6)


def test_the_orthogonality_penalty_keeps_w_near_the_identity(toy_feats):
    free, _ = typographic.train(toy_feats, typographic.train_config("dpo", lr=0.1, epochs=3, orth=0.0), progress=False)
    held, _ = typographic.train(toy_feats, typographic.train_config("dpo", lr=0.1, epochs=3, orth=10.0), progress=False)
    assert spectrum(held)["w/orthogonality_gap"] < spectrum(free)["w/orthogonality_gap"] / 2
    assert typographic.evaluate(toy_feats, held)["w/orthogonality_gap"] == spectrum(held)["w/orthogonality_gap"]
    assert typographic.evaluate(toy_feats)["w/orthogonality_gap"] == 0.0  # the base model is W = I


def test_tuning_reads_the_validation_split_only(toy_feats):
    import dataclasses

    from clipaln.bench import tuning

    assert toy_feats.val is not None and len(toy_feats.val.labels) > 0
    grid = dict(lrs=(0.003, 0.03), epochs=(2,), orths=(0.0,))
    choice = tuning.tune(toy_feats, "dpo", **grid)
    noise = lambda x: torch.randn_like(x)
    scrambled_test = dataclasses.replace(
        toy_feats.test, clean=noise(toy_feats.test.clean), attacked=noise(toy_feats.test.attacked)
    )
    again = tuning.tune(dataclasses.replace(toy_feats, test=scrambled_test), "dpo", **grid)
    assert again == choice  # the test images cannot change the choice
    assert {(r["lr"], r["epochs"]) for r in choice["grid"]} == {(0.003, 2), (0.03, 2)}
    assert all("w/orthogonality_gap" in r and "val/dial/min_clean" in r for r in choice["grid"])
    assert (choice["choice"]["lr"], choice["choice"]["epochs"]) in {(0.003, 2), (0.03, 2)}


def test_a_prompt_ensemble_scores_clean_images_beside_the_kl(toy):
    """zeroshot/accuracy: the field's zero-shot measure (open_clip's ensemble classifier), reported by
    evaluate where the dataset has an ensemble; ImageNet-100 takes open_clip's 80 templates."""
    import dataclasses

    from clipaln.features import encode_texts, zero_shot_texts

    names = ["star", "ball", "car"]
    one = zero_shot_texts(toy, names, ["a photo of a {}."])
    assert torch.allclose(one, encode_texts(toy, [f"a photo of a {c}." for c in names]), atol=1e-5)
    assert len(typographic.ensemble("imagenet100")) == 80
    spec = dataclasses.replace(typographic.toy_spec(n_train=24, n_test=24), ensemble=("a photo of a {}.", "a {}."))
    feats = typographic.build_features(toy, spec, progress=False, workers=0)
    m = typographic.evaluate(feats)
    assert 0.0 <= m["zeroshot/accuracy"] <= 1.0 and "zero-shot" in typographic.format_metrics(m)
    plain = typographic.evaluate(dataclasses.replace(feats, ensemble_texts=None))
    assert "zeroshot/accuracy" not in plain  # no ensemble, no number


def test_photos_whose_word_is_their_label_are_no_attack_and_empty_words_are_refused(tmp_path, toy):
    from PIL import Image

    from clipaln.data.real import TypographicPhotoFolder
    from clipaln.tracks import typographic

    for stem in ("label=star_text=ball", "label=ball_text=ball", "label=ball_text=star"):
        Image.new("RGB", (16, 16), "white").save(tmp_path / f"{stem}.png")
    photos = TypographicPhotoFolder(tmp_path)
    result = typographic.evaluate_photos(toy, photos, workers=0, progress=False)
    assert result["photos/not_attacks"] == 1 and result["photos/n"] == 3
    assert result["photos/attack_success"] in (0.0, 0.5, 1.0)  # a share of the two real attacks only
    Image.new("RGB", (16, 16)).save(tmp_path / "label=star_text=_.png")
    with pytest.raises(ValueError, match="the written word is empty"):
        TypographicPhotoFolder(tmp_path)


def test_words_the_toy_cannot_read_are_named(toy):

    x = torch.nn.functional.normalize(torch.randn(2, toy.embed_dim), dim=-1)
    with pytest.raises(ValueError, match="cannot read 2 word.*goldfish, tench"):
        PreferenceData.from_captions(
            toy, x, ["a photo of a tench.", "a photo of a cup."], ["a photo of a goldfish.", "a photo of a car."]
        )


def test_a_typographic_folder_of_unknown_classes_is_refused_for_the_toy(tmp_path, toy):
    from PIL import Image

    from clipaln.tracks import typographic

    for c in ("tench", "goldfish"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(tmp_path / c / f"{i}.png")
    spec = typographic.real_spec("folder", str(tmp_path), n_train=2, n_test=2, n_val=2, image_size=64)
    with pytest.raises(ValueError, match="cannot read .*goldfish.*tench"):
        typographic.build_features(toy, spec, progress=False)
