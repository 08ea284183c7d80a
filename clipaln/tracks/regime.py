"""When can a shared W reverse a concept? The condition, a world on which to vary it, and the phase diagram.

A shared W reaches every score through M_t = W_t^T W_t = V S^{2t} V^T (notebook 04, section 4.1),
which is positive definite. Reversing gender means turning the sign of G^T M_t d, where G is the
direction in which the *images* of the two genders differ and d the direction in which the
*captions* differ ("this man is {a}." minus "this woman is {a}."). Write M_t as its mid-eigenvalue
times (I + N) with ||N|| <= rho = (kappa - 1) / (kappa + 1), kappa the condition number of M_t:

    G^T M_t d  >=  mid * |G| |d| (cos(G, d) - rho)          (the rotation bound)

so no shared W of condition number kappa reverses gender while cos(G, d) >= rho(kappa). With
kappa_t = (s_max / s_min)^(2|t|) this puts a floor under the t where W_t can reverse both genders
(G^T M_t d < 0): t >= artanh(cos(G, d)) / ln(s_max / s_min)   (`crossing_floor`). The understanding
can still reach 50% before it one-sidedly, when W_t makes every image read as one gender.

A neutral prompt y turns with the understanding when its lean lives along d: split y = beta d_hat + q
(q orthogonal to d); its lean's numerator is G_a^T M_t y = beta G_a^T M_t d_hat + G_a^T M_t q exactly,
and the first term changes sign where the understanding does (`lean_along_captions`).

`features(alignment, ...)` builds a world of synthetic embeddings in which cos(G, d) is set, and
nothing else moves with it: the images, the captions' component along G, and each prompt's lean
on the images at t = 0 are the same at every alignment; only the captions' (and the prompts') part
off the images grows as the alignment falls. `phase_diagram` trains the paper's reversal (the
gender track's DEFAULTS) on it at several alignments and reports the Fig. 3 crossing and the
retrieval flips.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from ..data.gender import reversal_task
from ..features import encode_texts
from ..models import ClipBundle
from ..projection import SharedProjection, spectrum, within_target
from . import gender

#: Activities of the synthetic world and the sign of each one's lean at t = 0 (+ men, - women): the
#: toy's six skewed activities with graded strengths and two balanced ones.
LEANS = {
    "cooking": -1.0,
    "cleaning": -0.8,
    "working as a nurse": -0.6,
    "repairing a car": 0.6,
    "playing football": 0.8,
    "working as a police officer": 1.0,
    "reading a book": 0.0,
    "painting": 0.0,
}


def rotation_bound(kappa: float) -> float:
    """rho(kappa) = (kappa - 1) / (kappa + 1): the largest |cos| by which a symmetric positive definite
    M of condition number kappa can move a^T M b / (mid |a||b|) below cos(a, b); a shared W can turn
    a^T M b negative only if cos(a, b) < rho."""
    kappa = float(kappa)
    if not kappa >= 1 or not math.isfinite(kappa):
        raise ValueError(f"a condition number is a finite number >= 1, got {kappa}")
    return (kappa - 1) / (kappa + 1)


def condition_number(projection: SharedProjection, t: float = 1.0) -> float:
    """kappa of M_t = V S^{2t} V^T: (s_max / s_min)^(2|t|)."""
    s = torch.linalg.svdvals(projection.weight.detach().double())
    return float((s.max() / s.min()) ** (2 * abs(t)))


def crossing_floor(alignment: float, s_min: float, s_max: float) -> float:
    """The smallest t at which a W with singular values in [s_min, s_max] can have turned
    G^T M_t d negative, for cos(G, d) = alignment: rho(kappa_t) = alignment, i.e.
    t = artanh(alignment) / ln(s_max / s_min). 0 for alignment <= 0; inf for a W that is orthogonal."""
    if not -1 < alignment < 1:
        raise ValueError(f"alignment is a cosine strictly within (-1, 1), got {alignment}")
    if not 0 < s_min <= s_max:
        raise ValueError(f"need 0 < s_min <= s_max, got {s_min}, {s_max}")
    if alignment <= 0:
        return 0.0
    return math.inf if s_max == s_min else math.atanh(alignment) / math.log(s_max / s_min)


#: Gender caption wordings the gender track does not train on, for measuring the alignment beyond
#: its own captions (data.gender.GENDER_TEMPLATE is "this {gender} is {activity}.").
OTHER_WORDINGS = ("a photo of a {gender} {activity}.", "a {gender} {activity}.", "an image of a {gender} {activity}.")


def caption_direction(texts: torch.Tensor) -> torch.Tensor:
    """The unit direction from the mean genders[1] caption to the mean genders[0] caption, for
    captions ordered as data.gender.reversal_task orders them (genders[0], genders[1] per activity)."""
    c = F.normalize(texts.double(), dim=-1)
    return F.normalize(c[0::2].mean(0) - c[1::2].mean(0), dim=0)


def directions(feats: gender.Features, images: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(G, d) as unit vectors: the images' gender direction (gender.image_gender_direction, on the
    training images or, with images="test", on the test gallery) and the captions' (caption_direction)."""
    if images not in ("train", "test"):
        raise ValueError(f"images must be 'train' or 'test', got {images!r}")
    f = (
        feats
        if images == "train"
        else dataclasses.replace(feats, train_images=feats.gallery, train_labels=feats.gallery_labels)
    )
    return gender.image_gender_direction(f).double(), caption_direction(feats.pref_texts)


