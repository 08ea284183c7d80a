"""Training W on a synthetic problem with a known answer, and the training loop's contracts."""

import json
from pathlib import Path

import pytest
import torch

from clipaln import losses, train
from clipaln.config import SCHEDULER_TYPES
from clipaln.policy import logprobs
from clipaln.synthetic import typographic_features
from clipaln.train import PreferenceData, TrainConfig, bma_weight, fit_projection, lr_at, preference_accuracy

CONFIGS = {  # per method: beta, lambda, lr (a linear W needs its own lr, docs/method.md section 2)
    "dpo": dict(beta=1.0, lam=1.0, lr=0.02),
    "ipo": dict(beta=0.04, lam=1.0, lr=0.02),
    "kto": dict(beta=1.5, lam=1.0, lr=0.02),
}


@pytest.fixture(scope="module")
def problem():
    return typographic_features(seed=0)


@pytest.mark.parametrize("method", ["dpo", "ipo", "kto"])
def test_each_method_fixes_the_synthetic_attack_with_small_kl(problem, method):
    d = problem
    before = preference_accuracy(d.pref_images, d.texts, d.y_w, d.y_l)
    proj, hist = fit_projection(
        d, TrainConfig(method=method, epochs=30, batch_size=128, orth=0.0, bma=False, **CONFIGS[method]), progress=False
    )
    after = preference_accuracy(d.pref_images, d.texts, d.y_w, d.y_l, proj)
    kl = losses.kl_regularizer(
        logprobs(d.reg_images, d.texts, d.logit_scale, proj), logprobs(d.reg_images, d.texts, d.logit_scale)
    ).item()
    assert before < 0.2
    assert after > 0.9, f"{method}: preference accuracy {after:.3f}"
    assert kl < 0.05
    assert len(hist["loss"]) == 30 * 4 and hist["rewards/margins"][-1] > hist["rewards/margins"][0]


def test_training_is_reproducible_from_the_seed(problem):
    cfg = TrainConfig(method="dpo", epochs=2, batch_size=64, lr=0.01, seed=3, orth=0.0, bma=False)
    a, _ = fit_projection(problem, cfg, progress=False)
    b, _ = fit_projection(problem, cfg, progress=False)
    assert torch.equal(a.weight, b.weight)


def test_bma_average_lies_between_init_and_final(problem):
    cfg = TrainConfig(method="dpo", epochs=3, batch_size=128, lr=0.02, orth=0.0, bma=False)
    plain, _ = fit_projection(problem, cfg, progress=False)
    avg, _ = fit_projection(problem, TrainConfig(**{**cfg.__dict__, "bma": True}), progress=False)
    eye = torch.eye(plain.dim)
    assert 0 < (avg.weight - eye).norm() < (plain.weight - eye).norm()
    assert bma_weight(0.01) > bma_weight(0.5) < bma_weight(0.99)


def test_bma_includes_the_initial_model_as_the_authors_do(problem):
    # one step: the average is over the initial W = I and the trained W, with the Beta(0.7, 0.7)
    # density at progress 1/4 and 3/4, which are equal: so BMA gives exactly (I + W_1) / 2
    cfg = TrainConfig(method="dpo", epochs=1, batch_size=len(problem.pref_images), lr=0.05, orth=0.0, bma=False)
    plain, _ = fit_projection(problem, cfg, progress=False)
    avg, _ = fit_projection(problem, TrainConfig(**{**cfg.__dict__, "bma": True}), progress=False)
    assert not torch.allclose(plain.weight, torch.eye(plain.dim))
    assert torch.allclose(avg.weight, (torch.eye(plain.dim) + plain.weight) / 2, atol=1e-6)


def test_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.01


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(method="ppo"), "unknown method"),
        (dict(beta=0.0), "beta"),
        (dict(beta=-1.0), "beta"),
        (dict(lam=-0.1), "lambda"),
        (dict(beta=float("nan")), "beta"),
    ],
)
def test_bad_config_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


def test_preference_data_refuses_equal_pairs(problem):
    with pytest.raises(ValueError, match="y_w == y_l"):
        PreferenceData(
            problem.pref_images,
            problem.y_w,
            problem.y_w.clone(),
            problem.texts,
            problem.reg_images,
            problem.logit_scale,
        )


