"""captioner.json, the description an ONNX export carries (export/onnx_export.py writes it, export/runtime.py reads
it), checked before it is used: its values are data from a file, so the special ids must lie inside the vocabulary,
the caption cap and the image size are bounded, and a bad value is named by file and key. Torch-free, as the runtime.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from captioning.config.train import MAX_CAPTION_WORDS
from captioning.data.images import check_preprocess
from captioning.errors import ExportError

SPECIAL_IDS = ("start", "end", "unk", "pad")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_description(spec: dict, path: str | Path) -> None:
    """Refuse a captioner.json whose vocabulary, special ids, max_words, preprocessing or array names are not of the
    form the runtime reads (ExportError naming `path` and the key)."""
    def refuse(key: str, expected: str, found: Any) -> ExportError:
        return ExportError(f"{path}: {key}: expected {expected}, found {str(found)[:80]!r}")

    vocab = spec.get("vocab")
    if (not isinstance(vocab, list) or len(vocab) < len(SPECIAL_IDS)
            or not all(isinstance(word, str) and word for word in vocab) or len(set(vocab)) != len(vocab)):
        raise refuse("vocab", f"a list of at least {len(SPECIAL_IDS)} distinct, non-empty words", vocab)
    for key in SPECIAL_IDS:
        if not is_int(spec.get(key)) or not 0 <= spec[key] < len(vocab):
            raise refuse(key, f"a token id in 0..{len(vocab) - 1} (the vocabulary's {len(vocab)} words)", spec.get(key))
    if len({spec[key] for key in SPECIAL_IDS}) != len(SPECIAL_IDS):
        raise refuse("start, end, unk, pad", "four different token ids", [spec[key] for key in SPECIAL_IDS])
    if not is_int(spec.get("max_words")) or not 1 <= spec["max_words"] <= MAX_CAPTION_WORDS:
        raise refuse("max_words", f"an integer in 1..{MAX_CAPTION_WORDS}", spec.get("max_words"))
    for key in ("memory", "state"):
        names = spec.get(key)
        if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
            raise refuse(key, "a non-empty list of array names", names)
    problem = check_preprocess(spec.get("preprocess"), "preprocess")
    if problem:
        raise ExportError(f"{path}: {problem}")
