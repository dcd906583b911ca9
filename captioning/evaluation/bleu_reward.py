"""Sentence-level BLEU-4 as coco-caption computes it for each image (pycocoevalcap's BleuScorer, option "closest"):
the reward term `train.scst.bleu_weight` adds to CIDEr-D, as ruotianluo's bleu_reward_weight does."""
from __future__ import annotations

import math
from collections import Counter

SMALL, TINY = 1e-9, 1e-15  # coco-caption's guards: a precision with no n-grams is ~0, never a division by zero


def ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def sentence_bleu(hypothesis: list[str], references: list[list[str]], n: int = 4) -> float:
    """BLEU-n of one tokenised caption against its tokenised references, in [0, 1]: clipped n-gram precisions
    (each n-gram counted at most as often as in the reference that has it most), their geometric mean, and the
    brevity penalty against the reference length closest to the caption's (the shorter one on a tie)."""
    counts = ngram_counts(hypothesis, n)
    most: Counter = Counter()
    for reference in references:
        for gram, count in ngram_counts(reference, n).items():
            most[gram] = max(most[gram], count)
    correct = [0] * n
    for gram, count in counts.items():
        correct[len(gram) - 1] += min(count, most[gram])
    length = len(hypothesis)
    score = 1.0
    for k in range(n):
        score *= (correct[k] + TINY) / (max(length - k, 0) + SMALL)
    score **= 1.0 / n
    closest = min((abs(len(reference) - length), len(reference)) for reference in references)[1]
    ratio = (length + TINY) / (closest + SMALL)
    return score * math.exp(1 - 1 / ratio) if ratio < 1 else score
