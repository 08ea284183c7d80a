"""The speed benchmark's pieces run and report consistent numbers (timings are not asserted)."""

import json

import pytest
from support import cli, one_line_error

from clipaln import bench
from clipaln.cli import main


def test_slider_benchmark_matches_the_naive_scorer():
    r = bench.slider_update_ms(n_images=500, n_classes=10, dim=64, repeats=5)
    assert r["slider_max_abs_diff_vs_naive"] < 1e-5
    assert r["slider_update_ms"] > 0


def test_measure_model_reports_all_three_timings(toy):
    r = bench.measure_model(toy, n=24, epochs=1, batch_size=16)
    assert r["n_images"] == 48
    for k in ("encode_pass_s", "cached_total_s", "in_loop_total_s"):
        assert r[k] > 0
    assert r["cached_over_encode"] == pytest.approx(r["cached_total_s"] / r["encode_pass_s"], rel=0.05)


def _row(t, o, kl=0.01, act=0.9):
    return {
        "accuracy/attacked": t,
        "accuracy/clean": o,
        "kl/clean": kl,
        "retention/activity": act,
        "retention/gender": 1.0,
    }


def test_claims_are_judged_per_method_not_on_an_average():
    rows = {"base": _row(0.3, 0.9, 0.0), "CE": _row(0.8, 0.9, 0.05, 0.5)}
    rows |= {"DPO": _row(0.7, 0.9), "IPO": _row(0.75, 0.89), "KTO": _row(0.4, 0.9)}  # KTO gains only 10 points
    out = {c["claim"]: c for c in bench.claims(table={"rows": rows})}
    assert out["preference optimisation raises T and keeps O"]["verdict"] == "partly (DPO, IPO)"
    assert out["preference optimisation beats CE"]["verdict"] == "disagrees"  # best PO T 75 < CE's 80
    assert out["preference optimisation moves the model less than CE"]["verdict"] == "agrees"
    assert out["preference optimisation keeps knowledge out of domain"]["verdict"] == "agrees"
    assert out["KTO has the best average of O and T"]["verdict"] == "disagrees"  # IPO's (75 + 89) / 2 leads
    rows["KTO"] = _row(0.8, 0.9)
    rows["IPO"] = _row(0.75, 0.89, kl=0.2)  # IPO moves the model more than CE (KL 0.05)
    out = {c["claim"]: c for c in bench.claims(table={"rows": rows})}
    assert out["preference optimisation raises T and keeps O"]["verdict"] == "agrees"
    assert out["KTO has the best average of O and T"]["verdict"] == "agrees"
    assert out["preference optimisation moves the model less than CE"]["verdict"] == "partly (DPO, KTO)"
    rows |= {m: _row(0.75, 0.9, kl=0.3) for m in ("DPO", "IPO", "KTO")}
    out = {c["claim"]: c for c in bench.claims(table={"rows": rows})}
    assert out["preference optimisation moves the model less than CE"]["verdict"] == "disagrees"


def test_tradeoff_claim_needs_both_directions():
    point = lambda t, ocr: {"accuracy/attacked": t, "accuracy/ocr": ocr, "accuracy/clean": 1.0}
    sweep = {-2.0: point(0.2, 0.7), -1.0: point(0.3, 0.6), 0.0: point(0.5, 0.4), 1.0: point(0.8, 0.1)}
    (claim,) = bench.claims(tradeoff=sweep)
    assert claim["verdict"] == "agrees"  # T rises at t = 1; the written word is named more at t = -1 and -2
    sweep[-2.0] = point(0.6, 0.3)  # t = -2 reads less than t = 0
    assert bench.claims(tradeoff=sweep)[0]["verdict"] == "disagrees"


def test_ablation_prints_every_row_and_the_sweeps(capsys):
    from clipaln.cli import main

    args = ["bench", "ablation", "--n-train", "96", "--n-test", "48", "--seeds", "0", "--no-cache"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["rows"]) == {"base", "L_pref only", "L_reg only", "L_pref + L_reg", "CE", "CE + KL"}
    # the KL term does its job: CE with it moves the model less than CE without it
    assert r["rows"]["CE + KL"]["kl/clean"] < r["rows"]["CE"]["kl/clean"]
    assert len(r["beta_lambda"]) == 9 and [s["n_train"] for s in r["data_size"]] == [12, 24, 48, 96]


