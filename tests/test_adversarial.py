"""PGD and online adversarial preference training (App. K) on the toy CLIP."""

from types import SimpleNamespace

import pytest
import torch

from clipaln import adversarial
from clipaln.policy import logprobs
from clipaln.tracks import typographic
from clipaln.train import TrainConfig

EPS = 8 / 255


@pytest.fixture(scope="module")
def data(toy):
    spec = typographic.toy_spec(n_train=64, n_test=32, n_val=0)
    feats = typographic.build_features(toy, spec, progress=False)
    train = torch.stack([toy.preprocess(spec.train_set[i][0]) for i in range(64)])
    test = torch.stack([toy.preprocess(spec.test_set[i][0]) for i in range(32)])
    return feats, train, feats.train.labels, test, feats.test.labels


def reference_pgd(visual, images, labels, texts, tau, mean, std, eps, steps, noise):
    """Madry et al.'s PGD written out: a uniform start, sign steps, projection onto the eps-ball and
    onto [0, 1] after every move."""
    x = images * std + mean
    alpha = 2.5 * eps / steps
    delta = (x + (2 * noise - 1) * eps).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        emb = torch.nn.functional.normalize(visual((x + delta - mean) / std).float(), dim=-1)
        loss = torch.nn.functional.cross_entropy(logprobs(emb, texts, tau), labels)
        (g,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * g.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta - mean) / std


def test_pgd_is_projected_sign_ascent_and_stays_in_the_ball(toy, data):
    feats, images, labels, _, _ = data
    images = images[:16].clone()
    images[:, :, :8] = 1.0  # saturated pixels: the projection onto [0, 1] matters there
    stats = adversarial.pixel_stats(toy)
    mean, std = stats
    x_adv = adversarial.pgd(
        toy.model.visual, images, labels[:16], feats.texts, toy.logit_scale, stats, EPS, steps=4,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(3))
    expected = reference_pgd(
        toy.model.visual, images, labels[:16], feats.texts, toy.logit_scale, mean, std, EPS, 4, noise
    )
    assert torch.allclose(x_adv, expected, atol=1e-5)
    before, after = images * std + mean, x_adv * std + mean
    assert (after - before).abs().max() <= EPS + 1e-5
    assert after.min() >= -1e-6 and after.max() <= 1 + 1e-6
    with torch.no_grad():  # works inside no_grad too (evaluation code often is)
        same = adversarial.pgd(toy.model.visual, images, labels[:16], feats.texts, toy.logit_scale, stats, 0.0, steps=2)
    assert torch.allclose(same, images, atol=1e-5)


def test_pgd_fools_the_pretrained_model(toy, data):
    feats, _, _, test, test_labels = data
    r = adversarial.robust_accuracy(toy, test, test_labels, feats.texts, EPS, steps=5)
    assert r["accuracy/clean"] == 1.0 and r["accuracy/pgd"] < 0.5


def test_adversarial_training_raises_robust_accuracy_on_held_out_images(toy, data):
    feats, images, labels, test, test_labels = data
    cfg = TrainConfig(method="dpo", lr=1e-3, epochs=8, batch_size=32, seed=0)
    weights = {k: v.clone() for k, v in toy.model.state_dict().items()}
    tuned, hist = adversarial.adversarial_finetune(
        toy, images, labels, feats.texts, cfg, EPS, pgd_steps=2, progress=False
    )
    before = adversarial.robust_accuracy(toy, test, test_labels, feats.texts, EPS, steps=5)
    after = adversarial.robust_accuracy(tuned, test, test_labels, feats.texts, EPS, steps=5)
    assert after["accuracy/pgd"] >= before["accuracy/pgd"] + 0.2
    assert after["accuracy/clean"] >= before["accuracy/clean"] - 0.05
    first, last = hist["pgd/fooled"][:4], hist["pgd/fooled"][-4:]
    assert sum(last) < sum(first)  # the attack fools less as training goes on
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
