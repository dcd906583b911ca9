"""Caption metrics on the 0-100 scale."""
from __future__ import annotations

import warnings

from nltk.translate.bleu_score import corpus_bleu
from pycocoevalcap.cider.cider_scorer import CiderScorer


def bleu(hypotheses: list[list[str]], references: list[list[list[str]]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (nltk `corpus_bleu`, uniform n-gram weights, no smoothing) on word tokens.

    hypotheses[i] is one tokenised caption; references[i] holds all tokenised references of image i.
    """
    weights = [(1.0,), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.25, 0.25, 0.25, 0.25)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns when a higher-order n-gram never matches; the score is 0 then
        scores = corpus_bleu(references, hypotheses, weights=weights)
    return {f"BLEU-{n}": 100.0 * float(score) for n, score in enumerate(scores, start=1)}


def cider(hypotheses: list[list[str]], references: list[list[list[str]]]) -> float:
    """Corpus CIDEr-D (pycocoevalcap's scorer: n=1..4, sigma=6, clipped counts) on the given word tokens, x100.

    Needs no Java, so validation can select on it; but it is not the official figure: COCO's CIDEr
    runs on PTB tokens, and the document frequencies come from the references passed here.
    """
    scorer = CiderScorer(n=4, sigma=6.0)
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        scorer += (" ".join(hypothesis), [" ".join(ref) for ref in refs])
    score, _ = scorer.compute_score()
    return 100.0 * float(score)
