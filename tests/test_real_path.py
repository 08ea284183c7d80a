"""The real path on the layouts researchers have: image folders of 5, 6 and 12 classes, EuroSAT as
torchvision lays it out, ImageNet-100 by WordNet id, the real typographic photo sets, a real-people
CSV, a fine-tuned encoder; on open_clip architectures at random init (a small ViT built as ViT-B-32
is, and EVA02-B-16, a CustomTextCLIP), with readable prompts asserted."""

import json
import warnings

import pytest
import torch
from PIL import Image
from support import SMALL_VIT, cli, one_line_error

from clipaln import runs
from clipaln.bench import paper as bench_paper
from clipaln.cli import main
from clipaln.data.imagenet import IMAGENET100_WNIDS
from clipaln.data.real import EUROSAT_NAMES, photo_set
from clipaln.features import encode_dataset, encode_images
from clipaln.models import load_clip
from clipaln.tracks import typographic

COLOURS = ["red", "green", "blue", "orange", "purple", "brown", "pink", "gray", "olive", "navy", "teal", "gold"]
QUICK = dict(n_train=6, n_test=6, cache=False, progress=False, workers=0, overrides={"epochs": 1})


def images(folder, n, colour, size=40):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size + i, size), colour).save(folder / f"{i}.jpg")


def class_folders(root, names, n=3):
    for c, name in enumerate(names):
        images(root / name, n, COLOURS[c % len(COLOURS)])
    return root


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init warnings
        yield


def train_and_eval(model, tmp_path, **data):
    out = tmp_path / "run"
    result = runs.train_run("typographic", out=out, model=model, device="cpu", **QUICK, **data)
    assert (out / "run.json").is_file() and 0 <= result["metrics"]["trained"]["accuracy/clean"] <= 1
    again = runs.eval_run(  # no model given: eval reads it (and its weights) from the run's manifest
        "typographic",
        projection=out / "projection.safetensors",
        device="cpu",
        cache=False,
        progress=False,
        workers=0,
    )
    assert again["accuracy/clean"] == pytest.approx(result["metrics"]["trained"]["accuracy/clean"])
    return out, result


@pytest.mark.parametrize("k", [5, 6, 12])
def test_image_folders_of_5_6_and_12_classes(tmp_path, k):
    root = class_folders(tmp_path / "imgs", [f"class_{c}" for c in range(k)])
    spec = runs.make_spec("typographic", model=SMALL_VIT, dataset="folder", root=str(root), n_train=k, n_test=k)
    assert typographic.prompts_for(spec)[0] == "a photo of a class 0."
    train_and_eval(SMALL_VIT, tmp_path, dataset="folder", root=str(root))


def test_eurosat_as_torchvision_lays_it_out_reads_clips_names(tmp_path):
    class_folders(tmp_path / "eurosat" / "eurosat" / "2750", list(EUROSAT_NAMES))
    spec = runs.make_spec("typographic", model=SMALL_VIT, dataset="eurosat", root=str(tmp_path / "eurosat"))
    prompts = typographic.prompts_for(spec)
    assert "a centered satellite photo of brushland or shrubland." in prompts
    assert not any("herbaceousvegetation" in p.lower() for p in prompts)
    train_and_eval(SMALL_VIT, tmp_path, dataset="eurosat", root=str(tmp_path / "eurosat"))


def test_imagenet100_by_wordnet_id_with_train_and_val(tmp_path):
    wnids = IMAGENET100_WNIDS[:5]
    for split in ("train", "val"):
        class_folders(tmp_path / "in100" / split, wnids)
    spec = runs.make_spec("typographic", model=SMALL_VIT, dataset="imagenet100", root=str(tmp_path / "in100"))
    prompts = typographic.prompts_for(spec)
    assert "a photo of a green mamba." in prompts and not any(" n0" in p for p in prompts)
    # D_pref / D_reg come from train/, the reported test split from val/
    assert all("/train/" in str(spec.train_set.base.samples[i][0]) for i in spec.train_set.indices)
    assert all("/val/" in str(spec.test_set.base.samples[i][0]) for i in spec.test_set.indices)
    _, result = train_and_eval(SMALL_VIT, tmp_path, dataset="imagenet100", root=str(tmp_path / "in100"))
    assert len(spec.ensemble) == 80  # open_clip's OpenAI ImageNet templates: zero-shot as the field measures it
    assert {"zeroshot/accuracy", "kl/clean"} <= set(result["metrics"]["trained"])


