"""Fuzz the public functions: each call either works or raises a documented error (ValueError,
FileNotFoundError). Over 500 generated examples in all."""

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipaln import losses, metrics, policy
from clipaln.data.typographic import attack
from clipaln.projection import SharedProjection, SpectralScorer

DOCUMENTED = (ValueError, FileNotFoundError)
FUZZ = settings(max_examples=110, deadline=None, suppress_health_check=list(HealthCheck))
dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64])


def tensor(shape, dtype, nan=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 3
    if nan and x.numel():
        x.view(-1)[0] = float("nan")
    return x.to(dtype) if dtype != torch.int64 else (x * 10).long()


def works_or_documented(fn):
    try:
        return fn()
    except DOCUMENTED:
        return None


@FUZZ
@given(
    n=st.integers(0, 6),
    k=st.integers(0, 5),
    d=st.integers(1, 8),
    d2=st.integers(1, 8),
    dtype=dtypes,
    nan=st.booleans(),
    tau=st.floats(0.01, 200),
    use_w=st.booleans(),
)
def test_policy_and_projection(n, k, d, d2, dtype, nan, tau, use_w):
    img, txt = tensor((n, d), dtype, nan), tensor((k, d2), dtype, seed=1)
    proj = SharedProjection(d) if use_w else None
    out = works_or_documented(lambda: policy.logprobs(img, txt, tau, proj))
    if out is not None:
        assert out.shape == (n, k)
    if d == d2:
        # integer embeddings and NaN embeddings are refused, never scored
        assert (out is None) == (not dtype.is_floating_point or (nan and n > 0))


@FUZZ
@given(
    n=st.integers(0, 6),
    k=st.integers(1, 5),
    beta=st.floats(1e-3, 10),
    z0=st.floats(-5, 5),
    shift=st.integers(-2, 6),
    nan=st.booleans(),
    method=st.sampled_from(["dpo", "ipo", "kto", "ce", "kl", "ppo"]),
)
def test_losses(n, k, beta, z0, shift, nan, method):
    logp = tensor((n, k), torch.float32, nan).log_softmax(-1) if n else torch.zeros(0, k)
    ref = tensor((n, k), torch.float32, seed=2).log_softmax(-1) if n else torch.zeros(0, k)
    y_w = (torch.arange(n) + shift) % max(k, 1) + (shift if shift > 4 else 0)
    y_l = (y_w + 1) % k

    def call():
        if method == "ce":
            return losses.ce(logp, y_w)
        if method == "kl":
            return losses.kl_regularizer(logp, ref)
        if method == "kto":
            return losses.kto(logp, ref, y_w, y_l, beta, z0)
        h = losses.preference_margin(logp, ref, y_w, y_l)
        return losses.gradient_weight(method, h, beta)

    out = works_or_documented(call)
    if out is not None and method in ("dpo", "ipo"):
        assert out.shape == (n,)


@FUZZ
@given(
    d=st.integers(1, 10),
    t=st.one_of(st.floats(-4, 4), st.just(math.inf), st.just(math.nan)),
    vec=st.booleans(),
    n=st.integers(0, 5),
    noise=st.floats(0, 2),
)
def test_scaling_and_spectral_scores(d, t, vec, n, noise):
    g = torch.Generator().manual_seed(d)
    w = SharedProjection(d, torch.eye(d) + noise * torch.randn(d, d, generator=g))
    tt = torch.full((d,), t) if vec else t
    scaled = works_or_documented(lambda: w.scaled(tt))
    if math.isfinite(t):
        assert scaled is not None
    img, txt = tensor((n, d), torch.float32), tensor((3, d), torch.float32, seed=3)
    out = works_or_documented(lambda: SpectralScorer(w, img, txt).scores(tt))
    if out is not None:
        assert out.shape == (n, 3)


@FUZZ
@given(
    size=st.tuples(st.integers(1, 300), st.integers(1, 300)),
    mode=st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16"]),
    text=st.text(min_size=0, max_size=20),
    seed=st.integers(0, 2**16),
)
def test_attack_on_odd_images(size, mode, text, seed):
    img = Image.new(mode, size)
    out = works_or_documented(lambda: attack(img, text, rng=seed))
    if out is not None:
        assert out.size == size and out.mode == "RGB"
    if text.strip():
        assert out is not None


@FUZZ
@given(ranking=st.lists(st.sampled_from(["a", "b", "c"]), min_size=0, max_size=12), k=st.integers(-1, 14))
def test_retrieval_metrics(ranking, k):
    values = ["a", "b"]
    valid = 0 < k <= len(ranking)
    for fn in (
        lambda: metrics.share_at_k(ranking, k, values),
        lambda: metrics.max_skew_at_k(ranking, k, values),
        lambda: metrics.ndkl(ranking, values, k=k),
        lambda: metrics.precision_at_k(ranking, k, "a"),
    ):
        out = works_or_documented(fn)
        assert (out is not None) == valid
