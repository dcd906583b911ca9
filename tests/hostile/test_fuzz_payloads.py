"""Property-based fuzzing of what a file hands the loaders: an ONNX export's captioner.json and a checkpoint's payload.
Whatever types, sizes and nesting a value takes, the file loads or is refused with the project's own error (the ones
the commands turn into one line), never another exception, a file written beside it, or a hang. Deterministic
(derandomized, no example database) and bounded."""
from __future__ import annotations

import copy
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from captioning.checkpoint import load_checkpoint
from captioning.cli import USER_ERRORS
from captioning.errors import ExportError
from captioning.export.description import check_description
from captioning.inference.captioner import Captioner
from tests.hostile.probe import snapshot

pytestmark = pytest.mark.slow  # Hypothesis at its full example count (the fast tier leaves it out)

SECONDS = 30  # far above a load's tens of milliseconds: a value that makes a loader loop or allocate without end

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([0, -1, 1, 10**9, 2**31])
    | st.floats() | st.text(max_size=8) | st.sampled_from(["hf-hub:org/model", "https://x/y.pt", "../../etc", "???"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10)

DESCRIPTION = {"vocab": ["<pad>", "<start>", "<end>", "<unk>", "a", "dog"], "pad": 0, "start": 1, "end": 2, "unk": 3,
               "max_words": 20, "memory": ["pooled"], "state": ["h", "c"],
               "preprocess": {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                              "interpolation": "bilinear", "crop_pct": 0.875}}


def paths(node, prefix=()) -> list[tuple]:
    """Every key path of a nested dict (lists are leaves)."""
    found = []
    for key, value in node.items():
        found.append(prefix + (key,))
        if isinstance(value, dict):
            found += paths(value, prefix + (key,))
    return found


def replaced(node: dict, path: tuple, value, delete: bool) -> dict:
    """A deep copy of `node` with the value at `path` replaced (or deleted)."""
    node = copy.deepcopy(node)
    parent = node
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return node


def test_the_unchanged_description_passes():
    check_description(DESCRIPTION, "captioner.json")  # else every refusal below would prove nothing


@settings(max_examples=400, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(path=st.sampled_from(paths(DESCRIPTION)), value=plain, delete=st.booleans())
def test_any_captioner_json_value_passes_or_is_refused_by_name(path, value, delete):
    spec = replaced(DESCRIPTION, path, value, delete)
    try:
        check_description(spec, "export/captioner.json")
    except ExportError as error:
        assert str(error).startswith("export/captioner.json: ") and "\n" not in str(error)


@settings(max_examples=100, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(whole=st.dictionaries(st.text(max_size=8), plain, max_size=6))
def test_any_json_object_passes_or_is_refused(whole):
    try:
        check_description(whole, "captioner.json")
    except ExportError:
        pass


@pytest.fixture(scope="module")
def payload(tiny_run) -> dict:
    return load_checkpoint(tiny_run / "checkpoints" / "best.pt")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.new("RGB", (64, 64), (200, 30, 30))


def payload_paths(payload: dict) -> list[tuple]:
    """The plain-data key paths of a checkpoint (weights and optimiser state are tensors, checked elsewhere)."""
    plain_part = {key: value for key, value in payload.items() if key not in ("model", "optimizer", "scheduler")}
    return [("model",), ("optimizer",)] + paths(plain_part)


@settings(max_examples=120, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_checkpoint_value_loads_or_is_refused(payload, image, tmp_path_factory, data):
    path = data.draw(st.sampled_from(payload_paths(payload)), label="path")
    value, delete = data.draw(plain, label="value"), data.draw(st.booleans(), label="delete")
    folder = tmp_path_factory.mktemp("fuzzed")
    checkpoint = folder / "best.pt"
    torch.save(replaced(payload, path, value, delete), checkpoint)
    before = snapshot(folder)
    started = time.monotonic()
    try:
        captioner = Captioner.from_checkpoint(checkpoint, device="cpu")
        captioner.caption([image])
    except USER_ERRORS as error:
        assert "weights_only" not in str(error), str(error)
    assert time.monotonic() - started < SECONDS, path
    assert snapshot(folder) == before  # nothing written beside the file it read
