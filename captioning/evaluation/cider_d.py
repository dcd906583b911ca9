"""CIDEr-D as a reward: document frequencies fixed once from a corpus, reference vectors cached, fast per caption.

The arithmetic is coco-caption's CIDEr-D (pycocoevalcap `CiderScorer`): n-grams 1..4 weighted by
tf x (log(#images) - log(max(1, df))), per-n cosine with the candidate's counts clipped by the reference's, a
Gaussian penalty exp(-delta^2 / (2 sigma^2)) on the difference in bigram counts (coco-caption's length), the
mean over n and over references, x10. pycocoevalcap recomputes the document frequencies from whatever it scores;
self-critical training needs them fixed: `CiderD(train_references)` computes them once, `state()` and
`from_state()` keep them with the run, and each image's reference vectors are computed once, on first use.
Captions are sequences of any hashable tokens (words, or vocabulary ids).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Sequence

import numpy as np

Caption = Sequence[Hashable]
Vector = tuple[list[dict[tuple, float]], np.ndarray, int]  # per-n {ngram: weight}, per-n norms, bigram count


def ngram_counts(caption: Caption, n: int = 4) -> Counter:
    tokens = tuple(caption)
    return Counter(tokens[i:i + k] for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


class CiderD:
    def __init__(self, references: Sequence[Sequence[Caption]] | None = None, n: int = 4, sigma: float = 6.0):
        """`references[i]`: the reference captions of image i of the corpus the frequencies come from."""
        self.n, self.sigma = n, float(sigma)
        self.document_frequency: Counter = Counter()
        for refs in references or ():
            self.document_frequency.update({gram for ref in refs for gram in ngram_counts(ref, n)})
        self.images = len(references or ())
        self._references: dict[Hashable, list[Vector]] = {}

    # ------------------------------------------------------------------ kept with the run

    def state(self) -> dict:
        """Plain data (JSON-able): n, sigma, the image count and the frequencies with n-grams as token lists."""
        return {"n": self.n, "sigma": self.sigma, "images": self.images,
                "document_frequency": [[list(gram), count] for gram, count in self.document_frequency.items()]}

    @classmethod
    def from_state(cls, state: dict, where: str = "cider_d") -> "CiderD":
        """Rebuild from `state()` as read from a file: every field is checked, and named when wrong."""
        def whole(key: str, low: int) -> int:
            value = state.get(key) if isinstance(state, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{where}.{key}: expected an integer >= {low}, found {value!r}")
            return value

        n, images = whole("n", 1), whole("images", 1)
        sigma = state.get("sigma")
        if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma > 0:
            raise ValueError(f"{where}.sigma: expected a positive number, found {sigma!r}")
        table = state.get("document_frequency")
        if not isinstance(table, list) or not all(
                isinstance(row, list) and len(row) == 2 and isinstance(row[0], list) and 1 <= len(row[0]) <= n
                and all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in row[0])
                and isinstance(row[1], int) and not isinstance(row[1], bool) and 1 <= row[1] <= images
                for row in table):
            raise ValueError(f"{where}.document_frequency: expected [[n-gram tokens], count <= images] rows")
        reward = cls(None, n, float(sigma))
        reward.images = images
        reward.document_frequency = Counter({tuple(gram): count for gram, count in table})
        return reward

    # ------------------------------------------------------------------ scoring

    def vector(self, caption: Caption) -> Vector:
        if self.images < 1:
            raise ValueError("CIDEr-D needs document frequencies from at least one image's references")
        log_images = math.log(float(self.images))
        weights: list[dict[tuple, float]] = [{} for _ in range(self.n)]
        norms = np.zeros(self.n)
        length = 0
        for gram, count in ngram_counts(caption, self.n).items():
            order = len(gram) - 1
            weight = float(count) * (log_images - math.log(max(1.0, self.document_frequency.get(gram, 0.0))))
            weights[order][gram] = weight
            norms[order] += weight * weight
            if order == 1:
                length += count
        return weights, np.sqrt(norms), length

    def reference_vectors(self, key: Hashable, references: Sequence[Caption]) -> list[Vector]:
        """The vectors of image `key`'s references, computed on first use (`key=None`: never cached)."""
        if key is not None and key in self._references:
            return self._references[key]
        vectors = [self.vector(ref) for ref in references]
        if key is not None:
            self._references[key] = vectors
        return vectors

    def score(self, caption: Caption, references: Sequence[Caption], key: Hashable = None) -> float:
        """CIDEr-D of one caption against its image's references (x10, coco-caption's scale)."""
        weights, norms, length = self.vector(caption)
        refs = self.reference_vectors(key, references)
        total = np.zeros(self.n)
        for ref_weights, ref_norms, ref_length in refs:
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * self.sigma ** 2))
            for order in range(self.n):
                ref = ref_weights[order]
                overlap = sum(min(weight, ref[gram]) * ref[gram] for gram, weight in weights[order].items()
                              if gram in ref)
                if norms[order] != 0 and ref_norms[order] != 0:
                    overlap /= norms[order] * ref_norms[order]
                total[order] += overlap * penalty
        return float(total.mean() / len(refs) * 10.0)

    def scores(self, captions: Sequence[Caption], references: Sequence[Sequence[Caption]],
               keys: Sequence[Hashable] | None = None) -> np.ndarray:
        """One score per caption; `references[i]` are caption i's image's references, `keys[i]` that image's id
        (samples of one image share its cached reference vectors)."""
        keys = keys if keys is not None else [None] * len(captions)
        return np.array([self.score(c, r, k) for c, r, k in zip(captions, references, keys, strict=True)])
