"""Inputs that quietly became something else, and settings that never stopped (issue 27, parts 4 and 5).

A caption with no words, a mandatory key an experiment leaves at `???`, a checkpoint's caption cap of 0 or of a
billion, an export's special ids outside its vocabulary or an image size that would exhaust memory: each is refused
with one line naming the file or key, exit status 1, and no file changed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from captioning.data.records import CaptionRecord, DataError, clean_captions
from captioning.export.runtime import main as onnx_main
from captioning.inference import paths as caption_paths_module
from captioning.inference.captioner import Captioner
from captioning.tasks import caption, evaluate, train
from tests.conftest import compose_train
from tests.hostile.probe import assert_refused, run_command, snapshot
from tests.hostile.test_file_authority import WORDS, caption_cfg, evaluate_cfg, make_checkpoint

# ---------------------------------------------------------------- captions of no words

WORDLESS = ["!!!", " . , ; ", "\U0001F642\U0001F389", "\x07\x1b\x00\x7f", "\u200b\u200b"]


def test_wordless_captions_are_empty_captions():
    records = [CaptionRecord(1, Path("a.png"), "train", ["a red square", *WORDLESS]),
               CaptionRecord(2, Path("b.png"), "train", ["?!"])]
    with pytest.raises(DataError, match=r"empty captions .* image ids 1, 2"):
        clean_captions(records, "train captions")
    kept = clean_captions(records, "train captions", on_bad_caption="skip")
    assert [(record.image_id, record.captions) for record in kept] == [(1, ["a red square"])]


def coco_files(folder: Path, captions: dict[int, list[str]]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    images = [{"id": image_id, "file_name": f"{image_id}.png"} for image_id in captions]
    for image in images:
        Image.new("RGB", (16, 16), "red").save(folder / image["file_name"])
    annotations = [{"id": 100 * image_id + n, "image_id": image_id, "caption": text}
                   for image_id, texts in captions.items() for n, text in enumerate(texts)]
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return {"annotations": str(folder / "captions.json"), "images": str(folder)}


def test_training_stops_on_a_wordless_caption(tmp_path):
    train_files = coco_files(tmp_path / "train", {1: ["a red square"], 2: ["\U0001F642 !!!"]})
    val_files = coco_files(tmp_path / "val", {3: ["a red square"]})
    overrides = ["data=coco", *(f"data.train.{key}={value}" for key, value in train_files.items()),
                 *(f"data.val.{key}={value}" for key, value in val_files.items()), "vocab.min_count=1"]
    before = snapshot(tmp_path)
    outcome = run_command(lambda: train(compose_train(overrides, tmp_path / "run")))
    assert_refused(outcome, "image ids 2", before, snapshot(tmp_path))
    assert "data.on_bad_caption=skip" in outcome.message
    assert not list((tmp_path / "run").rglob("*.pt"))  # stopped before the first step


# ---------------------------------------------------------------- mandatory keys an experiment leaves unset


@pytest.mark.parametrize("experiment,key", [("flickr8k_sample_scst", "train.init_from"),
                                            ("flickr8k_sample_updown_scst", "train.init_from"),
                                            ("transformer_coco", "data.features")])
def test_an_experiments_mandatory_key_stops_the_run(tmp_path, experiment, key):
    """`???` merged over a default is dropped by OmegaConf (the SCST recipes trained 20 epochs from random weights):
    such keys are `${mandatory:}` and are named before anything is read or written."""
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    outcome = run_command(lambda: train(compose_train([f"experiment={experiment}"], tmp_path / "run")))
    assert_refused(outcome, key, before, snapshot(tmp_path))
    assert outcome.message.startswith("error: Missing mandatory value:"), outcome.message
    assert not (tmp_path / "run").exists()


def test_the_mandatory_key_given_on_the_command_line_is_used(tmp_path):
    cfg = compose_train(["experiment=flickr8k_sample_scst", "train.init_from=best.pt"], tmp_path / "run")
    assert cfg.train.init_from == "best.pt"


# ---------------------------------------------------------------- caption caps: a checkpoint's, and decode's


@pytest.mark.parametrize("max_words", [0, -3, 10**9, 2.5, True])
def test_a_checkpoints_caption_cap_out_of_range_is_refused(tmp_path, images_folder, max_words):
    checkpoint = make_checkpoint(tmp_path / "cap.pt", lambda payload: payload.update(max_words=max_words))
    before = snapshot(tmp_path)
    for work in (lambda: caption(caption_cfg(checkpoint, images_folder)),
                 lambda: Captioner.from_checkpoint(checkpoint, "cpu"), lambda: evaluate(evaluate_cfg(checkpoint, tmp_path))):
        outcome = run_command(work)
        assert_refused(outcome, f"{checkpoint}: max_words", before, snapshot(tmp_path))


def test_decode_max_words_is_bounded(tmp_path, images_folder):
    checkpoint = make_checkpoint(tmp_path / "ok.pt")
    before = snapshot(tmp_path)
    outcome = run_command(lambda: caption(caption_cfg(checkpoint, images_folder, "decode.max_words=100000000")))
    assert_refused(outcome, "decode.max_words=100000000", before, snapshot(tmp_path))
    assert "1..1000" in outcome.message or "<= 1000" in outcome.message, outcome.message
    outcome = run_command(lambda: train(compose_train(["vocab.max_words=5000"], tmp_path / "run")))
    assert_refused(outcome, "vocab.max_words", before, snapshot(tmp_path))


def test_min_words_is_checked_against_the_checkpoints_cap(tmp_path, images_folder):
    """decode.max_words=null means the checkpoint's max_words: min_words above it is refused, naming both."""
    checkpoint = make_checkpoint(tmp_path / "short.pt", lambda payload: payload.update(max_words=4))
    before = snapshot(tmp_path)
    for work in (lambda: caption(caption_cfg(checkpoint, images_folder, "decode.min_words=6")),
                 lambda: evaluate(evaluate_cfg(checkpoint, tmp_path, "decode.min_words=6"))):
        outcome = run_command(work)
        assert_refused(outcome, "decode.min_words=6", before, snapshot(tmp_path))
        assert str(checkpoint) in outcome.message and "0..4" in outcome.message, outcome.message


