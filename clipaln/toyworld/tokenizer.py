"""A word-level tokenizer for the toy CLIP.

The toy world speaks a small language, so a word vocabulary replaces CLIP's 49k-entry BPE and
keeps the shipped weights small. It follows the open_clip tokenizer interface: called on a string
or a list of strings it returns a (N, context_length) LongTensor, start token first, end token
last; the end token has the largest id, so open_clip's default 'argmax' text pooling finds it.
Words outside the vocabulary map to <unk>.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

PAD, UNK, SOT, EOT = "<pad>", "<unk>", "<sot>", "<eot>"
_WORD = re.compile(r"[a-z0-9']+")


class WordTokenizer:
    def __init__(self, words: Sequence[str], context_length: int = 16):
        words = [w for w in dict.fromkeys(words) if w not in (PAD, UNK, SOT, EOT)]
        self.vocab = [PAD, UNK, *words, SOT, EOT]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.context_length = context_length

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def encode(self, text: str) -> list[int]:
        unk = self.index[UNK]
        return [self.index.get(w, unk) for w in self.split(text)]

    def __call__(self, texts: str | Iterable[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        n = context_length or self.context_length
        texts = list(texts)
        out = torch.zeros(len(texts), n, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.index[SOT], *self.encode(t)][: n - 1] + [self.index[EOT]]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if self.vocab[i] not in (PAD, SOT, EOT))
