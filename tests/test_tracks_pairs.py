"""Your own preference task: PreferenceData.from_captions and `clipaln train pairs` / `eval pairs`."""

import json
import random

import pytest

from clipaln.cli import main
from clipaln.models import load_clip
from clipaln.policy import PreferenceData
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
