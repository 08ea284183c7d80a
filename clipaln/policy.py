"""CLIP as a one-step policy over a fixed action set of captions (docs/method.md section 1), and the
cached features of a preference task (PreferenceData).

    pi(y_k | x) = softmax_k( tau * <I(x), T(y_k)> )

with both embeddings L2-normalised and tau = exp(logit_scale). With a shared projection W,
both embeddings are projected and re-normalised first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from .features import encode_images, encode_texts, model_fingerprint
from .manifest import data_record, digest
from .models import ClipBundle
from .projection import SharedProjection

#: The smallest tau PreferenceData accepts: CLIP starts training at 1 / 0.07 = 14.3 and ends near 100;
#: a value below this is almost surely log tau (open_clip's model.logit_scale, 4.6 for tau = 100).
MIN_TAU = 7.0


def _check_embeddings(x, name: str) -> None:
    """One line for what is not a finite floating (n, d) torch tensor (None passes: an optional field)."""
    if x is None:
        return
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch tensor of embeddings, not {type(x).__name__} (torch.from_numpy converts)"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating-point embeddings, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf")


def _indices(y, name: str) -> torch.Tensor:
    """Class indices as a long tensor; floats that are not whole numbers, strings and bools are refused."""
    if isinstance(y, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of class indices, not a string")
    try:
        t = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a sequence of class indices") from None
    if t.dtype == torch.bool or not (
        t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
    ):
        raise ValueError(f"{name} must hold integer class indices, got {t.dtype}")
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"{name} must hold whole class indices, got fractions such as {t[t != t.round()][0].item()}")
    return t.long()


def read_alike(bundle: ClipBundle, chosen: Sequence[str], rejected: Sequence[str]) -> list[int]:
    """The pairs whose chosen and rejected captions the model's tokenizer turns into the same tokens
    (case, punctuation, words past the context length): the model cannot tell them apart, so
    training on them is training on noise."""
    captions = sorted(set(chosen) | set(rejected))
    tokens = {c: tuple(t.tolist()) for c, t in zip(captions, bundle.tokenizer(captions))}
    return [i for i, (c, r) in enumerate(zip(chosen, rejected)) if tokens[c] == tokens[r]]


def unknown_words(bundle: ClipBundle, texts: Sequence[str]) -> list[str]:
    """The words of `texts` outside the tokenizer's vocabulary, for a word-level tokenizer that has
    one (the toy CLIP's); [] for a BPE tokenizer, which spells any word."""
    tok = bundle.tokenizer
    if not (hasattr(tok, "split") and hasattr(tok, "index")):
        return []
    return sorted({w for t in texts for w in tok.split(t) if w not in tok.index})


def refuse_unknown_words(bundle: ClipBundle, texts: Sequence[str], what: str) -> None:
    """One ValueError when the model cannot read some of `texts`' words (every such word would be
    <unk>, and a prompt of unknown words scores as any other: numbers that look measured but are not)."""
    unknown = unknown_words(bundle, texts)
    if unknown:
        listed = ", ".join(unknown[:12]) + (" ..." if len(unknown) > 12 else "")
        raise ValueError(
            f"the {bundle.name} model cannot read {len(unknown)} word(s) of the {what}: {listed} "
            f"(its vocabulary has {len(bundle.tokenizer.index)} words); use a model that reads them, such as ViT-B-32"
        )


def similarities(
    image_emb: torch.Tensor, text_emb: torch.Tensor, projection: SharedProjection | None = None
) -> torch.Tensor:
    """Cosine similarities s(y_k, x) of every image with every text, under W when one is given.

    Args:
        image_emb: (N, d) image embeddings.
        text_emb: (K, d) text embeddings.
        projection: W or W_t (None: the original model).

    Returns:
        torch.Tensor: (N, K) cosines.
    """
    _check_embeddings(image_emb, "image embeddings")
    _check_embeddings(text_emb, "text embeddings")
    if image_emb.ndim != 2 or text_emb.ndim != 2:
        raise ValueError(
            f"expected (N, d) image and (K, d) text embeddings, got shapes "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    if image_emb.shape[-1] != text_emb.shape[-1]:
        raise ValueError(f"image embeddings have size {image_emb.shape[-1]} but text embeddings {text_emb.shape[-1]}")
    if image_emb.dtype != text_emb.dtype:
        image_emb, text_emb = image_emb.float(), text_emb.float()
    if projection is not None:
        if getattr(projection, "exact", None) is not None:
            image_emb, text_emb = image_emb.double(), text_emb.double()  # W_t at large |t|: keep its digits
        image_emb, text_emb = projection(image_emb), projection(text_emb)
    else:
        image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    return image_emb @ text_emb.T  # (N, K)


def logits(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float, projection: SharedProjection | None = None
) -> torch.Tensor:
    """tau * s(y_k, x), (N, K); `logit_scale` is tau itself (CLIP's exp(logit_scale))."""
    return logit_scale * similarities(image_emb, text_emb, projection)


def logprobs(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float, projection: SharedProjection | None = None
) -> torch.Tensor:
    """The policy: log pi(y_k | x) = log_softmax_k(tau * s(y_k, x)).

    Args:
        image_emb: (N, d) image embeddings.
        text_emb: (K, d) text embeddings of the action set.
        logit_scale: tau itself (CLIP's exp(logit_scale)).
        projection: W or W_t (None: the reference policy pi_ref).

    Returns:
        torch.Tensor: (N, K) log-probabilities.
    """
    return logits(image_emb, text_emb, logit_scale, projection).log_softmax(dim=-1)


def predict(
    image_emb: torch.Tensor, text_emb: torch.Tensor, projection: SharedProjection | None = None
) -> torch.Tensor:
    """The greedy action argmax_k pi(y_k | x), (N,)."""
    return similarities(image_emb, text_emb, projection).argmax(dim=-1)


@dataclass
class PreferenceData:
    """Cached features of one preference task (every embedding L2-normalised).

    Args:
        pref_images: (N, d) images x' of D_pref.
        y_w: (N,) index of each image's preferred action in ``texts``.
        y_l: (N,) index of its dispreferred action.
        texts: (K, d) the action set of D_pref.
        reg_images: (M, d) clean images of D_reg, where the KL term keeps the policy near pi_ref.
        logit_scale: tau.
        reg_texts: (K', d) the action set of D_reg (None: ``texts``).
        record: the data's identity (manifest.data_record); a W trained on it keeps it.
    """

    pref_images: torch.Tensor  # (N, d) images x' of D_pref
    y_w: torch.Tensor  # (N,) preferred action index
    y_l: torch.Tensor  # (N,) dispreferred action index
    texts: torch.Tensor  # (K, d) action set of D_pref
    reg_images: torch.Tensor  # (M, d) clean images of D_reg
    logit_scale: float  # tau
    reg_texts: torch.Tensor | None = None  # (K', d) action set of D_reg (default: texts)
    record: dict = field(default_factory=dict)  # the data's identity (manifest.data_record); a W keeps it

    def __post_init__(self):
        self.y_w, self.y_l = _indices(self.y_w, "y_w"), _indices(self.y_l, "y_l")  # plain lists are fine
        for name in ("pref_images", "texts", "reg_images", "reg_texts"):
            _check_embeddings(getattr(self, name), name)
        if isinstance(self.logit_scale, bool) or not isinstance(self.logit_scale, (int, float)):
            raise ValueError(f"logit_scale must be a number (tau), got {self.logit_scale!r}")
        if not MIN_TAU <= self.logit_scale < math.inf:
            raise ValueError(
                f"logit_scale is tau = exp(model.logit_scale), about 100 for CLIP; {self.logit_scale:g} looks like "
                "log tau (pass model.logit_scale.exp().item(), or bundle.logit_scale)"
            )
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

    def to(self, device: str | torch.device) -> PreferenceData:
        """The same data with every tensor on `device` (itself where they are there already)."""
        device = torch.device(device)
        if self.pref_images.device == device:
            return self
        move = lambda x: None if x is None else x.to(device)
        names = ("pref_images", "y_w", "y_l", "texts", "reg_images", "reg_texts")
        return dataclasses.replace(self, **{name: move(getattr(self, name)) for name in names})

    @classmethod
    def from_captions(
        cls,
        bundle: ClipBundle,
        images: Sequence[Image.Image] | torch.Tensor,
        chosen: Sequence[str],
        rejected: Sequence[str],
        reg_images: Sequence[Image.Image] | torch.Tensor | None = None,
        progress: bool = False,
    ) -> PreferenceData:
        """A preference task from one caption pair per image, as in the preference datasets TRL reads.
        The action set is every distinct caption; D_reg is ``reg_images`` (default: the images
        themselves), whose policy the KL term keeps near the reference's.

            data = PreferenceData.from_captions(bundle, imgs, chosen=["a red apple."], rejected=["a red ball."])

        Args:
            bundle: the model (from load_clip) that encodes the images and captions.
            images: N PIL images, or (N, d) embeddings from this bundle's image encoder.
            chosen: N captions, chosen[i] preferred for image i.
            rejected: N captions, rejected[i] dispreferred for image i (never equal to chosen[i]).
            reg_images: images (or embeddings) for D_reg; None: ``images``.
            progress: show a progress bar while encoding.

        Returns:
            PreferenceData: with ``record`` naming the model and the data.
        """
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise ValueError("chosen and rejected are lists of captions, one per image, not one string")
        chosen, rejected = list(chosen), list(rejected)
        if not len(chosen) == len(rejected) == len(images):
            raise ValueError(
                f"need one chosen and one rejected caption per image: {len(images)} images, "
                f"{len(chosen)} chosen, {len(rejected)} rejected"
            )
        same = [i for i, (c, r) in enumerate(zip(chosen, rejected)) if c == r]
        if same:
            raise ValueError(f"{len(same)} pairs have chosen == rejected (first: example {same[0]})")
        refuse_unknown_words(bundle, list(chosen) + list(rejected), "captions")
        alike = read_alike(bundle, chosen, rejected)
        if alike:
            raise ValueError(
                f"{len(alike)} pairs have a chosen and a rejected caption that read the same to the model's tokenizer "
                f"(first: example {alike[0]}, {chosen[alike[0]]!r} / {rejected[alike[0]]!r})"
            )
        captions = sorted(set(chosen) | set(rejected))
        index = {c: i for i, c in enumerate(captions)}
        embed = lambda x: x if isinstance(x, torch.Tensor) else encode_images(bundle, list(x), progress=progress)
        pref = embed(images)
        # what a W fitted on these records, so that clipaln.export(W) knows its model
        key = {"captions": digest([chosen, rejected]), "n": len(chosen)}
        record = data_record(bundle.name, model_fingerprint(bundle), "pairs", key, bundle.pretrained)  # the track
        return cls(
            pref,
            [index[c] for c in chosen],
            [index[c] for c in rejected],
            encode_texts(bundle, captions),
            pref if reg_images is None else embed(reg_images),
            bundle.logit_scale,
            record=record,
        )
