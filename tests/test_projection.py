"""W_t = U S^t V^T: t = 0 is the base model, t = 1 is W, t < 0 reverses; files are safe."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F

from clipaln.policy import similarities
from clipaln.projection import SharedProjection, SpectralScorer, naive_scores
from clipaln.tracks.gender.analysis import retrieval_scorer


def _random_w(d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = SharedProjection(d)
    with torch.no_grad():
        p.weight.add_(0.5 * torch.randn(d, d, generator=g))
    return p


def _emb(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_identity_init_and_renormalised_output():
    p = SharedProjection(8)
    x = torch.randn(5, 8) * 3
    assert torch.equal(p.weight.detach(), torch.eye(8))
    assert torch.allclose(p(x), F.normalize(x, dim=-1))
    y = _random_w(8)(x)
    assert torch.allclose(y.norm(dim=-1), torch.ones(5), atol=1e-6)


def test_a_projection_prints_its_size_and_spectrum():
    w = SharedProjection(3, torch.diag(torch.tensor([0.5, 1.0, 1.5])))
    assert repr(w) == "SharedProjection(dim=3, singular values 0.5 to 1.5)"
    assert repr(w.scaled(2)) == "SharedProjection(dim=3, singular values 0.25 to 2.25)"
    assert repr(SharedProjection(3, torch.full((3, 3), float("nan")))) == "SharedProjection(dim=3, not finite)"


def test_scaled_zero_reproduces_base_scores():
    p = _random_w(32)
    img, txt = _emb(50, 32, 1), _emb(10, 32, 2)
    p0 = p.scaled(0)
    assert torch.allclose(p0(img) @ p0(txt).T, img @ txt.T, atol=1e-5)


def test_scaled_one_is_w():
    p = _random_w(16)
    assert torch.allclose(p.scaled(1).weight.float(), p.weight, atol=1e-5)


def test_negative_t_reverses_a_learned_margin():
    # W stretches direction e0, where class 0's text sits: class 0 gains on the mixed image
    d = 8
    p = SharedProjection(d)
    with torch.no_grad():
        p.weight.copy_(torch.diag(torch.tensor([3.0] + [1.0] * (d - 1))))
    txt = torch.eye(d)[:2]  # class 0 along e0, class 1 along e1
    img = F.normalize(torch.tensor([[0.6, 0.8] + [0.1] * (d - 2)]), dim=-1)

    def margin(proj):
        s = proj(img) @ proj(txt).T
        return (s[0, 0] - s[0, 1]).item()

    base = margin(p.scaled(0))
    assert margin(p.scaled(1)) > base
    assert margin(p.scaled(-1)) < base


def test_vector_t_scales_one_direction_only():
    p = _random_w(12)
    t = torch.zeros(12)
    t[0] = 1.0
    u, s, vh = p.svd()
    expected = u @ torch.diag(torch.cat([s[:1], torch.ones(11, dtype=s.dtype)])) @ vh
    assert torch.allclose(p.scaled(t).weight.float(), expected.float(), atol=1e-5)
    with pytest.raises(ValueError):
        p.scaled(torch.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        p.scaled(float("nan"))


@pytest.mark.parametrize("t", [-3.0, -1.0, 0.0, 0.42, 1.0, 2.5, 4.0])
def test_spectral_scorer_equals_naive(t):
    p = _random_w(64, seed=3)
    img, txt = _emb(200, 64, 4), _emb(20, 64, 5)
    scorer = SpectralScorer(p, img, txt)
    assert torch.allclose(scorer.scores(t), naive_scores(p, img, txt, t), atol=1e-5)


def test_spectral_scorer_vector_t():
    p = _random_w(16, seed=6)
    img, txt = _emb(30, 16, 7), _emb(5, 16, 8)
    t = torch.linspace(-1, 2, 16)
    assert torch.allclose(SpectralScorer(p, img, txt).scores(t), naive_scores(p, img, txt, t), atol=1e-5)


def test_save_load_round_trip_with_metadata(tmp_path):
    p = _random_w(10)
    path = p.save(tmp_path / "w.safetensors", method="dpo", beta=1.0)
    q = SharedProjection.load(path)
    assert torch.equal(q.weight, p.weight)
    assert q.metadata["method"] == "dpo" and q.metadata["beta"] == "1.0"
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="does not match"):
        SharedProjection.load(path, dim=12)


def test_a_run_folder_given_as_the_projection_names_the_file_in_it(tmp_path):
    SharedProjection(4).save(tmp_path / "projection.safetensors")
    with pytest.raises(FileNotFoundError, match=r"is a folder: its W is .*projection\.safetensors$"):
        SharedProjection.load(tmp_path)


def test_load_refuses_pickles_and_garbage(tmp_path):
    pickled = tmp_path / "w.pt"
    torch.save({"weight": torch.eye(4)}, pickled)
    with pytest.raises(ValueError, match="never unpickles"):
        SharedProjection.load(pickled)
    truncated = tmp_path / "cut.safetensors"
    good = SharedProjection(4).save(tmp_path / "good.safetensors").read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError):
        SharedProjection.load(truncated)
    with pytest.raises(FileNotFoundError):
        SharedProjection.load(tmp_path / "missing.safetensors")


def test_large_t_is_stable_or_refused_never_nan():
    p = _random_w(16, seed=4)
    img, txt = F.normalize(torch.randn(20, 16), dim=-1), F.normalize(torch.randn(5, 16), dim=-1)
    scores = SpectralScorer(p, img, txt).scores(5000.0)  # S^10000 overflows float64; the scorer never does
    assert torch.isfinite(scores).all() and scores.abs().max() <= 1 + 1e-5
    with pytest.raises(ValueError, match="not finite"):
        p.scaled(5000.0)


def wide_w(dim=16, seed=0, low=0.05):
    """A W whose singular values span `low` to 1.5 (IPO's trained W spans 0.04 to 1.56, notebook 02)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return SharedProjection(dim, (u @ torch.diag(torch.linspace(low, 1.5, dim, dtype=torch.float64)) @ v.T).float())


@pytest.mark.parametrize("t", [-8.0, -4.0, 6.0])
def test_large_t_eval_and_slider_agree_with_float64(t):
    """Eval (W_t formed explicitly) and the sliders (the spectral scorer) predict what float64 does:
    at t = -8, S^t spans eleven orders of magnitude and float32 flipped 179 of these 400 answers."""
    proj = wide_w()
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(400, 16, generator=g), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(10, 16, generator=g), dim=-1)
    u, s, vh = torch.linalg.svd(proj.weight.double())
    w64 = u @ torch.diag(s**t) @ vh
    nx, ny = (torch.nn.functional.normalize(e.double() @ w64.T, dim=-1) for e in (x, y))
    exact = (nx @ ny.T).argmax(-1)
    assert torch.equal(similarities(x, y, proj.scaled(t)).argmax(-1), exact)  # what eval calls
    assert torch.equal(SpectralScorer(proj, x, y).scores(t).argmax(-1), exact)  # what the sliders call