def test_the_real_photo_sets_from_the_command_line(tmp_path, capsys):
    root = class_folders(tmp_path / "imgs", ["cat", "dog", "pizza", "tree", "car"])
    out, _ = train_and_eval(SMALL_VIT, tmp_path, dataset="folder", root=str(root))
    paint = tmp_path / "paint"
    paint.mkdir()
    for name in ("label=cat_text=dog.jpg", "label=dog_text=cat (2).jpg", "label=tree_text=pizza.jpg"):
        Image.new("RGB", (48, 48), "white").save(paint / name)
    assert {s[3] for s in photo_set(paint).samples} == {"dog", "cat", "pizza"}  # "(2)" is a copy, not a word
    mat = tmp_path / "materzynska"
    images(mat / "IMG", 2, "gray")
    (mat / "annotation.json").write_text(
        json.dumps(
            {
                "0.jpg": {"true object": "cat", "typographic attack label": "dog"},
                "1.jpg": {"true object": "dog", "typographic attack label": "cat"},
            }
        )
    )
    for photos in (paint, mat):
        code = main(
            [
                "eval",
                "typographic",
                "--model",
                SMALL_VIT,
                "--device",
                "cpu",
                "--photos",
                str(photos),
                "--projection",
                str(out / "projection.safetensors"),
                "--t",
                "0.5",
                "--json",
                "--workers",
                "0",
            ]
        )
        result = json.loads(capsys.readouterr().out)
        assert code == 0 and result["photos/n"] in (2, 3) and 0 <= result["photos/accuracy"] <= 1
        assert result["source"]["photos"] == str(photos.resolve()) and result["t"] == 0.5


