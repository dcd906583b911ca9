"""Files this project writes for itself and reads back (a store's header.json and index.json, an export's
captioner.json, an evaluation's metrics.json, caption.py's output) are refused unread when they are bigger than any
of ours could be: a crafted 300 MB file is not parsed into memory. The files here are sparse: no disk is used."""
from __future__ import annotations

from pathlib import Path

import pytest

from captioning.data.features import FeatureStore
from captioning.data.records import MAX_RECORD_BYTES, DataError
from captioning.evaluation.folds import FoldError, read_report
from captioning.inference.paths import output_origin


def huge(path: Path, start: bytes = b"{") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        file.write(start)
        file.truncate(MAX_RECORD_BYTES + 1)  # a hole: the size without the disk
    return path


@pytest.mark.parametrize("name", ["header.json", "index.json"])
def test_a_store_file_bigger_than_ours_is_refused_unread(tmp_path, name, monkeypatch):
    store = tmp_path / "store"
    huge(store / "header.json" if name == "header.json" else store / "index.json")
    if name == "index.json":
        (store / "header.json").write_text('{"count": 1}')
        monkeypatch.setattr("captioning.data.features.read_header", lambda path: {"count": 1, "complete": True})
    read = []
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: read.append(self) or "")
    with pytest.raises(DataError, match=rf"{name}: {MAX_RECORD_BYTES + 1:,} bytes, over the"):
        FeatureStore(store)
    assert not read


def test_an_export_description_bigger_than_ours_is_refused_unread(tmp_path):
    from captioning.export.runtime import ExportError, OnnxCaptioner  # onnxruntime: imported where it is needed

    folder = tmp_path / "export"
    huge(folder / "captioner.json")
    for graph in ("encoder.onnx", "init.onnx", "step.onnx"):
        (folder / graph).write_bytes(b"")
    with pytest.raises(ExportError, match=r"captioner.json: .* bytes, over the"):
        OnnxCaptioner(folder)


def test_a_fold_report_bigger_than_ours_is_refused_unread(tmp_path):
    huge(tmp_path / "fold" / "metrics.json")
    with pytest.raises(FoldError, match=r"metrics.json: .* bytes, over the"):
        read_report(tmp_path / "fold")


def test_a_huge_file_at_the_caption_output_is_never_taken_for_ours(tmp_path):
    assert output_origin(huge(tmp_path / "captions.json", b'{"written_by": "captioning-caption", "captions": []}')) \
        == "other"
