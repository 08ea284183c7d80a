"""A small synthetic feature problem with known ground truth, for tests and notebook 01, and
synthetic photo-sized images for benchmarks.

Embeddings have an "object" block and a "reading" block. A caption for class k carries its code
u_k in both blocks (the word "apple" means both how an apple looks and how it is spelled). A clean
image of class c is [u_c, 0]; an attacked image with word w written on it is [u_c, gamma * u_w],
with gamma > 1, so the frozen model prefers the written word. A W that turns the reading block
down fixes the attack: the direction that separates y_w from y_l is known.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from .policy import PreferenceData


def typographic_features(
    n: int = 512,
    k: int = 8,
    block: int = 16,
    gamma: float = 1.6,
    noise: float = 0.15,
    logit_scale: float = 30.0,
    seed: int = 0,
) -> PreferenceData:
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(k, block, generator=g), dim=-1)  # (K, b) class codes
    texts = F.normalize(torch.cat([u, u], dim=-1), dim=-1)  # (K, 2b)
    y = torch.randint(0, k, (n,), generator=g)
    w = (y + torch.randint(1, k, (n,), generator=g)) % k  # a written word != the true class
    obj = u[y] + noise * torch.randn(n, block, generator=g)
    read = gamma * u[w] + noise * torch.randn(n, block, generator=g)
    attacked = F.normalize(torch.cat([obj, read], dim=-1), dim=-1)
    clean_y = torch.randint(0, k, (n,), generator=g)
    clean = torch.cat(
        [u[clean_y] + noise * torch.randn(n, block, generator=g), noise * torch.randn(n, block, generator=g)], dim=-1
    )
    return PreferenceData(attacked, y, w, texts, F.normalize(clean, dim=-1), logit_scale)


class SyntheticPhotos:
    """n deterministic photo-sized images (smooth random colour fields, `size` px), classes in turn:
    (PIL image, label). For timing and memory benchmarks, where what the images show does not matter."""

    def __init__(self, n: int, num_classes: int, size: int = 224, seed: int = 0):
        self.n, self.num_classes, self.size, self.seed = n, num_classes, size, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        small = (torch.rand(8, 8, 3, generator=g) * 255).to(torch.uint8).numpy()
        image = Image.fromarray(small).resize((self.size, self.size), Image.BICUBIC)
        return image, i % self.num_classes