def test_real_people_from_a_csv_train_and_eval_gender(tmp_path, capsys):
    rows = ["path,gender,activity"]
    for a, act in enumerate(["cooking", "repairing a car"]):
        for g, gen in enumerate(["man", "woman"]):
            folder = tmp_path / "people" / f"{a}{g}"
            images(folder, 5, COLOURS[2 * a + g])
            rows += [f"{a}{g}/{i}.jpg,{gen},{act}" for i in range(5)]
    csv = tmp_path / "people" / "people.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "gender"
    args = ["--model", SMALL_VIT, "--device", "cpu", "--no-cache", "--workers", "0"]
    code = main(
        ["train", "gender", *args, "--dataset", "people", "--root", str(csv), "--epochs", "1", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    no_model = [a for a in args if a not in ("--model", SMALL_VIT)]  # the run's manifest names it
    assert main(["eval", "gender", *no_model, "--projection", str(out / "projection.safetensors"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["prompts"]) == {"cooking", "repairing a car"} and result["k"] == 2  # half the 4-image gallery


def test_a_fine_tuned_encoder_is_evaluated_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "full"
    root = class_folders(tmp_path / "imgs", [f"class_{c}" for c in range(5)])
    code = main(
        [
            "train",
            "typographic",
            "--model",
            SMALL_VIT,  # eval below names no model, weights or data: the encoder's manifest does
            "--dataset",
            "folder",
            "--root",
            str(root),
            "--mode",
            "full",
            "--epochs",
            "1",
            "--n-train",
            "5",
            "--n-test",
            "5",
            "--no-cache",
            "--workers",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    trained = metrics["trained"]
    # a fine-tuned encoder has no W: no spectrum of one (W = I's 0, 1, 1) is printed or stored as a result
    assert "|W^T W - I|" not in capsys.readouterr().out
    assert not [k for part in ("base", "trained") for k in metrics[part] if k.startswith("w/")]
    code = main(
        [
            "eval",
            "typographic",
            "--image-encoder",
            str(out / "model.safetensors"),
            "--no-cache",
            "--workers",
            "0",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["accuracy/clean"] == pytest.approx(trained["accuracy/clean"])
    assert result["kl/clean"] == pytest.approx(trained["kl/clean"], abs=1e-5)
    assert not [k for k in result if k.startswith("w/")]


def test_a_custom_text_clip_trains_and_evaluates(tmp_path):
    bundle = load_clip("EVA02-B-16", device="cpu")
    assert type(bundle.model).__name__ == "CustomTextCLIP" and bundle.embed_dim == 512
    root = class_folders(tmp_path / "imgs", [f"class_{c}" for c in range(5)], n=3)  # 15 images: 6 train, 6 test
    train_and_eval("EVA02-B-16", tmp_path, dataset="folder", root=str(root))


def test_streaming_encoding_matches_encoding_a_list_and_uses_workers(tmp_path):
    bundle = load_clip("toy")
    spec = typographic.toy_spec(n_train=24, n_test=12, n_val=0)
    ds = typographic.attacked_datasets(spec)["test"]
    clean = [ds[i][0] for i in range(len(ds))]
    for workers in (0, 2):
        emb, labels = encode_dataset(bundle, ds, (0,), (2,), workers=workers, batch_size=5, progress=False)
        assert torch.allclose(emb, encode_images(bundle, clean, progress=False), atol=1e-5)
        assert labels.tolist() == [ds[i][2] for i in range(len(ds))]


def test_a_single_batch_is_encoded_without_a_worker(monkeypatch):
    """A DataLoader worker overlaps loading with the model; with one batch it overlaps nothing and its
    start (a fork, about 0.3 s) was all it added: at least 659 of the test suite's 799 encodes paid it."""
    import torch.utils.data

    started = []

    class Recording(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            started.append(kwargs["num_workers"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Recording)
    bundle = load_clip("toy")
    ds = typographic.attacked_datasets(typographic.toy_spec(n_train=24, n_test=12, n_val=0))["test"]
    one = encode_dataset(bundle, ds, (0,), (2,), workers=1, batch_size=12, progress=False)
    two = encode_dataset(bundle, ds, (0,), (2,), workers=1, batch_size=6, progress=False)
    assert started == [0, 1]
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_the_photo_sets_as_their_releases_unpack(tmp_path):
    """RTA-100 (ours/data), PAINT (typographic_real_data_from_PAINT/typographic_attacks) and
    Defense-Prefix's packaging of Materzynska et al. (annotations.json, classes.json, images/), each
    given as the folder the release unpacks to; the written words are classes too, as in the
    evaluation code behind the paper's numbers, so an attack can win on every photo."""
    rta = tmp_path / "rta" / "ours" / "data"
    paint = tmp_path / "paint" / "typographic_real_data_from_PAINT" / "typographic_attacks"
    for folder in (rta, paint):
        folder.mkdir(parents=True)
        for name in ("label=cat_text=dog.jpg", "label=mug_text=ipod.png", "label=dog_text=cat.jpg"):
            Image.new("RGB", (32, 32), "white").save(folder / name)
    for release in (tmp_path / "rta", tmp_path / "paint"):
        photos = photo_set(release)
        assert photos.classes == ["cat", "dog", "ipod", "mug"]
        assert sorted((photos.classes[s[1]], photos.classes[s[2]]) for s in photos.samples) == [
            ("cat", "dog"),
            ("dog", "cat"),
            ("mug", "ipod"),
        ]
    mat = tmp_path / "disentangling" / "typographic_attack_dataset"
    images(mat / "images", 2, "gray")
    (mat / "annotations.json").write_text(
        json.dumps(
            {
                "0.jpg": {"true object": "cup", "typographic attack label": "good"},
                "1.jpg": {"true object": "pen", "typographic attack label": "cup"},
            }
        )
    )
    (mat / "classes.json").write_text(json.dumps({"cup": 0, "pen": 1, "good": 2, "bad": 3}))
    photos = photo_set(tmp_path / "disentangling")
    assert photos.classes == ["cup", "pen", "good", "bad"]  # classes.json's, in its order
    assert [(photos.classes[s[1]], photos.classes[s[2]]) for s in photos.samples] == [("cup", "good"), ("pen", "cup")]
    assert photos[0][0].size == (40, 40)


def oxford_pets(root, breeds=("Abyssinian", "american_bulldog", "Bengal"), n=3):
    """Oxford-IIIT Pets as torchvision reads it: images/ and annotations/{trainval,test}.txt."""
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    for split, offset in (("trainval", 0), ("test", 100)):
        lines = []
        for label, breed in enumerate(breeds, start=1):
            ids = [f"{breed}_{offset + i}" for i in range(n)]
            (base / "images").mkdir(exist_ok=True)
            for i, image_id in enumerate(ids):
                Image.new("RGB", (40 + i, 40), COLOURS[label]).save(base / "images" / f"{image_id}.jpg")
            lines += [f"{image_id} {label} {1 + breed[0].isupper()} 1" for image_id in ids]
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_bench_paper_runs_the_table_1_protocol_beside_the_authors_numbers(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLIPALN_CACHE", str(tmp_path / "cache"))  # the second run reads the first's features
    root = tmp_path / "data"
    for split in ("train", "val"):
        class_folders(root / "imagenet100" / split, IMAGENET100_WNIDS[:5])
    class_folders(root / "eurosat" / "eurosat" / "2750", list(EUROSAT_NAMES))
    oxford_pets(root / "oxford_pets")
    args = ["bench", "paper", "--model", SMALL_VIT, "--data-root", str(root), "--n-train", "10", "--n-test", "6"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pretrained"] == "random init" and result["trained_on"] == "imagenet100"
    assert result["datasets"] == ["imagenet100", "oxford_pets", "eurosat"] and "food101" in result["missing"]
    assert set(result["rows"]) == {"base", "dpo", "ipo", "kto", "ce"}
    pets = result["rows"]["dpo"]["oxford_pets"]
    assert pets["O"]["authors"] == 85.25 and pets["T"]["authors"] == 79.72  # their BMA, from their log
    # 3 of the 37 breeds here: shown beside theirs, never diffed against it
    assert pets["T"]["diff"] is None and pets["not_comparable"] == "3 classes here, 37 in the authors' test"
    eurosat = result["rows"]["dpo"]["eurosat"]  # all 10 classes: comparable
    assert eurosat["not_comparable"] is None and eurosat["classes"] == eurosat["authors_classes"] == 10
    assert eurosat["T"]["diff"] == pytest.approx(eurosat["T"]["ours"] - eurosat["T"]["authors"], abs=0.01)
    assert result["rows"]["base"]["oxford_pets"]["T"]["authors"] == 62.01  # their reference model, attacked
    assert result["rows"]["ce"]["eurosat"]["T"]["authors"] is not None
    # their only ImageNet log is 1000-way: no authors' number beside ImageNet-100, and the output says why
    assert all(r["imagenet100"][k]["authors"] is None for r in result["rows"].values() for k in "OT")
    assert "1000-way" in result["not_compared"]["imagenet100"]
    assert result["n_test"] == {"imagenet100": 6, "oxford_pets": 6, "eurosat": 6}
    assert all(0 <= c[k]["ours"] <= 100 for rows in result["rows"].values() for c in rows.values() for k in "OT")
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| dpo | oxford_pets |" in table and "79.7" in table and "Not under the data root" in table
    assert main(["bench", "paper", "--model", SMALL_VIT]) == 2
    assert "--data-root" in capsys.readouterr().err
    # trained on another set than the authors': its method rows are not comparable, the base row is
    assert main([*args, "--train-on", "eurosat", "--json"]) == 0
    other = json.loads(capsys.readouterr().out)["rows"]
    assert other["dpo"]["eurosat"]["not_comparable"] == "trained on eurosat; the authors trained on imagenet100"
    assert other["base"]["eurosat"]["not_comparable"] is None
    # a dataset that cannot be read is one line naming it, before any model loads or trains
    (root / "oxford_pets" / "oxford-iiit-pet" / "annotations" / "test.txt").unlink()
    monkeypatch.setattr(bench_paper, "load_clip", lambda *a, **k: pytest.fail("loaded a model before reading"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read oxford_pets" in err
    assert main(["bench", "typographic", "--data-root", str(root)]) == 2  # a flag another bench would ignore
    assert "does not read --data-root" in capsys.readouterr().err


def test_bench_paper_states_its_protocol_and_averages_seeds(tmp_path, capsys, monkeypatch):
    """Sizes, seeds, schedule values, preprocessing and the authors' test sets, in the JSON and the
    markdown; --seeds 0,1,2 gives each cell a mean and an sd."""
    monkeypatch.setenv("CLIPALN_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for split in ("train", "val"):
        class_folders(root / "imagenet100" / split, IMAGENET100_WNIDS[:3])
    class_folders(root / "eurosat" / "eurosat" / "2750", list(EUROSAT_NAMES))
    args = ["bench", "paper", "--model", SMALL_VIT, "--data-root", str(root), "--n-train", "6", "--n-test", "6"]
    args += ["--workers", "0"]  # what the shared-memory error advises, read here too
    assert main([*args, "--seeds", "0,1,2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    protocol = result["protocol"]
    assert protocol["ours"]["training_seeds"] == [0, 1, 2] and protocol["ours"]["n_test_cap"] == 6
    assert protocol["ours"]["n_train"] == result["n_train"] and protocol["ours"]["n_train_asked"] == 6
    assert protocol["ours"]["schedule"]["ipo"]["beta"] == 0.01 and "lr" in protocol["ours"]["schedule"]["dpo"]
    assert "Normalize" in protocol["ours"]["preprocessing"] and "CLIPProcessor" in protocol["authors"]["preprocessing"]
    assert protocol["authors"]["n_test_cap"] == 5120
    assert "caltech {'ce': 5120, 'dpo': 8591" in protocol["authors"]["test_sets"]  # their CE and DPO test sets differ
    cell = result["rows"]["dpo"]["eurosat"]
    assert cell["authors_test_size"] == 5120 and cell["O"]["sd"] is not None
    assert result["rows"]["base"]["eurosat"]["O"]["sd"] is None  # the base model has no training seed
    rows = tmp_path / "rows.jsonl"
    assert main([*args, "--rows", str(rows)]) == 0
    table = capsys.readouterr().out
    assert "**Protocol**" in table and "one training seed" in table and "| n_test_cap | 6 | 5120 |" in table
    assert "| dpo | eurosat |" in table and " / 5120 |" in table
    kept = [json.loads(line) for line in rows.read_text().splitlines()]  # each finished cell, one line
    assert [(r["dataset"], r["method"]) for r in kept] == [
        (d, m) for d in ("imagenet100", "eurosat") for m in ("base", "dpo", "ipo", "kto", "ce")
    ]
    assert all(0 <= r[k]["ours"] <= 100 and r["classes"] == (3 if r["dataset"] == "imagenet100" else 10)
               for r in kept for k in "OT")  # fmt: skip
    before = rows.read_bytes()
    assert main([*args, "--rows", str(rows)]) == 2  # the user's file (or the last run's) is never replaced
    assert "rows.jsonl exists" in capsys.readouterr().err and rows.read_bytes() == before
    # a bench that stops half-way keeps what it finished
    calls = {"n": 0}
    evaluate = bench_paper.typographic.evaluate

    def stops_at_the_seventh(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return evaluate(*a, **k)

    monkeypatch.setattr(bench_paper.typographic, "evaluate", stops_at_the_seventh)
    stopped = tmp_path / "stopped.jsonl"
    with pytest.raises(KeyboardInterrupt):
        bench_paper.paper_table(SMALL_VIT, None, root, n_train=6, n_test=6, on_row=bench_paper.row_writer(stopped))
    assert len(stopped.read_text().splitlines()) == 6


def test_a_real_dataset_without_validation_images_says_to_pass_a_smaller_n_train_or_n_test(tmp_path, capsys):
    root = class_folders(tmp_path / "imgs", [f"class_{c}" for c in range(4)], n=2)  # 8 images: all train or test
    args = ["train", "typographic", "--model", SMALL_VIT, "--dataset", "folder", "--root", str(root)]
    args += ["--n-train", "4", "--epochs", "1", "--no-cache", "--workers", "0", "--eval-every", "1"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass a smaller --n-train or --n-test" in err, err
    assert not (tmp_path / "run").exists()


def test_a_torchvision_dataset_that_is_not_there_says_where_and_how_to_fetch_it(tmp_path, capsys):
    """Before any model is built: a missing root, and a root without the dataset in torchvision's layout
    (whose own error named neither), each in one line that gives the command line's --download."""
    (tmp_path / "data").mkdir()
    base = ["train", "typographic", "--model", SMALL_VIT, "--dataset", "food101", "--out", tmp_path / "run"]
    code, _, err = cli([*base, "--root", tmp_path / "none"], capsys)
    one_line_error(code, err, "does not exist", "--download")
    code, _, err = cli([*base, "--root", tmp_path / "data"], capsys)
    one_line_error(code, err, "food101 is not under", str(tmp_path / "data"), "--download")