def test_interrupt_and_resume_gives_the_uninterrupted_w(problem, tmp_path, ctrl_c_after_checkpoints):
    from safetensors import safe_open

    cfg = TrainConfig(method="dpo", epochs=40, batch_size=16, lr=0.01, bma=True, orth=0.0)
    full, full_hist = fit_projection(problem, cfg, progress=False)
    ckpt = tmp_path / "ckpt.safetensors"
    with ctrl_c_after_checkpoints(5):
        fit_projection(problem, cfg, progress=False, checkpoint=ckpt, checkpoint_every=3)
    with safe_open(str(ckpt), "pt") as f:
        stopped_at = int(f.metadata()["step"])
    assert 0 < stopped_at < 40 * 32
    resumed, hist = fit_projection(problem, cfg, progress=False, checkpoint=ckpt, checkpoint_every=3, resume=True)
    assert hist["step"] == list(range(40 * 32))  # every step once: those before the checkpoint come with it
    assert hist["loss"] == pytest.approx(full_hist["loss"], abs=1e-5)
    assert all(a <= b for a, b in zip(hist["elapsed_s"], hist["elapsed_s"][1:]))  # the time goes on, not from 0
    assert torch.allclose(resumed.weight, full.weight, atol=1e-6)
    with pytest.raises(ValueError, match="refusing to resume"):
        fit_projection(
            problem,
            TrainConfig(method="ipo", epochs=40, batch_size=16, lr=0.01, bma=True, orth=0.0),
            progress=False,
            checkpoint=ckpt,
            resume=True,
        )


def test_nan_loss_stops_with_the_step_named(problem):
    bad = PreferenceData(
        problem.pref_images.clone(), problem.y_w, problem.y_l, problem.texts, problem.reg_images, problem.logit_scale
    )
    bad.logit_scale = float("nan")  # past the constructor's checks: the loop's own guard must stop it
    with pytest.raises(FloatingPointError, match="at step 0"):
        fit_projection(bad, TrainConfig(epochs=1), progress=False)


def test_loss_is_trls_preference_loss_and_the_total_has_its_own_name(problem):
    cfg = TrainConfig(method="dpo", epochs=2, batch_size=128, lam=0.5, orth=3.0, bma=False)
    _, hist = fit_projection(problem, cfg, progress=False)
    for i in range(len(hist["step"])):
        total = hist["loss"][i] + cfg.lam * hist["loss/kl"][i] + cfg.orth * hist["loss/orth"][i]
        assert hist["loss/total"][i] == pytest.approx(total, rel=1e-5)
    assert hist["loss"][-1] < hist["loss/total"][-1]  # once W moved, the KL and the penalty are not in "loss"
    assert "loss/pref" not in hist


# --- W on the run's device; TRL's names -------------------------------------------------------


def _small_data():
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    n, k, d = 96, 6, 16
    return PreferenceData(
        F.normalize(torch.randn(n, d, generator=g), dim=-1),
        torch.randint(0, 3, (n,), generator=g),
        torch.randint(3, 6, (n,), generator=g),
        F.normalize(torch.randn(k, d, generator=g), dim=-1),
        F.normalize(torch.randn(n, d, generator=g), dim=-1),
        100.0,
    )