def alignment(feats: gender.Features, images: str = "train") -> float:
    """cos(G, d): how parallel the captions' gender direction is to the images'."""
    g, d = directions(feats, images)
    return float(g @ d)


def alignment_by_wording(bundle: ClipBundle, feats: gender.Features, wordings: Iterable[str] = OTHER_WORDINGS) -> dict:
    """cos(G, d) on the test gallery with d from the track's own captions and from each of `wordings`
    ("{gender}" and "{activity}" filled in, in reversal_task's order)."""
    g, _ = directions(feats, "test")
    out = {"track": alignment(feats, "test")}
    for w in wordings:
        texts = [w.format(gender=x, activity=a) for a in feats.activities for x in feats.genders]
        out[w] = float(g @ caption_direction(encode_texts(bundle, texts)))
    return out


def lean_along_captions(feats: gender.Features, projection: SharedProjection | None, t: float) -> dict:
    """Each prompt's lean numerator on the test gallery, split along the captions' direction d_hat:
    {prompt: {"beta", "caption_term", "rest_term", "numerator"}}, with y = beta d_hat + q and
    numerator = G_a^T M_t y = beta G_a^T M_t d_hat (caption_term) + G_a^T M_t q (rest_term)."""
    _, d = directions(feats)
    y = F.normalize(feats.prompt_texts.double(), dim=-1)
    m = gender.metric(projection, t, d.numel())
    out = {}
    for j, (a, g_a) in enumerate(gender.activity_gaps(feats).items()):
        beta = y[j] @ d
        q = y[j] - beta * d
        out[a] = {
            "beta": beta.item(),
            "caption_term": (beta * (g_a @ m @ d)).item(),
            "rest_term": (g_a @ m @ q).item(),
            "numerator": (g_a @ m @ y[j]).item(),
        }
    return out


def features(
    alignment: float,
    *,
    dim: int = 128,
    n_train_per_cell: int = 30,
    n_gallery_per_cell: int = 20,
    prompts_on_captions: float = 1.0,
    gap: float = 1.0,
    activity: float = 1.0,
    image_gender: float = 0.35,
    caption_gender: float = 0.12,
    prompt_gender: float = 0.05,
    noise: float = 0.35,
    logit_scale: float = 100.0,
    seed: int = 0,
) -> gender.Features:
    """A synthetic gender world (gender.Features) whose captions' gender direction d makes the cosine
    `alignment` with the images' gender direction G.

    Orthonormal directions: a mean per modality (`gap` apart: images and captions sit in separate
    cones, as in a real CLIP), one per activity, G, and u, which no image varies along. An image of
    gender s = +-1 doing a is m_img + activity * e_a + image_gender * s G + noise (the noise in the
    images' own subspace); a gender caption is m_txt + activity * e_a + caption_gender * s d / c with
    d = c G + sqrt(1 - c^2) u, c = alignment, so its component along G is the same at every c; a
    neutral prompt is m_txt + activity * e_a + prompt_gender * lean_a * (share * d / c + (1 - share) G),
    with share = prompts_on_captions: 1 puts the prompt's whole lean in the captions' geometry (as a
    real CLIP's text does), 0 puts it along G only (a probe: retrieval does not follow it).
    Its lean on the images at t = 0 is the same for every c and share."""
    if not 0 < alignment <= 1:
        raise ValueError(f"alignment is a cosine in (0, 1], got {alignment}")
    if not 0 <= prompts_on_captions <= 1:
        raise ValueError(f"prompts_on_captions is a share in [0, 1], got {prompts_on_captions}")
    acts = list(LEANS)
    n_fixed = 4 + len(acts)
    if dim < n_fixed + 8:
        raise ValueError(f"dim must be at least {n_fixed + 8}")
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    m_img, m_txt, g, u = basis[:, 0], basis[:, 1], basis[:, 2], basis[:, 3]
    e = basis[:, 4 : 4 + len(acts)].T  # (A, dim)
    free = basis[:, n_fixed:]  # what the images' noise varies along: never u
    c = alignment
    d = c * g + math.sqrt(max(0.0, 1 - c * c)) * u
    m_img, m_txt = m_img * gap, m_txt * gap

    def people(n, tag):
        g2 = torch.Generator().manual_seed(seed * 1_000_003 + tag)
        rows, labels = [], []
        for a_i, a in enumerate(acts):
            for sign, name in ((1.0, "man"), (-1.0, "woman")):
                eps = torch.randn(n, free.shape[1] + len(acts) + 1, generator=g2, dtype=torch.float64)
                jitter = eps[:, : free.shape[1]] @ free.T + eps[:, free.shape[1] :] @ torch.cat([e, g[None]])
                x = m_img + activity * e[a_i] + image_gender * sign * g + noise * jitter / math.sqrt(eps.shape[1])
                rows.append(x)
                labels += [(name, a)] * n
        return F.normalize(torch.cat(rows), dim=-1).float(), labels

    train, train_labels = people(n_train_per_cell, 1)
    gallery_, gallery_labels = people(n_gallery_per_cell, 2)
    val, val_labels = people(n_gallery_per_cell, 3)
    captions = torch.stack(
        [m_txt + activity * e[i] + caption_gender * s * d / c for i in range(len(acts)) for s in (1.0, -1.0)]
    )
    reg = m_txt + activity * e
    share = prompts_on_captions
    prompts = torch.stack(
        [
            m_txt + activity * e[i] + prompt_gender * LEANS[a] * (share * d / c + (1 - share) * g)
            for i, a in enumerate(acts)
        ]
    )
    task = reversal_task(train_labels, ["man", "woman"], acts)
    unit = lambda z: F.normalize(z, dim=-1).float()
    return gender.Features(
        ["man", "woman"],
        acts,
        train,
        train_labels,
        unit(captions),
        unit(reg),
        task.y_w,
        task.y_l,
        gallery_,
        gallery_labels,
        [gender.RETRIEVAL_TEMPLATE.format(activity=a) for a in acts],
        unit(prompts),
        logit_scale,
        [a for a, lean in LEANS.items() if lean != 0],
        val,
        val_labels,
        {"task": "gender", "world": "synthetic", "alignment": alignment, "seed": seed, "share": share},
    )


