"""The shared linear transformation W and its SVD scaling W_t = U S^t V^T (docs/method.md section 3).

One matrix W is applied to both image and text embeddings and the results are re-normalised:
    s_W(y, x) = <W x, W y> / (||W x|| ||W y||).
With W = U S V^T, scaling the singular values by an exponent t interpolates and extrapolates what
W learned: t = 0 gives U V^T, an orthogonal map that leaves every cosine unchanged (the original
model), t = 1 gives W, t > 1 amplifies, t < 0 reverses. Because U is orthogonal,
    <W_t x, W_t y> = sum_i S_i^(2t) (V^T x)_i (V^T y)_i,
so once V^T x and V^T y are cached every t costs one weighted matrix product (SpectralScorer).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ._version import __version__
from .io import save_tensors

FORMAT = "clipaln.SharedProjection"


def exponents(t: float | Sequence[float] | torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """t as a float64 tensor: a finite number, or (given dim) a vector of dim exponents, one per
    singular direction; one ValueError for anything else (a string, None, a bool, a wrong shape)."""
    if isinstance(t, (bool, str)) or t is None:
        raise ValueError(f"t must be a finite number (or a vector of them), got {t!r}")
    try:
        t = torch.as_tensor(t, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"t must be a finite number (or a vector of them), got {t!r}") from None
    if not torch.isfinite(t).all():
        raise ValueError(f"t must be finite, got {t.tolist()}")
    if t.ndim > 1 or (t.ndim == 1 and t.numel() != dim):
        wanted = "a scalar" if dim is None else f"a scalar or a vector of {dim} exponents"
        raise ValueError(f"t must be {wanted}, got shape {tuple(t.shape)}")
    return t


class SharedProjection(nn.Module):
    """W, the shared projection both towers' embeddings pass through: maps (..., dim) embeddings to
    W e, re-normalised. ``scaled(t)`` gives W_t = U S^t V^T, also kept in float64 (``.exact``): at
    large |t| the spread of S^t is beyond float32's seven digits. ``.weight`` stays float32, the
    parameter a W trains.

    Args:
        dim: the embedding size d.
        weight: (d, d) floating-point initial W; None starts at the identity (W_0, the original model).
    """

    def __init__(self, dim: int, weight: torch.Tensor | None = None):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ValueError(f"projection dim must be an integer, got {dim!r}")
        if dim < 1:
            raise ValueError(f"projection dim must be >= 1, got {dim}")
        if weight is not None and not isinstance(weight, torch.Tensor):
            raise ValueError(f"weight must be a torch tensor, not {type(weight).__name__} (torch.from_numpy converts)")
        if weight is not None and not weight.is_floating_point():
            raise ValueError(f"weight must be floating point, got {weight.dtype}")
        w = torch.eye(dim) if weight is None else weight.detach().clone().float()
        if w.shape != (dim, dim):
            raise ValueError(f"weight must be {dim}x{dim}, got {tuple(w.shape)}")
        self.weight = nn.Parameter(w)
        self.register_buffer("exact", None, persistent=False)  # W_t in float64, set by scaled()
        self.metadata: dict[str, str] = {}

    @property
    def dim(self) -> int:
        return self.weight.shape[0]

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        if emb.shape[-1] != self.dim:
            raise ValueError(f"embeddings of size {emb.shape[-1]} do not match the projection size {self.dim}")
        w = self.exact if self.exact is not None else self.weight
        x = emb.to(w.dtype) if w.dtype == torch.float64 else emb
        return F.normalize(x @ w.to(x.dtype).T, dim=-1).to(emb.dtype)  # (..., dim): re-normalised W e

    def extra_repr(self) -> str:
        if self.weight.is_meta or not torch.isfinite(self.weight).all():  # a diverged W prints, too
            return f"dim={self.dim}, not finite" if not self.weight.is_meta else f"dim={self.dim}, on the meta device"
        s = self.svd()[1]
        return f"dim={self.dim}, singular values {float(s.min()):.3g} to {float(s.max()):.3g}"

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """U, S, V^T of W, computed in float64 (once per value of W: a step of training recomputes it)."""
        w = self.weight
        seen = getattr(self, "_svd_of", None)  # (the parameter itself, its version, where its data lives)
        if seen is None or seen[0] is not w or seen[1:] != (w._version, w.data_ptr(), w.device):
            self._svd = torch.linalg.svd(w.detach().double())
            self._svd_of = (w, w._version, w.data_ptr(), w.device)  # a tuple: not registered as a parameter
        return self._svd

    def scaled(self, t: float | Sequence[float] | torch.Tensor) -> SharedProjection:
        """W_t = U S^t V^T, formed in float64.

        Args:
            t: a scalar, or a (d,) vector with one exponent per singular direction (descending order).

        Returns:
            SharedProjection: W_t, frozen, with ``.exact`` in float64 and this W's metadata.
        """
        t = exponents(t, self.dim)
        u, s, vh = self.svd()
        w_t = u @ torch.diag(s.clamp_min(1e-12) ** t) @ vh
        if not torch.isfinite(w_t).all():
            raise ValueError(
                f"W_t is not finite at t = {t.tolist()}: W's singular values span "
                f"{float(s.min()):.3g} to {float(s.max()):.3g}; use a smaller |t|"
            )
        out = SharedProjection(self.dim, w_t.float())
        out.exact = w_t.to(self.weight.device)
        out.weight.requires_grad_(False)
        out.metadata = dict(self.metadata)
        return out

    # --- files: safetensors only, metadata in the header ------------------------------------
    def save(self, path: str | Path, **metadata) -> Path:
        """Write W to a safetensors file, atomically.

        Args:
            path: the file to write.
            **metadata: header entries, stored as strings beside the format, size and clipaln's version.

        Returns:
            Path: the file written.
        """
        meta = {**self.metadata, **metadata, "format": FORMAT, "dim": self.dim, "clipaln_version": __version__}
        return save_tensors(path, {"weight": self.weight.float()}, meta)

    @classmethod
    def load(cls, path: str | Path, dim: int | None = None) -> SharedProjection:
        """Read a projection written by ``save`` (never unpickling); other files are refused in one line.

        Args:
            path: a projection.safetensors file.
            dim: the model's embedding size, checked against the file's (None: not checked).

        Returns:
            SharedProjection: W, with the file's header in ``.metadata``.
        """
        path = Path(path)
        if path.is_dir() and (path / "projection.safetensors").is_file():  # a run folder: its W
            raise FileNotFoundError(f"{path} is a folder: its W is {path / 'projection.safetensors'}")
        if not path.is_file():
            raise FileNotFoundError(f"projection file not found: {path}")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{path} is not a safetensors projection file ({e}); clipaln never unpickles files"
            ) from None
        if meta.get("format") != FORMAT or set(tensors) != {"weight"}:
            raise ValueError(f"{path} is a safetensors file but not a clipaln projection")
        w = tensors["weight"]
        if w.ndim != 2 or w.shape[0] != w.shape[1] or str(w.shape[0]) != meta.get("dim"):
            raise ValueError(f"{path}: weight of shape {tuple(w.shape)} does not match its header")
        if not torch.isfinite(w).all():
            raise ValueError(f"{path}: weight contains NaN or inf")
        if dim is not None and w.shape[0] != dim:
            raise ValueError(f"{path}: projection size {w.shape[0]} does not match the model's embedding size {dim}")
        out = cls(w.shape[0], w)
        out.metadata = {k: v for k, v in meta.items() if k not in ("format", "dim")}
        return out


def orthogonality_gap(weight: torch.Tensor) -> torch.Tensor:
    """||W^T W - I||_F / ||I||_F = ||W^T W - I||_F / sqrt(d): 0 for an orthogonal W, differentiable.
    The paper says of its trained W that "W^T W remains close to the identity matrix" (Sec. 3.4)."""
    eye = torch.eye(weight.shape[-1], dtype=weight.dtype, device=weight.device)
    return torch.linalg.matrix_norm(weight.T @ weight - eye) / weight.shape[-1] ** 0.5


def spectrum(projection: SharedProjection | None) -> dict:
    """How far W is from orthogonal: w/orthogonality_gap (||W^T W - I||_F / sqrt(d)) and its smallest and
    largest singular values, w/s_min and w/s_max (the base model, projection None: 0, 1, 1)."""
    if projection is None:
        return {"w/orthogonality_gap": 0.0, "w/s_min": 1.0, "w/s_max": 1.0}
    w = projection.weight.detach().double()
    s = torch.linalg.svdvals(w)
    return {"w/orthogonality_gap": orthogonality_gap(w).item(), "w/s_min": s.min().item(), "w/s_max": s.max().item()}


#: The target for a trained W (docs/toy-world.md, "The trained W"), written before any dial was read:
#: close to orthogonal, as the paper says of its W, so that S^t over Fig. 2's t in [-2, 1.2] stays gentle.
MAX_GAP = 0.5
S_RANGE = (0.5, 2.0)


def within_target(stats: dict, max_gap: float = MAX_GAP, s_range: tuple[float, float] = S_RANGE) -> bool:
    """Whether spectrum() `stats` meet the target: gap at most max_gap, every singular value in s_range."""
    return stats["w/orthogonality_gap"] <= max_gap and s_range[0] <= stats["w/s_min"] and stats["w/s_max"] <= s_range[1]


class SpectralScorer:
    """All image-class cosines under W_t for any t, from cached V^T x and V^T y:

        scores(t)[n, k] = sum_i S_i^(2t) a_ni b_ki / (||S^t a_n|| ||S^t b_k||),   a = V^T x,  b = V^T y.

    The weights S^(2t) are scaled to a largest of 1. For classification, where the smallest weight
    is still above FLOAT32_FLOOR, the (N, d) x (d, K) product runs in float32: every image gets the
    class float64 gives it over t in [-3, 3] (tests/test_projection.py). A wider spread runs in
    float64, as W_t is formed in eval; so does ``retrieval=True``, where scores rank images against
    each other and near-identical gallery images tie to the 7th digit. Scores are float64 either way.

    Args:
        projection: W (its SVD is taken once).
        image_emb: (N, d) image embeddings.
        text_emb: (K, d) text embeddings.
        retrieval: rank images against each other (float64 always) rather than classify each image.
    """

    #: The smallest scaled weight S_i^(2t) / max_j S_j^(2t) that the float32 product is given.
    FLOAT32_FLOOR = 1e-6
    #: Images per block of classify's float32 product: a block's (BLOCK, K) scores stay in cache for their argmax.
    BLOCK = 1024

    def __init__(
        self, projection: SharedProjection, image_emb: torch.Tensor, text_emb: torch.Tensor, retrieval: bool = False
    ):
        for name, x in (("image", image_emb), ("text", text_emb)):
            if x.ndim != 2 or x.shape[-1] != projection.dim:
                raise ValueError(f"{name} embeddings must be (n, {projection.dim}), got {tuple(x.shape)}")
        _, s, vh = projection.svd()
        self.log_s = s.clamp_min(1e-12).log()  # (d,), float64 like W_t in eval: the three paths agree at any t
        v = vh.T
        self.a = image_emb.detach().double() @ v  # (N, d)
        self.b = text_emb.detach().double() @ v  # (K, d)
        self.a2, self.b2 = self.a.square(), self.b.square()
        self.a32, self.a2_32 = self.a.float(), self.a2.float()
        self.floor = 2.0 if retrieval else self.FLOAT32_FLOOR  # above every scaled weight: float64 always

    def scores(self, t: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Cosines under W_t.

        Args:
            t: a scalar, or a (d,) vector of exponents, one per singular direction.

        Returns:
            torch.Tensor: (N, K) float64 cosines.
        """
        w, bw, in_float32 = self._weighted_texts(t)
        if in_float32:
            na = (self.a2_32 @ w.float()).clamp_min(1e-30).sqrt()  # (N,)
            return (self.a32 @ bw.float().T).div_(na[:, None]).double()  # (N, K)
        na = (self.a2 @ w).clamp_min(1e-30).sqrt()  # (N,)
        return (self.a @ bw.T).div_(na[:, None])  # (N, K)

    def classify(self, t: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
        """The class each image gets under W_t: ``scores(t).argmax(-1)`` without dividing by the
        images' norms, which scale a row and so change no argmax over classes (the slider's update).

        Args:
            t: a scalar, or a (d,) vector of exponents, one per singular direction.

        Returns:
            torch.Tensor: (N,) long class indices.
        """
        _, bw, in_float32 = self._weighted_texts(t)
        if not in_float32:
            return (self.a @ bw.T).argmax(-1)
        texts = bw.float().T  # (d, K)
        n, like = len(self.a32), dict(dtype=self.a32.dtype, device=self.a32.device)
        labels, best = torch.empty(n, dtype=torch.long, device=self.a32.device), torch.empty(n, **like)
        block = torch.empty(min(self.BLOCK, n), texts.shape[1], **like)  # this call's own: threads may share a scorer
        for rows, row_labels, row_best in zip(*(x.split(self.BLOCK) for x in (self.a32, labels, best))):
            scores = torch.mm(rows, texts, out=block[: len(rows)])
            torch.max(scores, -1, out=(row_best, row_labels))  # the first of equal maxima, as argmax
        return labels

    def _weighted_texts(self, t) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """S^(2t) scaled to a largest of 1 (d,), the texts weighted by it and normalised (K, d), and
        whether the float32 product may be used."""
        t = exponents(t, len(self.log_s))
        e = 2 * t * self.log_s
        w = torch.exp(e - e.max())  # S^(2t) up to a constant factor, which no cosine sees: never overflows
        nb = (self.b2 @ w).clamp_min(1e-30).sqrt()  # (K,)
        bw = self.b * (w / nb[:, None])  # (K, d): scale the small side, never the (N, d) one
        return w, bw, bool(w.min() >= self.floor)  # no weight underflows, and a sum of squares cancels nothing


def naive_scores(
    projection: SharedProjection,
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    t: float | Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """The same cosines by forming W_t explicitly (the reference the spectral scorer must match)."""
    p = projection.scaled(t)
    return p(image_emb.double()) @ p(text_emb.double()).T  # float64, as W_t is
