"""A user's own data files: an image is its pixels, folders and CSVs read as they look, and what
cannot be read is one line naming it."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from support import make_folder

from clipaln.data.gender import GenderCSV
from clipaln.data.real import ImageFolderDataset
from clipaln.tracks import typographic


def test_one_image_named_by_two_paths_stays_on_one_side_of_the_split(tmp_path):
    import json

    from test_tracks_pairs import scenes

    from clipaln.tracks import pairs

    rows = scenes(tmp_path / "p", n=10)
    lines = [json.dumps(r) for r in rows] + [json.dumps({**r, "image": f"../p/{r['image']}"}) for r in rows]
    (tmp_path / "p" / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    spec = pairs.real_spec(str(tmp_path / "p" / "pairs.jsonl"))
    train = {spec.rows[i][0] for i in spec.train_idx}
    assert train.isdisjoint(spec.rows[i][0] for i in spec.test_idx)


def test_a_people_csv_listing_an_image_twice_is_refused(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "people.csv").write_text("path,gender,activity\na.png,man,cooking\n./a.png,man,cooking\n")
    with pytest.raises(ValueError, match="line 3: ./a.png is listed already"):
        GenderCSV(tmp_path / "people.csv")


def test_swapped_images_of_one_size_and_time_change_the_fingerprint(tmp_path):

    from clipaln.data.fingerprint import files_fingerprint

    for name, byte in (("a", 1), ("b", 2)):
        (tmp_path / "cls").mkdir(exist_ok=True)
        (tmp_path / "cls" / f"{name}.png").write_bytes(bytes([byte]) * 100)
        os.utime(tmp_path / "cls" / f"{name}.png", ns=(10**18, 10**18))
    before = files_fingerprint(tmp_path)
    a, b = tmp_path / "cls" / "a.png", tmp_path / "cls" / "b.png"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b), b.write_bytes(data_a)  # as an archive extraction would: same sizes, times reset
    for p in (a, b):
        os.utime(p, ns=(10**18, 10**18))
    assert files_fingerprint(tmp_path) != before


def test_an_unreadable_image_in_a_worker_is_one_line_naming_the_file(tmp_path, toy):
    from PIL import Image

    from clipaln.data.real import ImageFolderDataset
    from clipaln.features import encode_dataset

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / c / f"{i}.png")
    ds = ImageFolderDataset(tmp_path)
    (tmp_path / "dog" / "2.png").write_bytes(b"not a png")  # broken after the listing, as a disk error would
    with pytest.raises(ValueError) as err:
        encode_dataset(toy, ds, (0,), (1,), workers=1, batch_size=2, progress=False)  # 3 batches: the worker runs
    message = str(err.value)
    assert "2.png" in message and "\n" not in message and "DataLoader worker" not in message


def test_appledouble_files_are_not_images_and_a_bom_is_not_part_of_a_column(tmp_path):
    from PIL import Image

    from clipaln.data.real import ImageFolderDataset

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "0.png")
        (tmp_path / c / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    assert len(ImageFolderDataset(tmp_path)) == 2
    (tmp_path / "people.csv").write_text("\ufeffpath,gender,activity\ncat/0.png,man,cooking\n", encoding="utf-8")
    assert len(GenderCSV(tmp_path / "people.csv")) == 1


def test_a_latin1_file_is_one_line_naming_it_and_the_fix(tmp_path):
    from clipaln.tracks.pairs import read_pairs

    for name in ("p.csv", "p.jsonl"):
        f = tmp_path / name
        f.write_bytes("image,chosen,rejected\ncaf\xe9.png,a,b\n".encode("latin-1"))
        with pytest.raises(ValueError, match=f"{name} is not UTF-8 text .*0xe9.*save it as UTF-8"):
            read_pairs(f)
    (tmp_path / "g.csv").write_bytes("path,gender,activity\nx.png,femme,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="g.csv is not UTF-8"):
        GenderCSV(tmp_path / "g.csv")


def test_pairs_files_a_json_array_and_contradictions(tmp_path):
    from PIL import Image

    from clipaln.tracks.pairs import read_pairs

    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    rows = [
        {"image": "0.png", "chosen": "a cup.", "rejected": "a car."},
        {"image": "1.png", "chosen": "a cup.", "rejected": "a key."},
    ]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    assert len(read_pairs(tmp_path / "p.json")) == 2
    rows.append({"image": "0.png", "chosen": "a car.", "rejected": "a cup."})
    (tmp_path / "q.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="rows 1 and 3 prefer opposite captions for 0.png"):
        read_pairs(tmp_path / "q.json")


def test_a_folder_linked_into_itself_is_fingerprinted_once(tmp_path):
    from clipaln.data.fingerprint import files_fingerprint

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"x")
    before = files_fingerprint(tmp_path)
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    assert isinstance(files_fingerprint(tmp_path), str) and before  # no "Too many levels of symbolic links"


def test_image_files_of_every_mode_read_as_they_look(tmp_path):
    from PIL import Image

    from clipaln.data.real import _open_image

    ramp16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp16).save(tmp_path / "16bit.png")
    mean = np.asarray(_open_image(tmp_path / "16bit.png")).mean()
    assert 120 < mean < 135  # the ramp's middle grey, not clipped to white (PIL's convert gives ~253)
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(tmp_path / "float.tif")
    assert np.asarray(_open_image(tmp_path / "float.tif")).mean() == pytest.approx(128, abs=1)
    Image.fromarray(np.full((8, 8), 7.5, dtype=np.float32) * 100).save(tmp_path / "hdr.tif")
    with pytest.raises(ValueError, match="neither \\[0, 1\\] nor \\[0, 255\\]"):
        _open_image(tmp_path / "hdr.tif")
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent: white on a page
    clear.save(tmp_path / "clear.png")
    assert np.asarray(_open_image(tmp_path / "clear.png")).min() == 255
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([10, 20, 30] * 256)
    pal.save(tmp_path / "pal.png")
    assert tuple(np.asarray(_open_image(tmp_path / "pal.png"))[0, 0]) == (10, 20, 30)


@pytest.mark.parametrize("k", [5, 6, 9])
def test_five_to_nine_classes_train(tmp_path, k):
    spec = typographic.real_spec("folder", make_folder(tmp_path / "imgs", k, 3), n_train=k, n_test=k)
    assert len(spec.held_out) == 2
    unseen = typographic.attacked_datasets(spec)["unseen"]
    for i in range(len(unseen)):
        _, _, label, written = unseen[i]
        assert written != label and written in spec.held_out


def test_hidden_folders_are_not_classes_and_duplicates_are_refused(tmp_path):
    root = make_folder(tmp_path / "imgs", names=["cat", "dog", ".ipynb_checkpoints", "__MACOSX"])
    assert ImageFolderDataset(root).classes == ["cat", "dog"]
    for a, b in (("Cat", "cat"), ("big_cat", "big cat")):
        dup = make_folder(tmp_path / f"dup-{a}", names=[a, b, "dog"])
        with pytest.raises(ValueError, match="both read as the class"):
            ImageFolderDataset(dup)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_decompression_bomb_is_skipped_or_one_error(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs", 2, 2)
    Image.new("RGB", (200, 200), "white").save(root / "apple" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 200 x 200 > 2 x the limit: PIL raises
    ds = ImageFolderDataset(root, skip_bad=True)
    assert [p.name for p in ds.skipped] == ["bomb.png"]
    with pytest.raises(ValueError, match="bomb.png"):
        full = ImageFolderDataset(root)
        [full[i] for i in range(len(full))]


def test_a_dataset_is_one_entry_in_the_registry_and_trains_from_the_command_line(tmp_path, monkeypatch, capsys):
    """CONTRIBUTING.md's dataset recipe: a folder of class folders plus one DatasetSpec (its prompt
    template) in clipaln.data.real.DATASETS, and `--dataset NAME --root PATH` trains and scores it."""
    import json

    from clipaln.cli import main
    from clipaln.data.real import DATASETS, DatasetSpec
    from clipaln.tracks import typographic
    from clipaln.tracks.protocol import DataFlags

    monkeypatch.setitem(DATASETS, "shelf", DatasetSpec("shelf", "a picture of the {}.", None, {}))  # the entry
    root = make_folder(tmp_path / "shelf", n_classes=4, per_class=8)
    spec = typographic.make_spec(DataFlags(dataset="shelf", root=str(root), n_train=16, n_test=8))
    assert spec.template == "a picture of the {}." and len(spec.class_names) == 4
    out = tmp_path / "run"
    assert main(["train", "typographic", "--dataset", "shelf", "--root", str(root), "--n-train", "16",
                 "--n-test", "8", "--epochs", "1", "--quiet", "--no-cache", "--out", str(out)]) == 0  # fmt: skip
    assert json.loads((out / "run.json").read_text())["dataset"] == "shelf"


def test_a_size_typed_beyond_what_a_folder_gives_is_one_line_and_the_defaults_still_cap(tmp_path, capsys):
    """--n-train 900 on 24 images trained on 12 and wrote n_train 900 into run.json, silently."""
    from clipaln.cli import main
    from clipaln.tracks.protocol import DataFlags

    root = make_folder(tmp_path / "imgs", 3, 8)  # 24 images, one set: 12 can train, 12 can test
    flags = dict(model="ViT-S-32-alt", dataset="folder", root=root)
    one_set = r"folder has 24 images, split between --n-train \(at most half\) and --n-test \(the rest\)"
    capped = typographic.make_spec(DataFlags(**flags, n_train=900))  # what eval rebuilds from a run's record
    assert (capped.key["n_train"], capped.key["n_test"]) == (12, 12)
    with pytest.raises(ValueError, match=rf"^--n-train 900: {one_set}: ask for 12 or fewer$"):
        typographic.refuse_capped_sizes(capped, 900, None)
    typographic.refuse_capped_sizes(capped, 12, 12)
    spec = typographic.make_spec(DataFlags(**flags))  # the track's defaults (2,000 / 1,000) are caps
    assert (spec.key["n_train"], spec.key["n_test"]) == (12, 12)
    split = make_folder(tmp_path / "split" / "train", 3, 8).parent
    make_folder(split / "val", 3, 2)
    two = typographic.make_spec(DataFlags(**{**flags, "root": split}, n_test=20))
    with pytest.raises(ValueError, match=r"^--n-test 20: folder has 6 usable images in its test split: ask for 6 or"):
        typographic.refuse_capped_sizes(two, None, 20)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "typographic",
            *sum(([f"--{k}", str(v)] for k, v in flags.items()), []),
            "--n-train",
            "900",
            "--out",
            str(out),
        ]
    )
    assert code == 2 and "--n-train 900: folder has 24 images" in capsys.readouterr().err and not out.exists()