def test_w_on_the_cpu_is_what_it_was_before_the_device_change():
    """W as commit 285a6f7 (before W moved to the run's device) trained it, on one thread. Its bytes
    were identical there and here on three CPUs, but the bytes follow the CPU (two of them gave other
    bytes than the third), so the test reads three numbers of W, recorded from 285a6f7, to 1e-6: without
    a vector unit (ATEN_CPU_CAPABILITY=default) they move by 3e-8, a change of the loop far more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    probe = torch.randn(16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    recorded = {  # sum, <W, probe>, Frobenius norm
        "dpo": (16.03775825734556, -4.348637821222848, 3.996208202590814),
        "kto": (15.991682786247111, -4.354309555492412, 3.9967913823337855),
    }
    try:
        for method, expected in recorded.items():
            torch.manual_seed(0)
            cfg = TrainConfig(method=method, epochs=3, batch_size=32)
            proj, _ = fit_projection(_small_data(), cfg, progress=False, device="cpu")
            w = proj.weight.detach().double()
            got = (w.sum().item(), (w * probe).sum().item(), w.norm().item())
            assert got == pytest.approx(expected, rel=1e-6, abs=1e-6), method
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_w_trains_on_cuda_where_there_is_one():
    data, seen = _small_data(), []
    cfg = TrainConfig(method="dpo", epochs=3, batch_size=32)
    report = lambda step, row: seen.append(step)
    on_gpu, _ = fit_projection(data, cfg, progress=False, report=report)  # the default device: the GPU
    on_cpu, _ = fit_projection(data, cfg, progress=False, device="cpu")
    assert seen and on_gpu.weight.device.type == "cpu"  # trained there, handed back here
    assert (on_gpu.weight - on_cpu.weight).abs().max() < 1e-4


def test_fit_projection_moves_the_features_to_the_device_once(monkeypatch):
    """The data move to the device in one call before the loop, and W comes back on the CPU."""
    data, moves = _small_data(), []
    original = PreferenceData.to
    monkeypatch.setattr(PreferenceData, "to", lambda self, device: moves.append(str(device)) or original(self, device))
    proj, _ = fit_projection(data, TrainConfig(method="dpo", epochs=1, batch_size=32), progress=False, device="cpu")
    assert moves == ["cpu"] and proj.weight.device.type == "cpu"


def test_trls_names_mean_what_they_mean_in_trl():
    from clipaln.train import lr_at, read_config

    # per_device_train_batch_size is per rank: with one process and 2 accumulation steps, a global 2 x 16
    cfg = TrainConfig(method="dpo", per_device_train_batch_size=16, gradient_accumulation_steps=2)
    assert cfg.batch_size is None and train.global_batch(cfg) == 32
    with pytest.raises(ValueError, match="set one of them"):
        TrainConfig(batch_size=64, per_device_train_batch_size=16)
    # the schedules after the warm-up, as transformers names them
    rates = {k: [lr_at(s, 10, 1.0, 0.2, k) for s in range(10)] for k in SCHEDULER_TYPES}
    assert rates["cosine"][:2] == [0.5, 1.0] and rates["cosine"][-1] < 0.05
    assert rates["linear"][2] == 1.0 and rates["linear"][-1] == pytest.approx(1 / 8)
    assert rates["constant_with_warmup"] == [0.5] + [1.0] * 9 and rates["constant"] == [1.0] * 10
    with pytest.raises(ValueError, match="lr_scheduler_type must be one of"):
        TrainConfig(lr_scheduler_type="polynomial")
    # max_grad_norm clips the global gradient; weight decay reaches the optimiser
    data = _small_data()
    _, hist = fit_projection(data, TrainConfig(epochs=1, batch_size=32, max_grad_norm=1e-3), progress=False)
    _, free = fit_projection(data, TrainConfig(epochs=1, batch_size=32), progress=False)
    assert hist["grad_norm"][0] == free["grad_norm"][0] > 1e-3  # the norm before clipping
    clipped, _ = fit_projection(data, TrainConfig(epochs=1, batch_size=32, max_grad_norm=1e-3), progress=False)
    unclipped, _ = fit_projection(data, TrainConfig(epochs=1, batch_size=32), progress=False)
    decayed, _ = fit_projection(data, TrainConfig(epochs=1, batch_size=32, weight_decay=0.5), progress=False)
    assert not torch.equal(clipped.weight, unclipped.weight) and not torch.equal(decayed.weight, unclipped.weight)
    # a TRL config file reads with TRL's meaning
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trl.json"
        path.write_text(json.dumps({"per_device_train_batch_size": 8, "learning_rate": 1e-3, "max_grad_norm": 1.0}))
        config = read_config(path)
    assert config == {"per_device_train_batch_size": 8, "lr": 1e-3, "max_grad_norm": 1.0}


def test_gradient_accumulation_gives_the_whole_batchs_w():
    data = _small_data()
    for method in ("dpo", "kto"):
        whole, _ = fit_projection(data, TrainConfig(method=method, epochs=2, batch_size=32), progress=False)
        cfg = TrainConfig(method=method, epochs=2, per_device_train_batch_size=8, gradient_accumulation_steps=4)
        parts, _ = fit_projection(data, cfg, progress=False)
        tolerance = 1e-6 if method == "dpo" else 1e-3  # KTO's z0 is each micro-batch's, as in TRL
        assert (whole.weight - parts.weight).abs().max() < tolerance, method


def test_no_step_on_noise_l_reg_alone_keeps_w_at_the_identity():
    """The reviewers' "L_reg only" ablation: at W = I the objective is at its minimum and its gradient
    is float rounding, which Adamax would scale up to steps of size lr. Below min_grad_norm no step is
    taken, so W stays the identity; a preference run's gradients are far above it (same W with the floor at 0)."""
    data = _small_data()
    eye = torch.eye(data.texts.shape[1])
    cfg = TrainConfig(method="dpo", epochs=3, batch_size=32, pref_weight=0.0)
    proj, hist = fit_projection(data, cfg, progress=False, device="cpu")
    assert (proj.weight.detach() - eye).abs().max() <= 1e-4
    assert 0 < max(hist["grad_norm"]) < cfg.min_grad_norm  # rounding, every step
    drifted, _ = fit_projection(data, TrainConfig(method="dpo", epochs=3, batch_size=32, pref_weight=0.0,
                                                  min_grad_norm=0.0), progress=False, device="cpu")  # fmt: skip
    assert (drifted.weight.detach() - eye).abs().max() > 1e-3  # what Adamax does with rounding
    for method in ("dpo", "ipo", "kto"):
        floor, h = fit_projection(data, TrainConfig(method=method, epochs=3, batch_size=32), progress=False)
        none, _ = fit_projection(
            data, TrainConfig(method=method, epochs=3, batch_size=32, min_grad_norm=0.0), progress=False
        )
        assert min(h["grad_norm"]) > 100 * TrainConfig(method=method).min_grad_norm
        assert torch.equal(floor.weight, none.weight), method


