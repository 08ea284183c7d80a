"""What a shared W_t does to gender, split as notebooks 04 and 04b derive it (M_t = W_t^T W_t, each
prompt's gain and coupled terms, the pull of the captions), and a reflection of the prompts that is
ours, not the paper's, for comparison."""

from __future__ import annotations

import torch

from ...projection import SharedProjection, SpectralScorer, exponents
from .spec import Features


def image_gender_direction(feats: Features) -> torch.Tensor:
    """The unit vector from the mean (unit-length) training image of genders[1] to that of genders[0]:
    the direction along which the pictured gender varies, from the labels the reversal task uses."""
    x = torch.nn.functional.normalize(feats.train_images.double(), dim=-1)
    first = torch.tensor([g == feats.genders[0] for g, _ in feats.train_labels])
    return torch.nn.functional.normalize(x[first].mean(0) - x[~first].mean(0), dim=0).float()


class PromptReflection:
    """Ours, not the paper's: reflect every text along a unit direction g, scaled by t,

        y_t = y - 2t (g . y) g,        so that g . y_t = (1 - 2t) g . y   and   x . y_t = x . y - 2t (x . g)(g . y).

    With g = image_gender_direction(feats), t = 0 is the pretrained model, t = 1/2 removes each
    prompt's component along g (debiasing by projection, Chuang et al. 2023) and t = 1 reverses it,
    prompt by prompt; the rest of each prompt, the activity, is untouched. Images are not changed.
    It stands where a projection does in Sweep, evaluate and understanding (notebook 04 derives why
    no shared W can do this: W^T W would need the eigenvalue -1)."""

    def __init__(self, direction):
        try:
            direction = torch.as_tensor(direction, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"the direction must be a vector of numbers, got {type(direction).__name__}") from None
        if direction.ndim != 1 or not torch.isfinite(direction).all() or direction.norm() == 0:
            raise ValueError("the direction must be a finite, non-zero vector")
        self.direction = torch.nn.functional.normalize(direction, dim=0).float()
        self.dim = direction.numel()

    def scorer(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> _ReflectionScorer:
        for name, e in (("image", image_emb), ("text", text_emb)):
            if e.ndim != 2 or e.shape[-1] != self.dim:
                raise ValueError(f"the reflection is {self.dim}-d; the {name} embeddings are {tuple(e.shape)}")
        return _ReflectionScorer(self.direction, image_emb, text_emb)


class _ReflectionScorer:
    def __init__(self, g, image_emb, text_emb):
        self.g = g
        self.x = torch.nn.functional.normalize(image_emb.float(), dim=-1)
        self.y = torch.nn.functional.normalize(text_emb.float(), dim=-1)

    def scores(self, t) -> torch.Tensor:
        t = float(exponents(t))  # a finite number, as SharedProjection.scaled takes it
        y = self.y - 2 * t * (self.y @ self.g)[:, None] * self.g[None]
        return self.x @ torch.nn.functional.normalize(y, dim=-1).T


def retrieval_scorer(
    projection: SharedProjection | PromptReflection | None, image_emb: torch.Tensor, text_emb: torch.Tensor
) -> SpectralScorer | _ReflectionScorer:
    """The scorer of retrieval under W_t (float64, as retrieval ranks near ties) or a prompt reflection."""
    if isinstance(projection, PromptReflection):
        return projection.scorer(image_emb, text_emb)
    return SpectralScorer(projection or SharedProjection(image_emb.shape[-1]), image_emb, text_emb, retrieval=True)


def _unit_after(projection, emb: torch.Tensor, t: float) -> torch.Tensor:
    """Unit-length embeddings under W_t, in float64 (W_t itself as SharedProjection.scaled builds it)."""
    e = emb.double()
    return torch.nn.functional.normalize(e, dim=-1) if projection is None else projection.scaled(t)(e)


def metric(projection: SharedProjection | None, t: float, dim: int) -> torch.Tensor:
    """M_t = W_t^T W_t = V S^{2t} V^T in float64 (the identity without a projection): every score
    under a shared W_t is x^T M_t y over the norms (notebook 04, 4.1)."""
    if projection is None:
        return torch.eye(dim, dtype=torch.float64)
    _, s, vh = projection.svd()
    return vh.double().T @ torch.diag(s.double() ** (2 * t)) @ vh.double()


def activity_gaps(feats: Features) -> dict[str, torch.Tensor]:
    """G_a per activity: the mean unit test-gallery image of its genders[0] minus that of genders[1]."""
    x = torch.nn.functional.normalize(feats.gallery.double(), dim=-1)
    first = torch.tensor([g == feats.genders[0] for g, _ in feats.gallery_labels])
    out = {}
    for a in feats.activities:
        of_a = torch.tensor([act == a for _, act in feats.gallery_labels])
        out[a] = x[of_a & first].mean(0) - x[of_a & ~first].mean(0)
    return out


def lean_terms(feats: Features, projection: SharedProjection | None, t: float) -> dict:
    """What a shared W_t does to each prompt's gender lean, split as notebook 04 derives it.

    With x, y unit embeddings, M_t = W_t^T W_t, g = image_gender_direction(feats), G_a the mean
    image of activity a's genders[0] minus that of its genders[1] (test gallery), and the prompt
    y = alpha g + r (r orthogonal to g), the gap in the score numerator x^T M_t y is exactly

        G_a^T M_t y  =  alpha (G_a^T M_t g)   (the gain term: g's own part, scaled by M_t)
                     +  G_a^T M_t r           (the coupled term: the rest of the prompt, coupled in by M_t).

    Returns {prompt: {"alpha", "gain", "gain_term", "coupled_term", "numerator", "lean"}}, with
    "gain" = G_a^T M_t g and "lean" the retrieval quantity itself: the mean cosine of genders[0]'s
    images minus that of genders[1]'s under W_t (cosines divide the numerator by ||W_t x|| ||W_t y||)."""
    if projection is not None and not isinstance(projection, SharedProjection):
        raise ValueError(f"this splits what a shared W does; got a {type(projection).__name__}, not a SharedProjection")
    g = image_gender_direction(feats).double()
    y = torch.nn.functional.normalize(feats.prompt_texts.double(), dim=-1)
    m = metric(projection, t, g.numel())
    xu, yu = _unit_after(projection, feats.gallery, t), _unit_after(projection, feats.prompt_texts, t)
    first = torch.tensor([gg == feats.genders[0] for gg, _ in feats.gallery_labels])
    gaps = activity_gaps(feats)
    out = {}
    for j, a in enumerate(feats.activities):
        of_a = torch.tensor([act == a for _, act in feats.gallery_labels])
        g_a = gaps[a]
        alpha = y[j] @ g
        r = y[j] - alpha * g
        gain = g_a @ m @ g
        out[a] = {
            "alpha": alpha.item(),
            "gain": gain.item(),
            "gain_term": (alpha * gain).item(),
            "coupled_term": (g_a @ m @ r).item(),
            "numerator": (g_a @ m @ y[j]).item(),
            "lean": ((xu[of_a & first].mean(0) - xu[of_a & ~first].mean(0)) @ yu[j]).item(),
        }
    return out


def caption_pull(feats: Features, projection: SharedProjection | None, t: float) -> dict:
    """How each gender's images sit, under W_t, towards the captions: per gender of the test
    gallery, the mean cosine to its own gender's caption ("this man is cooking."), to the other's,
    and to the neutral retrieval prompt of its activity; and the share whose own caption wins."""
    if projection is not None and not isinstance(projection, SharedProjection):
        raise ValueError(f"this splits what a shared W does; got a {type(projection).__name__}, not a SharedProjection")
    x = _unit_after(projection, feats.gallery, t)
    c = _unit_after(projection, feats.pref_texts, t)
    v = _unit_after(projection, feats.prompt_texts, t)
    gi = {g: i for i, g in enumerate(feats.genders)}
    ai = {a: i for i, a in enumerate(feats.activities)}
    out = {}
    for g in feats.genders:
        idx = [i for i, (gg, _) in enumerate(feats.gallery_labels) if gg == g]
        acts = torch.tensor([ai[feats.gallery_labels[i][1]] for i in idx])
        own = (x[idx] * c[2 * acts + gi[g]]).sum(1)
        other = (x[idx] * c[2 * acts + 1 - gi[g]]).sum(1)
        neutral = (x[idx] * v[acts]).sum(1)
        out[g] = {
            "own caption": own.mean().item(),
            "other caption": other.mean().item(),
            "neutral prompt": neutral.mean().item(),
            "own wins": (own > other).double().mean().item(),
        }
    return out
