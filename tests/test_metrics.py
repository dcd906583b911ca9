"""Caption metrics against values worked out by hand: nltk BLEU, CIDEr-D and ROUGE-L."""
import math

import pytest

from captioning.evaluation.coco import coco_scores
from captioning.evaluation.metrics import bleu, cider

CAT = "the cat sat on the mat".split()
REF = "the cat is on the mat".split()


def test_bleu_clipped_ngram_precisions():
    # Matches: unigrams 5/6 (the x2, cat, on, mat), bigrams 3/5 (the cat, on the, the mat),
    # trigrams 1/4 (on the mat), 4-grams 0/3; equal lengths, so no brevity penalty.
    scores = bleu([CAT], [[REF]])
    assert scores["BLEU-1"] == pytest.approx(100 * 5 / 6)
    assert scores["BLEU-2"] == pytest.approx(100 * math.sqrt(5 / 6 * 3 / 5))
    assert scores["BLEU-3"] == pytest.approx(50.0)  # (5/6 * 3/5 * 1/4) ** (1/3) = 0.125 ** (1/3)
    assert scores["BLEU-4"] == pytest.approx(0.0, abs=1e-9)  # no smoothing: an order with no match zeroes it


def test_bleu_pools_counts_over_the_corpus_and_uses_the_closest_reference_length():
    # Second sentence: "the cat" against ["the cat sat on the mat", "a cat"]: closest length 2, no penalty.
    scores = bleu([CAT, ["the", "cat"]], [[REF], ["the cat sat on the mat".split(), ["a", "cat"]]])
    assert scores["BLEU-1"] == pytest.approx(100 * 7 / 8)  # (5 + 2) / (6 + 2), not the mean of 5/6 and 1
    assert scores["BLEU-2"] == pytest.approx(100 * math.sqrt(7 / 8 * 4 / 6))


def test_bleu_brevity_penalty():
    scores = bleu([["the", "cat"]], [[CAT]])
    assert scores["BLEU-1"] == pytest.approx(100 * math.exp(1 - 6 / 2))


def test_cider_d_worked_example():
    # Two images, so an n-gram found in one image's references has idf log(2/1) = L.
    # Image 2 ("c d" vs "c d"): cosine 1 for unigrams and bigrams, no 3/4-grams -> 10 * (1 + 1 + 0 + 0) / 4 = 5.
    # Image 1 ("a b b" vs "a b"): unigram vectors (L, 2L) vs (L, L), clipped dot 2L^2 -> 2 / sqrt(10);
    # bigrams {ab, bb} vs {ab} -> 1 / sqrt(2); length difference 1 -> penalty exp(-1 / (2 * 6^2)).
    image_1 = 10 / 4 * math.exp(-1 / 72) * (2 / math.sqrt(10) + 1 / math.sqrt(2))
    expected = 100 * (image_1 + 5.0) / 2
    assert cider([["a", "b", "b"], ["c", "d"]], [[["a", "b"]], [["c", "d"]]]) == pytest.approx(expected)
    scores = coco_scores({1: ["a b"], 2: ["c d"]}, {1: "a b b", 2: "c d"}, java=None)
    assert scores.metrics["CIDEr"] == pytest.approx(expected)
    assert scores.per_image["CIDEr"] == pytest.approx([100 * image_1, 500.0])


def test_rouge_l_takes_best_precision_and_best_recall_over_references():
    # "a b c d" vs "a c d e f": LCS 3 -> P 3/4, R 3/5; vs "a b": LCS 2 -> P 1/2, R 1.
    # COCO's ROUGE-L maximises P and R separately: P 3/4, R 1, then F with beta 1.2.
    precision, recall, beta2 = 3 / 4, 1.0, 1.2 ** 2
    expected = 100 * (1 + beta2) * precision * recall / (recall + beta2 * precision)
    scores = coco_scores({7: ["a c d e f", "a b"], 8: ["x y"]}, {7: "a b c d", 8: "z"}, java=None)
    assert scores.per_image["ROUGE-L"] == pytest.approx([expected, 0.0])
    assert scores.metrics["ROUGE-L"] == pytest.approx(expected / 2)