def test_dial_bench_reports_each_default_ws_spectrum_and_dial(capsys):
    from clipaln.cli import main

    assert main(["bench", "dial", "--n-train", "96", "--n-test", "48", "--seeds", "0", "--no-cache"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["typographic"]) == {"dpo", "ipo", "kto", "ce"} and set(r["gender"]) == {"dpo", "ipo", "kto"}
    row = r["typographic"]["dpo"][0]
    assert row["w/s_min"] <= row["w/s_max"] and row["dial/min_clean"] <= row["dial/clean_t0"]
    assert row["dial/ocr_t0"] == r["typographic"]["ce"][0]["dial/ocr_t0"]  # t = 0 is the base model for every W
    within = row["w/orthogonality_gap"] <= 0.5 and 0.5 <= row["w/s_min"] and row["w/s_max"] <= 2.0
    assert row["checks"]["w_within_target"] == within
    assert row["checks"]["min_clean_at_least_60"] == (row["dial/min_clean"] >= 0.6)


def test_gender_bench_has_each_method_ours_and_the_dial_numbers(capsys):
    from clipaln.cli import main

    assert main(["bench", "gender", "--n-train", "64", "--n-test", "48", "--seeds", "0", "--no-cache"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r) == {"dpo", "ipo", "kto", "reflection"} and len(r["reflection"]) == 1
    row = r["dpo"][0]
    assert row["w_within_target"] == (
        row["w/orthogonality_gap"] <= 0.5 and 0.5 <= row["w/s_min"] <= row["w/s_max"] <= 2.0
    )
    assert set(row["distinct_counts"]) == set(row["skewed_prompts"]) and all(
        n >= 1 for n in row["distinct_counts"].values()
    )
    assert row["t0"] == r["reflection"][0]["t0"]  # t = 0 is the pretrained model for every method
    assert "understanding" not in row and "curve" not in row  # the bench keeps the summaries only


def test_the_gpu_check_runs_every_part_in_its_dry_run(tmp_path):
    """benchmarks/gpu_check.py --dry-run: each part on the CPU, tiny, and its JSON (what a GPU run writes)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"
    out = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    p = subprocess.run([sys.executable, str(script), "--dry-run", "--out", str(out)], capture_output=True, text=True,
                       env=env, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["encode_vit_b_32"]["images_per_s"] > 0
    assert result["w_fit"]["steps_per_s"] > 0 and result["w_fit"]["imagenet_1k_30_epochs_h"] > 0
    assert result["full_finetuning_step"]["steps"] == 2 and result["full_finetuning_step"]["s_per_step"] > 0
    assert "skipped" in result["notebook_05"]
    assert subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env).returncode != 0 or (
        __import__("torch").cuda.is_available()
    )  # without --dry-run it needs a GPU: one line, not a CPU run passed off as one


def test_a_benchmark_in_one_file_and_one_line_runs_from_the_command_line(capsys, monkeypatch):
    from pathlib import Path

    from clipaln.bench import registry

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "examples"))
    from clean_accuracy_bench import clean_accuracy

    registry.register("clean", registry.Bench(clean_accuracy))  # the one line
    try:
        assert main(["bench", "clean", "--n-test", "24", "--json", "--no-cache"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["n_test"] == 24 and 0.9 <= result["accuracy/clean"] <= 1.0  # the toy CLIP sees objects
        assert main(["bench", "clean", "--n-toy", "5"]) == 2  # a flag it does not read is refused
        assert "bench clean does not read --n-toy" in capsys.readouterr().err
        with pytest.raises(ValueError, match="registered already"):
            registry.register("paper", registry.Bench(clean_accuracy))
    finally:
        del registry.BENCHES["clean"]


def test_encode_reports_no_worker_memory_without_workers():
    from clipaln.bench import encode_once

    result = encode_once("toy", 8, 0, "cpu")
    assert result["workers"] == 0 and result["peak_worker_rss_mb"] is None  # not another child's memory
    assert result["images"] == 16 and result["peak_rss_mb"] > 0


def test_a_size_only_one_track_takes_names_the_track_and_the_bench_that_shares_it(capsys):
    """bench dial trains both tracks on one --n-train: 100 images is fine for typographic, not 100 people
    over gender's 16 cells; the one line says the bench shares the flag (bench gender alone: the track's words)."""
    code, _, err = cli(["bench", "dial", "--n-train", "100", "--seeds", "0"], capsys)
    one_line_error(code, err, "bench dial trains both tracks", "multiple of 16")
    code, _, err = cli(["bench", "gender", "--n-train", "100", "--seeds", "0"], capsys)
    one_line_error(code, err, "gender --n-train", "multiple of 16")
    assert "both tracks" not in err
