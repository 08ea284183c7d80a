"""Every loss equals its formula in docs/method.md, and autograd agrees with the closed-form weights."""

import math

import pytest
import torch

from clipaln import losses
from clipaln.policy import logprobs


def _batch(n=16, k=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    img, ref_img = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    txt = torch.randn(k, d, generator=g)
    y_w = torch.randint(0, k, (n,), generator=g)
    y_l = (y_w + torch.randint(1, k, (n,), generator=g)) % k
    return logprobs(img, txt, 20.0), logprobs(ref_img, txt, 20.0), y_w, y_l


def test_margin_matches_definition_and_lemma_3_1():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(10, 8, generator=g), torch.randn(5, 8, generator=g)
    img_ref = torch.randn(10, 8, generator=g)
    tau = 30.0
    lp, ref = logprobs(img, txt, tau), logprobs(img_ref, txt, tau)
    y_w, y_l = torch.zeros(10, dtype=torch.long), torch.ones(10, dtype=torch.long)
    h = losses.preference_margin(lp, ref, y_w, y_l)
    expected = (lp[:, 0] - lp[:, 1]) - (ref[:, 0] - ref[:, 1])
    assert torch.allclose(h, expected, atol=1e-6)
    # Lemma 3.1: the normalisers cancel, h is tau times a difference of cosine differences
    cos = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    cos_ref = torch.nn.functional.normalize(img_ref, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    lemma = tau * ((cos[:, 0] - cos[:, 1]) - (cos_ref[:, 0] - cos_ref[:, 1]))
    assert torch.allclose(h, lemma, atol=1e-4)


def test_dpo_ipo_equal_their_formulas():
    h = torch.randn(100, dtype=torch.float64) * 3
    for beta in (0.01, 0.5, 1.0, 2.0):
        dpo = torch.tensor([-math.log(1 / (1 + math.exp(-beta * v))) for v in h.tolist()], dtype=torch.float64)
        ipo = torch.tensor([(v - 1 / (2 * beta)) ** 2 for v in h.tolist()], dtype=torch.float64)
        assert torch.allclose(losses.dpo(h, beta), dpo, atol=1e-6)
        assert torch.allclose(losses.ipo(h, beta), ipo, atol=1e-6)


def test_kto_equals_its_formula():
    lp, ref, y_w, y_l = _batch()
    beta, z0 = 1.5, 0.3
    out = losses.kto(lp, ref, y_w, y_l, beta, z0)
    assert out.shape == (16, 2)
    sig = lambda v: 1 / (1 + math.exp(-v))
    for i in range(16):
        r_w = (lp[i, y_w[i]] - ref[i, y_w[i]]).item()
        r_l = (lp[i, y_l[i]] - ref[i, y_l[i]]).item()
        assert out[i, 0].item() == pytest.approx(1 - sig(beta * (r_w - z0)), abs=1e-6)
        assert out[i, 1].item() == pytest.approx(1 - sig(beta * (z0 - r_l)), abs=1e-6)
    # z0 is clamped at zero and carries no gradient
    assert torch.allclose(losses.kto(lp, ref, y_w, y_l, beta, -5.0), losses.kto(lp, ref, y_w, y_l, beta, 0.0))
    z = torch.tensor(0.2, requires_grad=True)
    assert not losses.kto(lp, ref, y_w, y_l, beta, z).requires_grad  # z0 is detached


def test_kl_regularizer_is_kl_ref_to_policy():
    lp, ref, _, _ = _batch()
    expected = (ref.exp() * (ref - lp)).sum(-1).mean()
    assert losses.kl_regularizer(lp, ref).item() == pytest.approx(expected.item(), abs=1e-6)
    assert losses.kl_regularizer(ref, ref).item() == pytest.approx(0.0, abs=1e-7)


def test_ce_is_negative_log_prob_of_label():
    lp, _, y, _ = _batch()
    assert torch.allclose(losses.ce(lp, y), -lp[torch.arange(16), y], atol=1e-7)


@pytest.mark.parametrize("method", ["dpo", "ipo"])
@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 3.0])
def test_autograd_matches_closed_form_gradient_weight(method, beta):
    h = (torch.randn(64, dtype=torch.float64) * 4).requires_grad_(True)
    getattr(losses, method)(h, beta).sum().backward()
    assert torch.allclose(-h.grad, losses.gradient_weight(method, h.detach(), beta), atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_cdpos_gradient_weight_follows_the_configured_smoothing(eps):
    """cDPO's closed-form weight takes the run's label_smoothing, not the module's default 0.1."""
    h = (torch.randn(64, dtype=torch.float64) * 4).requires_grad_(True)
    losses.cdpo(h, 2.0, eps).sum().backward()
    w = losses.gradient_weight("cdpo", h.detach(), 2.0, label_smoothing=eps)
    assert torch.allclose(-h.grad, w, atol=1e-9)
    assert eps == 0.1 or not torch.allclose(w, losses.gradient_weight("cdpo", h.detach(), 2.0))


def test_kto_gradient_weight_matches_desirable_term_autograd():
    h = torch.linspace(-6, 6, 50, dtype=torch.float64, requires_grad=True)
    beta = 1.5
    (1 - torch.sigmoid(beta * h)).sum().backward()
    assert torch.allclose(-h.grad, losses.gradient_weight("kto", h.detach(), beta), atol=1e-9)


def test_dpo_weight_fades_and_ipo_pulls_back():
    h = torch.tensor([-5.0, 0.0, 5.0, 50.0])
    w = losses.gradient_weight("dpo", h, 1.0)
    assert (w[:-1] > w[1:]).all() and w[-1] < 1e-6
    assert (
        losses.gradient_weight("ipo", torch.tensor([100.0]), 0.01).item()
        < 0
        < losses.gradient_weight("ipo", torch.tensor([0.0]), 0.01).item()
    )
    with pytest.raises(ValueError, match="unknown method"):
        losses.gradient_weight("ppo", h, 1.0)


def _pairs(n=64, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = torch.randn(n, k, generator=g).log_softmax(-1)
    ref = torch.randn(n, k, generator=g).log_softmax(-1)
    y_w = torch.randint(0, k, (n,), generator=g)
    y_l = (y_w + torch.randint(1, k, (n,), generator=g)) % k
    return logp, ref, y_w, y_l


@pytest.mark.parametrize("beta", [0.1, 1.0, 2.5])
def test_the_further_losses_equal_their_formulas(beta):
    logp, ref, y_w, y_l = _pairs()
    h = losses.preference_margin(logp, ref, y_w, y_l)
    eps = losses.LABEL_SMOOTHING
    sig = torch.sigmoid
    expected = -(1 - eps) * torch.log(sig(beta * h)) - eps * torch.log(sig(-beta * h))
    assert torch.allclose(losses.LOSSES["cdpo"].loss(logp, ref, y_w, y_l, beta, None), expected, atol=1e-6)
    m = logp.gather(1, y_w[:, None])[:, 0] - logp.gather(1, y_l[:, None])[:, 0]
    assert torch.allclose(
        losses.LOSSES["rfdpo"].loss(logp, ref, y_w, y_l, beta, None), -torch.log(sig(beta * m)), atol=1e-6
    )
    r = beta * (logp - ref)
    expected = -torch.log(r.exp().gather(1, y_w[:, None])[:, 0] / r.exp().sum(-1))
    assert torch.allclose(losses.LOSSES["mdpo"].loss(logp, ref, y_w, y_l, beta, None), expected, atol=1e-6)
    two = torch.tensor([[0.0, 0.0]]).log_softmax(-1)  # with two classes multi-negative DPO is DPO
    lp2 = torch.tensor([[0.3, -0.3]]).log_softmax(-1)
    assert torch.allclose(
        losses.multi_dpo(lp2, two, torch.tensor([0]), beta),
        losses.dpo(losses.preference_margin(lp2, two, torch.tensor([0]), torch.tensor([1])), beta),
        atol=1e-6,
    )


@pytest.mark.parametrize("name", ["cdpo", "rfdpo"])
def test_the_further_losses_gradient_equals_their_weight(name):
    entry = losses.LOSSES[name]
    h = torch.linspace(-6, 6, 101, requires_grad=True)
    entry.of_margin(h, 1.3).sum().backward()
    assert torch.allclose(-h.grad, entry.weight(h.detach(), 1.3), atol=1e-6)


def test_multi_negative_dpo_gradient_equals_its_weights():
    logp, ref, y_w, _ = _pairs()
    r = (logp - ref).clone().requires_grad_(True)  # the loss depends on logp - ref only
    losses.multi_dpo(r, torch.zeros_like(r), y_w, 0.7).sum().backward()
    assert torch.allclose(-r.grad, losses.multi_dpo_weights(logp, ref, y_w, 0.7), atol=1e-6)


def test_cdpo_stops_pushing_at_its_finite_optimum():
    beta, eps = 1.0, losses.LABEL_SMOOTHING
    h_star = torch.tensor([math.log((1 - eps) / eps) / beta])
    assert abs(losses.LOSSES["cdpo"].weight(h_star, beta).item()) < 1e-6


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_cdpo_gradient_weight_uses_the_configured_smoothing(smoothing):
    h = torch.linspace(-10, 10, 41, requires_grad=True)
    losses.cdpo(h, 1.0, smoothing).sum().backward()
    weight = losses.gradient_weight("cdpo", h.detach(), 1.0, label_smoothing=smoothing)
    assert torch.allclose(-h.grad, weight, atol=1e-6)
    with pytest.raises(ValueError, match="no option"):
        losses.gradient_weight("dpo", h.detach(), 1.0, label_smoothing=smoothing)


def test_every_loss_takes_its_arguments_in_the_registrys_order():
    """(logp, ref_logp, y_w, y_l, beta, z0): KTO's function and its registry entry no longer swap two floats."""
    import inspect

    assert list(inspect.signature(losses.kto).parameters) == ["logp", "ref_logp", "y_w", "y_l", "beta", "z0"]
    lp, ref = torch.randn(5, 4).log_softmax(-1), torch.randn(5, 4).log_softmax(-1)
    y_w, y_l = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([1, 2, 3, 0, 2])
    by_entry = losses.LOSSES["kto"].loss(lp, ref, y_w, y_l, 1.5, 0.2)
    assert torch.allclose(by_entry, losses.kto(lp, ref, y_w, y_l, 1.5, 0.2).mean(-1))