def test_a_full_shared_memory_names_the_fix():
    from clipaln.features import _worker_errors_unwrapped

    class Loader:
        def __iter__(self):
            return self

        def __next__(self):
            raise RuntimeError("unable to resize file </torch_123_456> to the right size: No space left on device (28)")

    with pytest.raises(RuntimeError, match="--workers 0"):
        list(_worker_errors_unwrapped(Loader()))


def test_a_nan_loss_names_a_checkpoint_only_when_one_was_saved(tmp_path):
    from clipaln.train import loop

    w = torch.nn.Parameter(torch.ones(2))
    cfg = TrainConfig(method="dpo", lr=0.1, epochs=1, batch_size=2, orth=0.0, bma=False)
    nan_at_step_2 = lambda idx, ridx, batch: (w.sum() * (float("nan") if state["step"] >= 2 else 1.0), {})
    state = {"step": 0}

    def objective(idx, ridx, batch):
        state["step"] += 1
        return nan_at_step_2(idx, ridx, batch)

    for every, named in ((1000, False), (1, True)):
        state["step"] = 0
        with pytest.raises(FloatingPointError) as e:
            loop(
                [w],
                objective,
                8,
                8,
                cfg,
                progress=False,
                checkpoint=tmp_path / f"c{every}.safetensors",
                checkpoint_every=every,
            )
        assert ("checkpoint" in str(e.value)) == named
        assert not named or (tmp_path / f"c{every}.safetensors").is_file()


def test_kto_logs_its_kl_estimate_as_trl_does():
    from test_policy import small_data

    from clipaln import fit_projection

    _, hist = fit_projection(small_data(), TrainConfig(method="kto", epochs=2, batch_size=6), progress=False)
    assert "kl" in hist and len(hist["kl"]) == len(hist["loss"]) and min(hist["kl"]) >= 0
    _, hist = fit_projection(small_data(), TrainConfig(method="dpo", epochs=2, batch_size=6), progress=False)
    assert "kl" not in hist  # DPO has no reference point
