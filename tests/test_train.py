"""Training W on a synthetic problem with a known answer, and the training loop's contracts."""

import pytest
import torch

from clipaln import losses
from clipaln.data.synthetic import typographic_features
from clipaln.policy import logprobs
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