def phase_point(feats: gender.Features, method: str = "dpo", seed: int = 0, **overrides) -> dict:
    """Train the paper's reversal (`method` with the gender track's DEFAULTS) on `feats` and measure
    what the phase diagram plots: the Fig. 3 crossing in t in [0, 2], understanding at t = 0 and 1,
    the first t of the grid where G^T M_t d < 0 (reversed_at; never before crossing_floor, the bound),
    the flips at t = 1 per direction (prompts that had a man or a woman majority at t = 0), the
    balanced prompts and the summed NDKL at t* (chosen on the validation gallery), and W's spectrum."""
    W, _ = gender.train(feats, gender.train_config(method, seed=seed, **overrides), progress=False)
    ts = [round(0.05 * i, 2) for i in range(41)]
    curve = gender.understanding(feats, W, ts)
    at = {c["t"]: c["gender/understanding"] for c in curve}
    result = gender.evaluate(feats, W)
    t0, t1 = result["t0"]["prompts"], result["t1"]["prompts"]
    man, woman = feats.genders
    led_by = lambda who: [a for a, r in t0.items() if r["retrieval/top_k"][who] > result["t0"]["k"] / 2]
    stats = spectrum(W)
    g, d = directions(feats)
    numerator = lambda t: float(g @ gender.metric(W, t, g.numel()) @ d)
    reversed_at = next((t for t in ts if numerator(t) < 0), None)
    return {
        "alignment": alignment(feats),
        "method": method,
        "seed": seed,
        "understanding/t0": at[0.0],
        "understanding/t1": at[1.0],
        "understanding/crossing": gender.crossing(curve),
        "flipped/man_majority": sum(t1[a]["retrieval/flipped"] for a in led_by(man)),
        "flipped/woman_majority": sum(t1[a]["retrieval/flipped"] for a in led_by(woman)),
        "had_majority/man": len(led_by(man)),
        "had_majority/woman": len(led_by(woman)),
        "t_star": result["t_star"],
        "t_star/balanced": result["t_star_metrics"]["retrieval/balanced_prompts"],
        "t_star/ndkl_sum": result["t_star_metrics"]["retrieval/ndkl_sum"],
        "t0/ndkl_sum": result["t0"]["retrieval/ndkl_sum"],
        "w/s_min": stats["w/s_min"],
        "w/s_max": stats["w/s_max"],
        "w/within_target": within_target(stats),
        "reversed_at": reversed_at,
        "crossing_floor": crossing_floor(min(alignment(feats), 0.999), stats["w/s_min"], stats["w/s_max"]),
    }


def phase_diagram(
    alignments: Iterable[float],
    methods: Collection[str] = ("dpo", "ipo", "kto"),
    seeds: Collection[int] = (0,),
    progress: Callable[[dict], object] | None = None,
    **world: Any,
) -> list[dict]:
    """phase_point for every alignment x method x training seed, on `features(alignment, **world)`."""
    rows = []
    for c in alignments:
        feats = features(c, **world)
        for m in methods:
            for s in seeds:
                rows.append(phase_point(feats, m, s))
                if progress:
                    progress(rows[-1])
    return rows
