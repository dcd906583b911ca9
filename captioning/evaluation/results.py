"""COCO-format results files (`[{"image_id", "caption"}]`): reading, writing, and checking them
against a COCO caption annotation file the way the COCO evaluation server would.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from captioning.data.records import DataError, first_items
from captioning.data.sources.coco import read_coco, read_json

log = logging.getLogger(__name__)


class ResultsError(DataError):
    """A results file that cannot be scored as it is: the message gives counts and the first ids."""


def read_results(path: str | Path) -> list[dict]:
    """Read `[{"image_id": id, "caption": str}, ...]`; ids are kept as they are (int or str).
    Any other shape is a ResultsError naming the file and the item's index."""
    results = read_json(path)
    if not isinstance(results, list):
        raise ResultsError(f"{path}: expected a JSON list of {{image_id, caption}} objects, found {type(results).__name__}")
    for index, item in enumerate(results):
        if not isinstance(item, dict) or "image_id" not in item or "caption" not in item:
            raise ResultsError(f"{path}: item {index} is not an object with 'image_id' and 'caption': {as_json(item)}")
        image_id, caption = item["image_id"], item["caption"]
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool) or not is_text(str(image_id)):
            raise ResultsError(f"{path}: item {index} has image_id {as_json(image_id)}; expected an integer or a string")
        if not isinstance(caption, str):
            raise ResultsError(f"{path}: item {index} (image_id {image_id!r}) has a non-string caption: {as_json(caption)}")
        if not is_text(caption):
            raise ResultsError(f"{path}: item {index} (image_id {image_id!r}) has a caption that is not valid "
                               "Unicode text (a lone surrogate escape such as \\ud800)")
    return results


def as_json(value) -> str:
    """A value from a JSON file as it reads there, shortened for a message."""
    try:
        shown = json.dumps(value)
    except (ValueError, RecursionError):  # nested too deeply to show
        return f"a {type(value).__name__}"
    return shown if len(shown) <= 80 else shown[:77] + "..."


def is_text(value: str) -> bool:
    """False for strings JSON allows but no text file can hold (lone surrogates, e.g. "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_results(captions: dict, path: str | Path) -> Path:
    """{image id: caption} -> the COCO results file, in the given id order."""
    path = Path(path)
    lines = [json.dumps({"image_id": key, "caption": caption}, ensure_ascii=False) for key, caption in captions.items()]
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    return path


def read_references(annotations: str | Path) -> dict:
    """An official COCO caption file -> {image id: [caption, ...]} for every image that has captions.
    Its file names are not used (no image is read), so they may point anywhere."""
    records = read_coco(annotations, images=".", split="annotations", allow_outside_root=True)
    for record in records:
        bad = [index for index, caption in enumerate(record.captions) if not is_text(caption)]
        if bad:
            raise ResultsError(f"{annotations}: caption {bad[0]} of image id {record.image_id!r} is not valid Unicode "
                               "text (a lone surrogate escape such as \\ud800)")
    references = {record.image_id: [c for c in record.captions if c.strip()] for record in records}
    without = [key for key, captions in references.items() if not captions]
    if without:
        log.warning("%s: %d images without captions are left out (%s)", annotations, len(without), first_items(without))
    return {key: captions for key, captions in references.items() if captions}


@dataclass
class Coverage:
    """How a results file lines up with the annotation set (lists of image ids)."""
    annotated: int
    scored: int
    missing: list = field(default_factory=list)     # annotated images without a result
    extra: list = field(default_factory=list)       # results for images that have no annotations
    duplicate: list = field(default_factory=list)   # images with more than one result
    empty: list = field(default_factory=list)       # results whose caption is empty (scored as given: 0)
    partial: bool = False                           # True when only the covered subset was scored

    def problems(self) -> list[str]:
        lines = []
        for _name, ids, meaning in (("missing", self.missing, "annotated images have no result"),
                                   ("extra", self.extra, "results name images absent from the annotations"),
                                   ("duplicate", self.duplicate, "images have more than one result"),
                                   ("empty", self.empty, "results have an empty caption")):
            if ids:
                lines.append(f"{len(ids)} {meaning}: {first_items(ids)}")
        return lines

    def to_json(self) -> dict:
        summary = {key: value for key, value in asdict(self).items() if not isinstance(value, list)}
        for name in ("missing", "extra", "duplicate", "empty"):
            ids = getattr(self, name)
            summary[name] = {"count": len(ids), "first": ids[:10]}
        summary["problems"] = self.problems()
        return summary


def id_types(keys) -> str:
    """`int`, `str`, or `int and str`: the types of a file's image ids, as messages name them."""
    return " and ".join(sorted({type(key).__name__ for key in keys})) or "no"


def match_results(results: list[dict], references: dict, allow_partial: bool = False,
                  source: str = "results") -> tuple[dict, Coverage]:
    """Pair each annotated image with its one result caption -> ({image id: caption}, coverage).

    Duplicates are always refused (which caption would count?). Missing and extra ids are refused
    unless `allow_partial`, which scores the images present in both and marks the scores partial.
    Empty captions are scored as given, so they count as failures instead of vanishing.
    """
    counts = Counter(item["image_id"] for item in results)
    hypotheses = {item["image_id"]: item["caption"] for item in results}
    coverage = Coverage(
        annotated=len(references), scored=0,
        missing=[key for key in references if key not in hypotheses],
        extra=[key for key in hypotheses if key not in references],
        duplicate=[key for key, count in counts.items() if count > 1],
        empty=[key for key, caption in hypotheses.items() if not caption.strip() and key in references])
    annotated_as_text = {str(key) for key in references}
    result_types, annotation_types = id_types(hypotheses), id_types(references)
    hint = ""
    if coverage.extra and all(str(key) in annotated_as_text for key in coverage.extra[:10]):
        hint = (f" (the ids differ only in type: {source} has {result_types} ids, the annotations "
                f"{annotation_types} ids)")
    elif coverage.extra and result_types != annotation_types:
        hint = f" (the id types differ: {source} has {result_types} ids, the annotations {annotation_types} ids)"
    if coverage.duplicate:
        raise ResultsError(f"{source}: {len(coverage.duplicate)} images have more than one result: "
                           f"{first_items(coverage.duplicate)}")
    if (coverage.missing or coverage.extra) and not allow_partial:
        raise ResultsError(f"{source}: does not cover the annotation set: " + "; ".join(coverage.problems()) + hint +
                           " (allow_partial=true scores only the images present in both)")
    covered = {key: hypotheses[key] for key in references if key in hypotheses}
    if not covered:
        raise ResultsError(f"{source}: no result matches an annotated image" + hint)
    coverage.scored, coverage.partial = len(covered), bool(coverage.missing or coverage.extra)
    for problem in coverage.problems():
        log.warning("%s: %s", source, problem)
    if coverage.partial:
        log.warning("%s: PARTIAL scores on %d of %d annotated images", source, len(covered), len(references))
    return covered, coverage