@pytest.mark.parametrize("t", ["1", None, True, [[1.0]]])
def test_scaled_refuses_what_is_not_a_t(t):
    with pytest.raises(ValueError, match="t must be"):
        wide_w().scaled(t)
    with pytest.raises(ValueError, match="t must be"):
        SpectralScorer(wide_w(), torch.randn(3, 16), torch.randn(2, 16)).scores(t)


def _trained_on(task, toy):
    """A W trained on the track with its own method's schedule, and the images and texts its slider scores."""
    from clipaln.tracks import gender, typographic

    if task == "typographic":
        feats = typographic.build_features(toy, typographic.toy_spec(n_train=640, n_test=200, n_val=0), progress=False)
        W, _ = typographic.train(feats, typographic.train_config("dpo", epochs=3), progress=False)
        return W, torch.cat([feats.test.clean, feats.test.attacked, feats.reading]), feats.texts
    feats = gender.build_features(toy, gender.toy_spec(12, 10), progress=False)
    W, _ = gender.train(feats, gender.train_config("dpo", epochs=3), progress=False)
    return W, feats.gallery, feats.prompt_texts


T_RANGE = torch.linspace(-3, 3, 61).tolist()


def test_float32_and_float64_classify_alike_over_t_in_minus_3_to_3(toy):
    """The typographic slider's float32 product gives every image the class float64 gives it at every t
    in [-3, 3] in steps of 0.1 (clean, attacked and text-only images, a W trained with DPO)."""
    W, images, texts = _trained_on("typographic", toy)
    fast, exact = SpectralScorer(W, images, texts), SpectralScorer(W, images, texts, retrieval=True)
    in_float32 = 0
    for t in T_RANGE:
        a, b = fast.scores(t), exact.scores(t)
        in_float32 += exact.floor > fast.floor and bool((a.float().double() == a).all())
        assert torch.equal(a.argmax(-1), b.argmax(-1)), t
        assert torch.equal(fast.classify(t), b.argmax(-1)), t  # the slider's update, without the norms
    assert in_float32 >= 40, in_float32  # float32 is what this W's slider uses over most of the range


