"""Errors that reached the user as tracebacks or deep exceptions, now one line naming the culprit: model sizes and
dropout refused by the constructors, OSErrors about named files, export output folders, SPICE without its models,
and the Python and demo APIs (batch_size=0, an empty ensemble, a beam that is not a number). Messages say what is
wrong: id types that differ, clips given to an image captioner, an ensemble's missing attention map, a file name
with a trailing space."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from captioning.checkpoint import CheckpointError
from captioning.config import OptionError
from captioning.data.clips import ClipRecord
from captioning.data.images import ImageReadError
from captioning.data.records import CaptionRecord, DataError
from captioning.errors import ExportError
from captioning.evaluation.coco import check_spice
from captioning.evaluation.results import ResultsError, match_results
from captioning.export.onnx_export import export_onnx
from captioning.inference.captioner import Captioner
from captioning.inference.scoring import check_kind
from captioning.registry import Registry, SpecError
from captioning.tasks import caption, train
from tests.conftest import CONF, compose_train, tiny_overrides
from tests.hostile.probe import assert_refused, run_command, snapshot


def compose_command(name: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(name, overrides=overrides)


def picture(path: Path, colour: str = "red") -> Path:
    Image.new("RGB", (40, 30), colour).save(path)
    return path


@pytest.fixture(scope="module")
def base(synthetic_root) -> list[str]:
    return tiny_overrides(synthetic_root) + ["train.epochs=1", "train.max_steps=1", "train.show_examples=0"]


@pytest.fixture(scope="module")
def checkpoint(base, tmp_path_factory) -> Path:
    """A 1-step tiny LSTM captioner (the captions are nonsense; the refusals are what is tested)."""
    run_dir = tmp_path_factory.mktemp("one-line-run")
    train(compose_train(base, run_dir))
    return run_dir / "checkpoints" / "best.pt"


# ---------------------------------------------------------------- model constructors, through the train command

@pytest.mark.parametrize("overrides, culprit", [
    (["model.decoder.hidden_size=0"], "model.decoder.hidden_size must be >= 1, got 0"),
    (["model.decoder.embed_size=0"], "model.decoder.embed_size must be >= 1, got 0"),
    (["model.decoder.num_layers=0"], "model.decoder.num_layers must be >= 1, got 0"),
    (["model.decoder.dropout=1.5"], "model.decoder.dropout must be in [0, 1), got 1.5"),
    (["model.decoder.image_input=both"], "model.decoder.image_input must be 'init' or 'first_step'"),
    (["model/decoder=soft_attention", "model.decoder.dropout=1.5"], "model.decoder.dropout"),
    (["model/decoder=soft_attention", "model.decoder.attention_size=0"], "model.decoder.attention_size"),
    (["model/decoder=updown", "model.decoder.hidden_size=0"], "model.decoder.hidden_size"),
    (["model.encoder.width=0"], "model.encoder.width must be >= 1, got 0"),
], ids=["hidden0", "embed0", "layers0", "dropout", "image_input", "soft-dropout", "soft-attention0", "updown-hidden0",
        "encoder-width0"])
def test_a_model_size_the_constructor_refuses_is_one_line(base, tmp_path, overrides, culprit):
    before = snapshot(tmp_path)
    outcome = run_command(lambda: train(compose_train(base + overrides, tmp_path / "run")))
    assert_refused(outcome, culprit, before, snapshot(tmp_path))


def test_a_constructor_error_without_a_key_names_the_part():
    things = Registry("thing")

    @things.register("fussy")
    def fussy(size: int = 1):
        raise ValueError("input_size must be greater than zero")  # what torch says, naming no option

    with pytest.raises(SpecError, match=r"^model.thing \('fussy'\): input_size must be greater than zero$"):
        things.build({"name": "fussy", "size": 0}, "model.thing")


# ---------------------------------------------------------------- files and folders

def test_an_os_error_about_a_named_file_is_one_line(tmp_path):
    def work():
        raise PermissionError(13, "Permission denied", str(tmp_path / "run"))

    outcome = run_command(work)
    assert outcome.code == 1 and outcome.message == f"error: {tmp_path / 'run'}: Permission denied"


def test_an_os_error_about_no_file_keeps_its_traceback():
    def work():
        raise OSError("something internal")

    with pytest.raises(OSError, match="something internal"):
        run_command(work)


@pytest.mark.parametrize("where", ["file", "under-file", "existing"])
def test_an_export_output_that_cannot_be_used_is_one_line(checkpoint, tmp_path, where):
    (tmp_path / "file").write_text("notes")
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "captioner.json").write_text("{}")
    output = {"file": tmp_path / "file", "under-file": tmp_path / "file" / "onnx",
              "existing": tmp_path / "existing"}[where]
    before = snapshot(tmp_path)
    outcome = run_command(lambda: export_onnx(checkpoint, output))
    assert_refused(outcome, str(tmp_path / ("existing" if where == "existing" else "file")), before, snapshot(tmp_path))
    with pytest.raises(ExportError):
        export_onnx(checkpoint, output)


def test_spice_requested_without_its_models_stops_evaluate_before_any_work(tmp_path):
    from captioning.commands.evaluate import main

    (tmp_path / "results.json").write_text(json.dumps([{"image_id": 1, "caption": "a"}]))
    (tmp_path / "captions.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "1.jpg"}],
                                                        "annotations": [{"id": 1, "image_id": 1, "caption": "a"}]}))
    cfg = compose_command("evaluate", [f"results={tmp_path / 'results.json'}", "spice=true", "java=none",
                                       f"annotations={tmp_path / 'captions.json'}", f"output_dir={tmp_path / 'out'}"])
    before = snapshot(tmp_path)
    outcome = run_command(lambda: inspect.unwrap(main)(cfg))
    assert_refused(outcome, "spice=true: SPICE cannot run here: no Java runtime", before, snapshot(tmp_path))
    assert not (tmp_path / "out").exists()
    with pytest.raises(OptionError, match="spice=true"):
        check_spice(True, None)
    check_spice("auto", None)  # auto and false skip it with the reason instead


# ---------------------------------------------------------------- the Python API

def test_captioner_batch_size_below_one_is_an_option_error(checkpoint, tmp_path):
    captioner = Captioner.from_checkpoint(checkpoint, "cpu")
    image = picture(tmp_path / "a.png")
    for bad in (0, -1, 2.5):
        with pytest.raises(OptionError, match=f"batch_size: expected an integer >= 1, found {bad}"):
            captioner.caption([image], batch_size=bad)
    assert captioner.caption([image], batch_size=1)[0].caption is not None


def test_an_empty_ensemble_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="checkpoint: an empty list"):
        Captioner.from_checkpoint([], "cpu")


def test_an_ensemble_says_it_has_no_single_attention_map(checkpoint, tmp_path):
    ensemble = Captioner.from_checkpoint([checkpoint, checkpoint], "cpu")
    image = picture(tmp_path / "a.png")
    with pytest.raises(OptionError, match="an ensemble of 2 checkpoints has no single attention map"):
        ensemble.caption(image, return_attention=True)
    output = tmp_path / "captions.json"
    before = snapshot(tmp_path)
    outcome = run_command(lambda: caption(compose_command("caption", [
        f"checkpoint=[{checkpoint},{checkpoint}]", f"images={image}", f"output={output}", "device=cpu",
        f"attention_maps={tmp_path / 'maps'}"])))
    assert_refused(outcome, "no single attention map", before, snapshot(tmp_path))


def test_a_file_name_with_a_trailing_space_is_quoted(checkpoint, tmp_path):
    picture(tmp_path / "a.png")
    captioner = Captioner.from_checkpoint(checkpoint, "cpu")
    with pytest.raises(ImageReadError) as refused:
        captioner.caption(tmp_path / "a.png ")
    assert str(refused.value).startswith(repr(str(tmp_path / "a.png ")) + ": image file not found")


def test_the_demo_names_a_beam_that_is_not_a_number(checkpoint, tmp_path):
    from captioning.inference.demo import caption_upload

    captioner = Captioner.from_checkpoint(checkpoint, "cpu")
    image = str(picture(tmp_path / "a.png"))
    assert caption_upload(captioner, image, "abc", 1, "none")[0] == "beam_size: expected a whole number, found 'abc'"
    assert caption_upload(captioner, image, 3, None, "none")[0] == "n_best: expected a whole number, found None"
    assert caption_upload(captioner, image, 3, 1, "long")[0].startswith("length_penalty: expected one of none")
    status, _, best, rows, _ = caption_upload(captioner, image, 2.0, 2, "none")
    assert status == "" and len(rows) == 2 and rows[0][1] == best


# ---------------------------------------------------------------- messages that say what is wrong

def test_results_ids_of_another_type_are_named_with_both_types():
    references = {"a": ["a cat"], "b": ["a dog"]}
    with pytest.raises(ResultsError, match=r"the id types differ: results has int ids, the annotations str ids"):
        match_results([{"image_id": 1, "caption": "a cat"}, {"image_id": 2, "caption": "a dog"}], references)
    with pytest.raises(ResultsError, match=r"differ only in type: results has str ids, the annotations int ids"):
        match_results([{"image_id": "1", "caption": "a cat"}], {1: ["a cat"]})


def test_clips_given_to_an_image_captioner_are_named_as_clips(tmp_path):
    clips = [ClipRecord("c1", tmp_path / "c1.mp4", "test", captions=["a man runs"])]
    with pytest.raises(DataError, match="this data is clips and ck.pt captions images"):
        check_kind(clips, "image", {"name": "msvd"}, "ck.pt")
    with pytest.raises(DataError, match="this data is images and ck.pt captions clips"):
        check_kind([CaptionRecord(1, tmp_path / "1.jpg", "test", ["a cat"])], "clip", {"name": "coco"}, "ck.pt")
    check_kind(clips, "clip", {"name": "msvd"}, "ck.pt")


@pytest.mark.parametrize("kind, preprocess, culprit", [("clip", {"input_size": 64}, "a clip captioner"),
                                                       ("image", None, "precomputed region features")])
def test_export_of_a_captioner_without_image_files_is_one_line(checkpoint, tmp_path, monkeypatch, kind, preprocess,
                                                               culprit):
    from types import SimpleNamespace

    from captioning.export import onnx_export

    stand_in = SimpleNamespace(inputs=SimpleNamespace(kind=kind), preprocess=preprocess)
    monkeypatch.setattr(onnx_export.Captioner, "from_payloads", lambda *args, **kwargs: stand_in)
    before = snapshot(tmp_path)
    outcome = run_command(lambda: export_onnx(checkpoint, tmp_path / "onnx"))
    assert_refused(outcome, culprit, before, snapshot(tmp_path))
    assert str(checkpoint) in outcome.message and not (tmp_path / "onnx").exists()


def test_image_files_given_to_a_region_model_are_one_line(checkpoint, tmp_path):
    captioner = Captioner.from_checkpoint(checkpoint, "cpu")
    captioner.transform = None  # what a model of precomputed region features has
    outcome = run_command(lambda: captioner.caption(picture(tmp_path / "a.png")))
    assert outcome.code == 1 and "has no image encoder" in outcome.message and "\n" not in outcome.message
