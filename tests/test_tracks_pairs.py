"""Your own preference task: PreferenceData.from_captions and `clipaln train pairs` / `eval pairs`."""

import json
import random

import pytest

from clipaln.cli import main
from clipaln.models import load_clip
from clipaln.policy import PreferenceData
from clipaln.projection import SharedProjection
from clipaln.toyworld import OBJECTS, render
from clipaln.tracks import pairs


def scenes(folder, n=24):
    """Toy scenes holding an object and a person: chosen names the object, rejected the activity."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        obj = OBJECTS[i % len(OBJECTS)]
        render(obj=obj, person="person", activity="cooking", rng=random.Random(i)).save(folder / f"{i}.png")
        rows.append({"image": f"{i}.png", "chosen": f"a photo of a {obj}.", "rejected": "a photo of a person cooking."})
    return rows


def test_from_captions_takes_plain_lists_and_pil_images(tmp_path):
    bundle = load_clip("toy")
    images = [render(obj=o, rng=random.Random(i)) for i, o in enumerate(OBJECTS[:4])]
    chosen = [f"a photo of a {o}." for o in OBJECTS[:4]]
    rejected = [f"a photo of a {OBJECTS[(i + 1) % 4]}." for i in range(4)]
    data = PreferenceData.from_captions(bundle, images, chosen=chosen, rejected=rejected)
    assert data.pref_images.shape == (4, bundle.embed_dim) and len(data.texts) == 4
    assert data.y_w.tolist() == [sorted(set(chosen)).index(c) for c in chosen]
    with pytest.raises(ValueError, match="chosen == rejected"):
        PreferenceData.from_captions(bundle, images[:1], chosen=["a"], rejected=["a"])
    with pytest.raises(ValueError, match="one chosen and one rejected"):
        PreferenceData.from_captions(bundle, images, chosen=chosen[:2], rejected=rejected)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_train_pairs_from_the_command_line(tmp_path, capsys, suffix):
    rows = scenes(tmp_path / "scenes")
    path = tmp_path / "scenes" / f"pairs{suffix}"
    if suffix == ".csv":
        path.write_text(
            "image,chosen,rejected\n" + "".join(f"{r['image']},{r['chosen']},{r['rejected']}\n" for r in rows)
        )
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = path.parent / "run"  # beside the data: the run's own files must not change the data's fingerprint
    code = main(
        ["train", "pairs", "--pairs", str(path), "--epochs", "5", "--no-cache", "--workers", "0", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["trained"]["preference/accuracy_train"] >= m["base"]["preference/accuracy_train"]
    capsys.readouterr()
    assert main(["eval", "pairs", "--projection", str(out / "projection.safetensors"), "--json", "--no-cache"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["preference/accuracy"] == pytest.approx(m["trained"]["preference/accuracy"])


def test_a_bad_pairs_file_is_one_line(tmp_path):
    (tmp_path / "p.csv").write_text("image,chosen\nx.png,a\n")
    with pytest.raises(ValueError, match="needs image, chosen, rejected"):
        pairs.read_pairs(tmp_path / "p.csv")
    with pytest.raises(FileNotFoundError):
        pairs.read_pairs(tmp_path / "none.jsonl")


def test_pairs_are_split_by_image_and_fields_must_be_strings(tmp_path):
    rows = scenes(tmp_path / "s", n=10)
    lines = []
    for r in rows:  # two pairs per image: both must land on the same side
        lines += [json.dumps(r), json.dumps({**r, "rejected": "a photo of a person painting."})]
    (tmp_path / "s" / "p.jsonl").write_text("\n".join(lines) + "\n")
    spec = pairs.real_spec(str(tmp_path / "s" / "p.jsonl"))
    train_images = {spec.rows[i][0] for i in spec.train_idx}
    assert train_images.isdisjoint({spec.rows[i][0] for i in spec.test_idx}) and len(spec.test_idx) == 4
    (tmp_path / "s" / "bad.jsonl").write_text(json.dumps({"image": 5, "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(ValueError, match="non-empty strings"):
        pairs.read_pairs(tmp_path / "s" / "bad.jsonl")


def test_trls_vision_rows_read_their_one_image(tmp_path):
    """TRL's vision preference rows carry `images`, a list: they were refused as lacking `image`."""
    rows = scenes(tmp_path / "s", n=4)
    trl = [{"images": [r["image"]], "prompt": "", "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    ours = tmp_path / "s" / "ours.jsonl"
    ours.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = _write(tmp_path / "s", trl)
    assert pairs.read_pairs(path) == pairs.read_pairs(ours)
    _write(tmp_path / "s", [{**trl[0], "images": [rows[0]["image"], rows[1]["image"]]}, trl[1]])
    with pytest.raises(ValueError, match=r"row 1: images holds 2 images; a pair has one"):
        pairs.read_pairs(path)


def _write(folder, rows):
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_validation_share_is_held_apart_and_scored(tmp_path, capsys):
    from clipaln.cli import main

    path = _write(tmp_path / "a", scenes(tmp_path / "a", n=20))
    spec = pairs.real_spec(str(path), val_share=0.25)
    assert len(spec.val_idx) == 5 and len(spec.test_idx) == 4 and len(spec.train_idx) == 11
    assert not set(spec.val_idx) & (set(spec.test_idx) | set(spec.train_idx))
    assert pairs.real_spec(str(path)).key == pairs.real_spec(str(path), val_share=0.0).key  # old runs keep their key
    out = tmp_path / "run"
    assert main(["train", "pairs", "--pairs", str(path), "--val-share", "0.25", "--epochs", "3", "--no-cache",
                 "--quiet", "--out", str(out)]) == 0  # fmt: skip
    assert "validation" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())["trained"]
    assert main(["eval", "pairs", "--projection", str(out / "projection.safetensors"), "--split", "val", "--json",
                 "--no-cache"]) == 0  # fmt: skip
    scored = json.loads(capsys.readouterr().out)
    assert scored["preference/accuracy"] == pytest.approx(metrics["preference/accuracy_val"])
    assert main(["train", "typographic", "--val-share", "0.2", "--out", str(tmp_path / "t")]) == 2
    assert "--val-share is for the pairs task" in capsys.readouterr().err


def test_a_separate_pairs_file_is_scored_whole_unless_it_holds_training_images(tmp_path, capsys):
    from clipaln.cli import main

    path = _write(tmp_path / "a", scenes(tmp_path / "a", n=20))
    out = tmp_path / "run"
    assert (
        main(["train", "pairs", "--pairs", str(path), "--epochs", "2", "--no-cache", "--quiet", "--out", str(out)]) == 0
    )
    capsys.readouterr()
    spec = pairs.real_spec(str(path))
    other = tmp_path / "b"  # new images of the same kind (other draws): never trained on
    other.mkdir()
    rows = []
    for i in range(24):
        obj = OBJECTS[i % len(OBJECTS)]
        render(obj=obj, person="person", activity="cooking", rng=random.Random(1000 + i)).save(other / f"{i}.png")
        rows.append({"image": f"{i}.png", "chosen": f"a photo of a {obj}.", "rejected": "a photo of a person cooking."})
    fresh = _write(other, rows)
    args = ["eval", "pairs", "--projection", str(out / "projection.safetensors"), "--no-cache", "--json"]
    assert main([*args, "--pairs", str(fresh)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["source"]["data_key"]["whole"] is True and scored["preference/accuracy_train"] is None
    bundle = load_clip("toy")
    every = pairs.build_features(bundle, pairs.real_spec(str(fresh), whole=True))
    assert len(every.test.y_w) == 24  # all 24 rows count as held out, not a fifth of them
    proj = SharedProjection.load(out / "projection.safetensors")
    assert scored["preference/accuracy"] == pytest.approx(pairs.evaluate(every, proj)["preference/accuracy"])
    trained = spec.rows[spec.train_idx[0]][0]  # a training image, under another name
    (other / "copy.png").write_bytes(trained.read_bytes())
    copied = {"image": "copy.png", "chosen": "a photo of a key.", "rejected": "a photo of a person cooking."}
    _write(other, [*rows, copied])
    assert main([*args, "--pairs", str(fresh)]) == 2
    err = capsys.readouterr().err
    assert f"holds 1 image(s) this W was trained on ({trained.name})" in err and "--allow-other-data" in err


def test_an_image_is_its_pixels_in_the_split_and_in_the_held_out_check(tmp_path, capsys):
    """Two names for one image land on one side of the split (and are reported); a training image
    re-saved with other bytes is still a training image to eval's held-out check."""
    from PIL import Image

    rows = scenes(tmp_path / "a", n=16)
    for i in range(4):  # images 0-3 again, re-saved: other bytes, the same pixels
        Image.open(tmp_path / "a" / f"{i}.png").save(tmp_path / "a" / f"again{i}.png", optimize=True, compress_level=1)
        assert (tmp_path / "a" / f"again{i}.png").read_bytes() != (tmp_path / "a" / f"{i}.png").read_bytes()
        rows.append({**rows[i], "image": f"again{i}.png", "rejected": "a photo of a person painting."})
    path = _write(tmp_path / "a", rows)
    spec = pairs.real_spec(str(path))
    assert sorted(spec.duplicates) == sorted(str((tmp_path / "a" / f"{i}.png").resolve()) for i in range(4))
    side = {i: ("test" if i in spec.test_idx else "train") for i in spec.train_idx + spec.test_idx}
    for i in range(4):  # row i and row 16 + i show one image: the same side, whatever the seed
        assert side[i] == side[16 + i]
    assert {spec.rows[i][0].name for i in spec.test_idx}.isdisjoint(
        {spec.rows[i][0].name.removeprefix("again") for i in spec.train_idx}
    )
    out = tmp_path / "run"
    assert (
        main(["train", "pairs", "--pairs", str(path), "--epochs", "2", "--no-cache", "--quiet", "--out", str(out)]) == 0
    )
    assert "4 image(s) are listed under more than one name" in capsys.readouterr().err
    trained = next(spec.rows[i][0] for i in spec.train_idx if not spec.rows[i][0].name.startswith("again"))
    other = tmp_path / "b"
    other.mkdir()
    Image.open(trained).save(other / "resaved.png", compress_level=9)  # other bytes, the same pixels
    assert (other / "resaved.png").read_bytes() != trained.read_bytes()
    render(obj=OBJECTS[1], person="person", activity="cooking", rng=random.Random(999)).save(other / "new.png")
    held = _write(other, [
        {"image": "resaved.png", "chosen": "a photo of a key.", "rejected": "a photo of a person cooking."},
        {"image": "new.png", "chosen": f"a photo of a {OBJECTS[1]}.", "rejected": "a photo of a person cooking."},
    ])  # fmt: skip
    args = ["eval", "pairs", "--projection", str(out / "projection.safetensors"), "--no-cache", "--pairs", str(held)]
    assert main(args) == 2
    assert f"holds 1 image(s) this W was trained on ({trained.name})" in capsys.readouterr().err


@pytest.mark.parametrize(
    "header, message",
    [
        ("image,chosen,rejected,chosen", "the column chosen appears twice"),
        ("image,chosen", "lacks the column(s) rejected"),
        ("image,chosen,rejected,note", "unknown column(s) 'note'"),
    ],
)
def test_a_pairs_csv_header_names_each_column_once(tmp_path, header, message):
    scenes(tmp_path, n=2)
    values = {"image": "0.png", "chosen": "a photo of a key.", "rejected": "a photo of a person cooking.", "note": "x"}
    line = ",".join(
        values[h] if h != "chosen" or i == 1 else "a photo of a cup." for i, h in enumerate(header.split(","))
    )
    (tmp_path / "p.csv").write_text(f"{header}\n{line}\n{line.replace('0.png', '1.png')}\n")
    with pytest.raises(ValueError) as e:
        pairs.read_pairs(tmp_path / "p.csv")
    assert message in str(e.value) and len(str(e.value).splitlines()) == 1


def test_opposite_preferences_for_one_image_under_two_names_are_refused(tmp_path):
    """An image is its pixels: a copy saved with other bytes under another name is the same image,
    and preferring A over B for one and B over A for the other cancels out as it would for one name."""
    import json

    from PIL import Image

    from clipaln.tracks.pairs import read_pairs

    im = Image.new("RGB", (8, 8), (200, 30, 30))
    im.save(tmp_path / "a.png", compress_level=1)
    im.save(tmp_path / "a-copy.png", compress_level=9)
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "a-copy.png").read_bytes()
    rows = [
        {"image": "a.png", "chosen": "a cup.", "rejected": "a car."},
        {"image": "b.png", "chosen": "a car.", "rejected": "a cup."},
    ]
    (tmp_path / "ok.json").write_text(json.dumps(rows))
    assert len(read_pairs(tmp_path / "ok.json")) == 2  # other pixels: no contradiction
    rows.append({"image": "a-copy.png", "chosen": "a car.", "rejected": "a cup."})
    (tmp_path / "p.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="rows 1 and 3 prefer opposite captions for a-copy.png"):
        read_pairs(tmp_path / "p.json")
