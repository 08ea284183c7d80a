"""PGD and online adversarial preference training (App. K) on the toy CLIP."""

from types import SimpleNamespace

import pytest
import torch

from clipaln import adversarial
from clipaln.tracks import typographic
from clipaln.train import TrainConfig


@pytest.fixture(scope="module")
def batch(toy):
    spec = typographic.toy_spec(n_train=64, n_test=32, n_val=0)
    feats = typographic.build_features(toy, spec, progress=False)
    images = torch.stack([toy.preprocess(spec.train_set[i][0]) for i in range(64)])
    return spec, feats, images, feats.train.labels


def test_pgd_stays_in_the_ball_and_fools_the_model(toy, batch):
    _, feats, images, labels = batch
    stats = adversarial.pixel_stats(toy)
    eps = 8 / 255
    x_adv = adversarial.pgd(toy.model.visual, images, labels, feats.texts, toy.logit_scale, stats, eps, steps=5)
    mean, std = stats
    before, after = images * std + mean, x_adv * std + mean
    assert (after - before).abs().max() <= eps + 1e-5
    assert after.min() >= -1e-6 and after.max() <= 1 + 1e-6
    same = adversarial.pgd(toy.model.visual, images, labels, feats.texts, toy.logit_scale, stats, 0.0, steps=2)
    assert torch.allclose(same, images, atol=1e-5)
    r = adversarial.robust_accuracy(toy, images, labels, feats.texts, eps, steps=5)
    assert r["accuracy/clean"] == 1.0 and r["accuracy/pgd"] < 0.5


def test_adversarial_training_raises_robust_accuracy(toy, batch):
    _, feats, images, labels = batch
    eps = 8 / 255
    cfg = TrainConfig(method="dpo", lr=1e-3, epochs=8, batch_size=32, seed=0)
    weights = {k: v.clone() for k, v in toy.model.state_dict().items()}
    tuned, hist = adversarial.adversarial_finetune(
        toy, images, labels, feats.texts, cfg, eps, pgd_steps=2, progress=False
    )
    before = adversarial.robust_accuracy(toy, images, labels, feats.texts, eps, steps=5)["accuracy/pgd"]
    after = adversarial.robust_accuracy(tuned, images, labels, feats.texts, eps, steps=5)["accuracy/pgd"]
    assert after >= before + 0.2, (before, after)
    assert hist["pgd/fooled"][-1] < hist["pgd/fooled"][0]  # the attack fools less as training goes on
    # the original model is untouched; the text tower and tau of the tuned one too
    assert all(torch.equal(v, toy.model.state_dict()[k]) for k, v in weights.items())
    tuned_state = tuned.model.state_dict()
    assert all(torch.equal(v, tuned_state[k]) for k, v in weights.items() if not k.startswith("visual."))
    assert not any(p.requires_grad for p in tuned.model.parameters())


def test_pixel_stats_need_a_normalize_step(toy):
    with pytest.raises(ValueError, match="Normalize"):
        adversarial.pixel_stats(SimpleNamespace(preprocess=lambda x: x))
    with pytest.raises(ValueError, match="eps >= 0"):
        adversarial.pgd(None, torch.zeros(1, 3, 2, 2), torch.zeros(1), None, 1.0, adversarial.pixel_stats(toy), -1.0)
