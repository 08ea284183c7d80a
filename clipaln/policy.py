"""CLIP as a one-step policy over a fixed action set of captions (docs/method.md section 1), and the
cached features of a preference task (PreferenceData).

    pi(y_k | x) = softmax_k( tau * <I(x), T(y_k)> )

with both embeddings L2-normalised and tau = exp(logit_scale). With a shared projection W,
both embeddings are projected and re-normalised first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .features import encode_images, encode_texts


def similarities(image_emb: torch.Tensor, text_emb: torch.Tensor, projection=None) -> torch.Tensor:
    """Cosine similarities s(y_k, x): (N, d) images x (K, d) texts -> (N, K)."""
    if image_emb.ndim != 2 or text_emb.ndim != 2:
        raise ValueError(
            f"expected (N, d) image and (K, d) text embeddings, got shapes "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    if image_emb.shape[-1] != text_emb.shape[-1]:
        raise ValueError(f"image embeddings have size {image_emb.shape[-1]} but text embeddings {text_emb.shape[-1]}")
    if image_emb.dtype != text_emb.dtype or not image_emb.is_floating_point():
        image_emb, text_emb = image_emb.float(), text_emb.float()
    if projection is not None:
        image_emb, text_emb = projection(image_emb), projection(text_emb)
    else:
        image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    return image_emb @ text_emb.T  # (N, K)


def logits(image_emb, text_emb, logit_scale: float, projection=None) -> torch.Tensor:
    """tau * s(y_k, x), (N, K); `logit_scale` is tau itself (CLIP's exp(logit_scale))."""
    return logit_scale * similarities(image_emb, text_emb, projection)


def logprobs(image_emb, text_emb, logit_scale: float, projection=None) -> torch.Tensor:
    """log pi(y_k | x) = log_softmax_k(tau * s(y_k, x)), (N, K)."""
    return logits(image_emb, text_emb, logit_scale, projection).log_softmax(dim=-1)


def predict(image_emb, text_emb, projection=None) -> torch.Tensor:
    """The greedy action argmax_k pi(y_k | x), (N,)."""
    return similarities(image_emb, text_emb, projection).argmax(dim=-1)


@dataclass
class PreferenceData:
    """Cached features for one preference task (all embeddings L2-normalised)."""

    pref_images: torch.Tensor  # (N, d) images x' of D_pref
    y_w: torch.Tensor  # (N,) preferred action index
    y_l: torch.Tensor  # (N,) dispreferred action index
    texts: torch.Tensor  # (K, d) action set of D_pref
    reg_images: torch.Tensor  # (M, d) clean images of D_reg
    logit_scale: float  # tau
    reg_texts: torch.Tensor | None = None  # (K', d) action set of D_reg (default: texts)

    def __post_init__(self):
        self.y_w = torch.as_tensor(self.y_w, dtype=torch.long)  # plain lists are fine
        self.y_l = torch.as_tensor(self.y_l, dtype=torch.long)
        if self.pref_images.ndim != 2:
            raise ValueError(f"pref_images must be (N, d) embeddings, got shape {tuple(self.pref_images.shape)}")
        n, d = self.pref_images.shape
        if self.texts.shape[-1] != d or self.reg_images.shape[-1] != d:
            raise ValueError("image and text embeddings must have the same size")
        if len(self.y_w) != n or len(self.y_l) != n:
            raise ValueError(f"y_w and y_l need one entry per preference image ({n})")
        if n == 0 or len(self.reg_images) == 0:
            raise ValueError("D_pref and D_reg must not be empty")
        if (self.y_w == self.y_l).any():
            raise ValueError(f"{int((self.y_w == self.y_l).sum())} preference pairs have y_w == y_l")
        k = len(self.texts)
        if int(self.y_w.max()) >= k or int(self.y_l.max()) >= k or int(min(self.y_w.min(), self.y_l.min())) < 0:
            raise ValueError(f"action indices must lie in [0, {k})")

    @classmethod
    def from_captions(
        cls,
        bundle,
        images,
        chosen: Sequence[str],
        rejected: Sequence[str],
        reg_images=None,
        progress: bool = False,
    ) -> PreferenceData:
        """A preference task from one caption pair per image: images (PIL images, or (N, d) embeddings
        of this bundle's encoder), chosen[i] preferred to rejected[i] for image i, as in the preference
        datasets TRL reads. The action set is every distinct caption; D_reg is reg_images (default:
        the images themselves), whose policy the KL term keeps near the reference's.

            data = PreferenceData.from_captions(bundle, imgs, chosen=["a red apple."], rejected=["a red ball."])
        """
        chosen, rejected = list(chosen), list(rejected)
        if not len(chosen) == len(rejected) == len(images):
            raise ValueError(
                f"need one chosen and one rejected caption per image: {len(images)} images, "
                f"{len(chosen)} chosen, {len(rejected)} rejected"
            )
        same = [i for i, (c, r) in enumerate(zip(chosen, rejected)) if c == r]
        if same:
            raise ValueError(f"{len(same)} pairs have chosen == rejected (first: example {same[0]})")
        captions = sorted(set(chosen) | set(rejected))
        index = {c: i for i, c in enumerate(captions)}
        embed = lambda x: x if isinstance(x, torch.Tensor) else encode_images(bundle, list(x), progress=progress)
        pref = embed(images)
        return cls(
            pref,
            [index[c] for c in chosen],
            [index[c] for c in rejected],
            encode_texts(bundle, captions),
            pref if reg_images is None else embed(reg_images),
            bundle.logit_scale,
        )
