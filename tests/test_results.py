"""Results files checked against annotations: missing, extra, duplicate ids and empty captions."""
import json

import pytest

from captioning.evaluation.report import format_table, score_results_file
from captioning.evaluation.results import ResultsError, match_results, read_references, read_results, write_results

REFERENCES = {i: [f"a red circle number {i}", f"one red circle {i}"] for i in range(1, 11)}


def results_for(ids, caption="a red circle"):
    return [{"image_id": i, "caption": caption} for i in ids]


def test_complete_results_are_matched_in_annotation_order():
    hypotheses, coverage = match_results(results_for(reversed(range(1, 11))), REFERENCES)
    assert list(hypotheses) == list(range(1, 11))
    assert (coverage.scored, coverage.partial, coverage.problems()) == (10, False, [])


def test_missing_ids_are_refused_with_count_and_first_ids():
    with pytest.raises(ResultsError, match=r"does not cover.*3 annotated images have no result: 8, 9, 10.*allow_partial"):
        match_results(results_for(range(1, 8)), REFERENCES)


def test_extra_ids_are_refused_and_a_type_mismatch_is_pointed_out():
    with pytest.raises(ResultsError, match=r"2 results name images absent from the annotations: 11, 12"):
        match_results(results_for(range(1, 13)), REFERENCES)
    with pytest.raises(ResultsError, match="differ only in type"):
        match_results(results_for([str(i) for i in range(1, 11)]), REFERENCES, allow_partial=True)


def test_duplicates_are_refused_even_with_allow_partial():
    with pytest.raises(ResultsError, match=r"2 images have more than one result: 2, 5"):
        match_results(results_for([1, 2, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10]), REFERENCES, allow_partial=True)


def test_allow_partial_scores_the_covered_subset_and_says_so():
    hypotheses, coverage = match_results(results_for([*range(1, 6), 99]), REFERENCES, allow_partial=True)
    assert list(hypotheses) == [1, 2, 3, 4, 5]
    assert coverage.partial and coverage.scored == 5
    assert coverage.to_json()["missing"] == {"count": 5, "first": [6, 7, 8, 9, 10]}
    assert coverage.to_json()["extra"] == {"count": 1, "first": [99]}


def test_empty_captions_are_reported_and_scored_as_given():
    results = results_for(range(1, 11))
    results[3]["caption"] = "  "
    hypotheses, coverage = match_results(results, REFERENCES)
    assert coverage.empty == [4] and hypotheses[4] == "  "
    assert coverage.problems() == ["1 results have an empty caption: 4"]


@pytest.mark.parametrize("content, message", [
    ({"image_id": 1, "caption": "x"}, "expected a JSON list"),
    ([{"image_id": 1}], "item 0 is not an object with 'image_id' and 'caption'"),
    ([{"image_id": 1, "caption": "x"}, {"image_id": [2], "caption": "y"}], "item 1 has image_id"),
    ([{"image_id": 1, "caption": None}], "non-string caption"),
])
def test_malformed_results_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ResultsError, match=message):
        read_results(path)


def test_string_ids_round_trip_unchanged(tmp_path):
    captions = {"1000268201_693b08cb0e.jpg": "a child on stairs", "10.jpg": "a dog"}
    assert read_results(write_results(captions, tmp_path / "results.json")) == [
        {"image_id": key, "caption": caption} for key, caption in captions.items()]


def write_annotations(path, references):
    images = [{"id": key, "file_name": f"{key}.jpg"} for key in references]
    annotations = [{"id": n, "image_id": key, "caption": c}
                   for n, (key, c) in enumerate(((k, c) for k, v in references.items() for c in v), start=1)]
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_partial_scores_are_written_as_partial(tmp_path):
    annotations = write_annotations(tmp_path / "captions.json", REFERENCES)
    assert read_references(annotations) == REFERENCES
    results = tmp_path / "results.json"
    results.write_text(json.dumps(results_for(range(1, 5))))
    with pytest.raises(ResultsError, match="6 annotated images have no result"):
        score_results_file(results, annotations, tmp_path / "out", java=None)
    report = score_results_file(results, annotations, tmp_path / "out", allow_partial=True, java=None)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["coverage"]["partial"] and written["data"]["images"] == 4
    assert written["metrics"] == report["metrics"] and written["metrics"]["BLEU-1"] > 0
    assert len((tmp_path / "out" / "per_image.csv").read_text().splitlines()) == 1 + 4
    table = format_table(report)
    assert "4 images" in table and "PARTIAL" in table and "note: 6 annotated images have no result: 5, 6" in table