@pytest.mark.parametrize("edit,key", [
    (lambda p: p.update(input_size=10**6), "preprocess.input_size"),
    (lambda p: p.update(input_size="224"), "preprocess.input_size"),
    (lambda p: p.update(crop_pct=0.0001), "preprocess.input_size"),
    (lambda p: p.update(std=[0.0, 1.0, 1.0]), "preprocess.std"),
    (lambda p: p.update(mean=[0.5, 0.5]), "preprocess.mean"),
    (lambda p: p.update(interpolation="lanczos"), "preprocess.interpolation"),
])
def test_a_checkpoints_preprocessing_is_bounded(tmp_path, images_folder, edit, key):
    checkpoint = make_checkpoint(tmp_path / "pre.pt", lambda payload: edit(payload["preprocess"]))
    before = snapshot(tmp_path)
    outcome = run_command(lambda: caption(caption_cfg(checkpoint, images_folder)))
    assert_refused(outcome, f"{checkpoint}: {key}", before, snapshot(tmp_path))


def test_captioning_many_images_shows_progress(tmp_path, monkeypatch):
    """More than one batch: a progress bar over the batches (stderr); one batch: none."""
    shown = []

    def recording_tqdm(items, disable=False, **options):
        shown.append((len(items), disable))
        return items

    monkeypatch.setattr(caption_paths_module, "tqdm", recording_tqdm)
    assert [len(b) for b in caption_paths_module.chunks(list(range(7)), 3, desc="captioning images")] == [3, 3, 1]
    assert list(caption_paths_module.chunks([1], 3, desc="captioning images")) == [[1]]
    assert shown == [(3, False), (1, True)]


# ---------------------------------------------------------------- captioner.json of an ONNX export


def export_folder(folder: Path, edit=None) -> Path:
    """captioner.json as export writes it (the graphs are placeholders: the description is checked first)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"format": 1, "vocab": WORDS, "start": 1, "end": 2, "unk": 3, "pad": 0, "max_words": 20,
            "preprocess": {"input_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                           "interpolation": "bilinear", "crop_pct": 1.0},
            "memory": ["pooled"], "state": ["state_0", "state_1"], "checkpoint": "best.pt", "model_spec": {}}
    if edit is not None:
        edit(spec)
    (folder / "captioner.json").write_text(json.dumps(spec))
    for name in ("encoder.onnx", "init.onnx", "step.onnx"):
        (folder / name).write_bytes(b"not a graph")
    return folder


@pytest.mark.parametrize("edit,key", [
    (lambda s: s.update(start=len(WORDS)), "start"),
    (lambda s: s.update(end=-1), "end"),
    (lambda s: s.update(unk="3"), "unk"),
    (lambda s: s.update(pad=True), "pad"),
    (lambda s: s.update(end=1), "start, end, unk, pad"),
    (lambda s: s.update(vocab="a b c"), "vocab"),
    (lambda s: s.update(vocab=[*WORDS, "a"]), "vocab"),
    (lambda s: s.update(max_words=0), "max_words"),
    (lambda s: s.update(max_words=10**9), "max_words"),
    (lambda s: s.update(memory=[]), "memory"),
    (lambda s: s.update(state="state_0"), "state"),
    (lambda s: s["preprocess"].update(input_size=10**6), "preprocess.input_size"),
    (lambda s: s["preprocess"].update(crop_pct=-1), "preprocess.crop_pct"),
    (lambda s: s["preprocess"].update(std=[1, 1, "x"]), "preprocess.std"),
    (lambda s: s["preprocess"].update(interpolation="box"), "preprocess.interpolation"),
    (lambda s: s.update(preprocess=None), "preprocess"),
])
def test_a_bad_captioner_json_is_refused_naming_its_key(tmp_path, edit, key):
    folder = export_folder(tmp_path / "export", edit)
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), "red").save(image)
    before = snapshot(tmp_path)
    outcome = run_command(lambda: onnx_main([str(folder), str(image)]))
    assert_refused(outcome, f"{folder / 'captioner.json'}: {key}", before, snapshot(tmp_path))


def test_a_good_captioner_json_passes_the_check(tmp_path):
    """The placeholder graphs are what fail here, after the description was accepted."""
    folder = export_folder(tmp_path / "export")
    outcome = run_command(lambda: onnx_main([str(folder), str(tmp_path / "a.png")]))
    assert outcome.code == 1 and "encoder.onnx: not a loadable ONNX graph" in outcome.message, outcome.message
