"""The speed benchmark's pieces run and report consistent numbers (timings are not asserted)."""

import pytest

from clipaln import bench


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