def test_classify_in_blocks_gives_each_image_the_argmax_of_its_scores():
    """classify takes the float32 product BLOCK images at a time (a ragged last block here); every image,
    in every block, gets the class its scores give it, at every t."""
    g = torch.Generator().manual_seed(1)
    n = 2 * SpectralScorer.BLOCK + 37
    images = F.normalize(torch.randn(n, 16, generator=g), dim=-1)
    texts = F.normalize(torch.randn(9, 16, generator=g), dim=-1)
    W = SharedProjection(16, torch.eye(16) + 0.1 * torch.randn(16, 16, generator=g))
    scorer = SpectralScorer(W, images, texts)
    for t in (-3.0, -0.4, 0.0, 1.0, 2.6):
        assert torch.equal(scorer.classify(t), scorer.scores(t).argmax(-1)), t
    for n in (0, 5):  # no image, and fewer than a block
        few = SpectralScorer(W, images[:n], texts)
        assert torch.equal(few.classify(0.5), few.scores(0.5).argmax(-1))
    # two threads sharing a scorer (each call writes its own blocks)
    ts = [(-1.0 + 0.1 * i) for i in range(40)]
    want = {t: scorer.scores(t).argmax(-1) for t in ts}
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(scorer.classify, ts))
    assert all(torch.equal(g, want[t]) for g, t in zip(got, ts))


def test_retrieval_ranks_in_float64_because_float32_cannot_order_near_identical_images(toy):
    """Ranking a gallery for each prompt on the gender track: images whose cosines differ below float32's
    resolution (near-identical pictograms tie to the 7th digit; here, 20 copies of one gallery image
    moved by 1e-9 in a shuffled order) come out of the float32 product in the wrong order at some t in
    [-3, 3], on any CPU's rounding; so retrieval (gender.Sweep) scores in float64, and its rankings are
    float64's at every t."""

    W, images, texts = _trained_on("gender", toy)
    g = torch.Generator().manual_seed(0)
    offset = (
        torch.randperm(20, generator=g).double()[:, None] * 1e-9 * torch.randn(images.shape[1], generator=g).double()
    )
    gallery = torch.cat([images.double(), images[:1].double() + offset])  # the copies' order only float64 can see
    fast, exact = SpectralScorer(W, gallery, texts), SpectralScorer(W, gallery, texts, retrieval=True)
    copies = slice(len(images), None)
    order = lambda s: s[copies].argsort(dim=0, descending=True, stable=True)[:10]
    assert any(not torch.equal(order(fast.scores(t)), order(exact.scores(t))) for t in T_RANGE)
    used = retrieval_scorer(W, gallery, texts)
    top = lambda s: s.topk(10, dim=0).indices
    assert all(torch.equal(top(used.scores(t)), top(exact.scores(t))) for t in T_RANGE)
    assert all(torch.equal(order(used.scores(t)), order(exact.scores(t))) for t in T_RANGE)


def test_the_svd_is_taken_once_per_value_of_w():
    W = SharedProjection(4, torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))
    first = W.svd()
    assert W.svd() is first  # the sliders and the phase diagram ask again and again
    with torch.no_grad():
        W.weight.mul_(2)  # an optimiser step changes W in place
    assert torch.allclose(W.svd()[1], 2 * first[1])
    W.load_state_dict({"weight": torch.eye(4)})
    assert torch.allclose(W.svd()[1], torch.ones(4, dtype=torch.float64))
