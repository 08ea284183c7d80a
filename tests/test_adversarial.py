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
        x_in = ((x + delta - mean) / std).contiguous(memory_format=torch.channels_last)  # the same convolutions
        emb = torch.nn.functional.normalize(visual(x_in).float(), dim=-1)
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
    cfg = TrainConfig(method="dpo", lr=1e-3, epochs=8, batch_size=32, seed=0, bma=False)
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


def test_each_step_prefers_the_truth_over_where_the_attack_pushed(toy, data, monkeypatch):
    """D_pref of a step: the perturbed images crafted against the current policy, y_w the true class,
    y_l the policy's best wrong class on them, and the frozen model's log-probabilities on the same
    perturbed images as the reference."""
    feats, images, labels, _, _ = data
    seen, calls = {}, []
    pgd, objective = adversarial.pgd, adversarial.preference_objective

    def spy_pgd(visual, x, y, texts, tau, *args, **kw):
        x_adv = pgd(visual, x, y, texts, tau, *args, **kw)
        with torch.no_grad():
            emb = lambda v: torch.nn.functional.normalize(v(x_adv).float(), dim=-1)
            seen.update(policy=logprobs(emb(visual), texts, tau), ref=logprobs(emb(toy.model.visual), texts, tau), y=y)
        return x_adv

    def spy_objective(cfg, logp, ref_logp, y_w, y_l, *rest):
        calls.append((logp.detach(), ref_logp, y_w, y_l, dict(seen)))
        return objective(cfg, logp, ref_logp, y_w, y_l, *rest)

    monkeypatch.setattr(adversarial, "pgd", spy_pgd)
    monkeypatch.setattr(adversarial, "preference_objective", spy_objective)
    cfg = TrainConfig(method="dpo", lr=1e-3, epochs=1, batch_size=16, seed=0, bma=False)
    adversarial.adversarial_finetune(toy, images[:32], labels[:32], feats.texts, cfg, EPS, pgd_steps=2, progress=False)
    assert len(calls) == 2
    for logp, ref_logp, y_w, y_l, s in calls:
        assert torch.equal(y_w, s["y"]) and (y_l != y_w).all()
        assert torch.allclose(logp, s["policy"], atol=1e-5)  # the policy's log-probabilities on the attacked images
        wrong = s["policy"].scatter(1, y_w[:, None], float("-inf"))
        assert torch.equal(y_l, wrong.argmax(-1))
        assert torch.allclose(ref_logp, s["ref"], atol=1e-5)  # the frozen model on the same images
