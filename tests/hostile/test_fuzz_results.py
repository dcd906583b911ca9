"""Property-based fuzzing of the results-file reader: whatever a results file holds, `read_results` followed by
`match_results` either gives {image id: caption} for annotated images or raises the project's DataError
(ResultsError), never another exception. Deterministic (derandomized, no example database) and bounded."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from captioning.data.records import DataError
from captioning.evaluation.results import match_results, read_results

pytestmark = pytest.mark.slow  # Hypothesis at its full example count (the fast tier leaves it out)

REFERENCES = {1: ["a red circle"], 2: ["a blue square"], "3.jpg": ["a green triangle"]}
ODD_TEXT = st.sampled_from(["", " ", "\r", "a\u2028b", "\x00", "\ud800", "\udfff x", "||| a", "1", "3.jpg", "image_id"])
TEXT = st.one_of(st.text(max_size=12), ODD_TEXT)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)
IDS = st.one_of(st.sampled_from([1, 2, "3.jpg", 3, "1", 1.0, True, None, [1], {"id": 1}]), JSON_VALUES)
ITEMS = st.one_of(
    st.fixed_dictionaries({"image_id": IDS, "caption": st.one_of(TEXT, JSON_VALUES)},
                          optional={"id": JSON_VALUES, "score": JSON_VALUES}),
    st.fixed_dictionaries({"image_id": IDS}), st.fixed_dictionaries({"caption": TEXT}), JSON_VALUES)
NEAR_VALID = st.builds(  # the path that loads: every annotated id once, maybe one dropped or one extra, odd captions
    lambda ids, captions, drop, extra: [{"image_id": key, "caption": caption}
                                        for key, caption in zip(ids, captions, strict=True)
                                        ][drop:] + extra,
    st.permutations([1, 2, "3.jpg"]), st.lists(TEXT, min_size=3, max_size=3), st.sampled_from([0, 0, 1]),
    st.lists(st.fixed_dictionaries({"image_id": IDS, "caption": TEXT}), max_size=1))
FILES = st.one_of(
    NEAR_VALID.map(json.dumps),
    st.lists(ITEMS, max_size=6).map(json.dumps),              # results-like lists
    JSON_VALUES.map(json.dumps),                              # any JSON value
    st.lists(ITEMS, max_size=6).map(lambda items: json.dumps(items)[:-1]),  # cut short
    st.binary(max_size=40).map(lambda raw: raw.decode("latin-1")))          # not JSON at all


@settings(max_examples=400, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=FILES, allow_partial=st.booleans(), bom=st.booleans())
def test_any_results_file_loads_or_raises_a_data_error(tmp_path, text, allow_partial, bom):
    path = tmp_path / "results.json"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", errors="surrogatepass"))
    try:
        hypotheses, coverage = match_results(read_results(path), REFERENCES, allow_partial, source=str(path))
    except DataError as error:
        assert str(path) in str(error)  # every refusal names the file
        event("refused")
        return
    event("loaded")
    assert hypotheses and set(hypotheses) <= set(REFERENCES)
    assert all(isinstance(caption, str) for caption in hypotheses.values())
    assert coverage.scored == len(hypotheses) and (coverage.partial or set(hypotheses) == set(REFERENCES))
