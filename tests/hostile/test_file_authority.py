"""Nothing read from a file chooses where we write, how much we make, or what we fetch (issue 27, part 1).

A checkpoint's data source, encoder name and pickled contents are data: a generating source named by a checkpoint
is read if it is already there and never generated; a hub, URL or folder model it names is refused before any
request; a file of pickled objects is refused without PyTorch's advice to load it unsafely. Checkpoints are made
here in-process (a tiny untrained model), so nothing trains.
"""
from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from captioning.checkpoint import save_checkpoint
from captioning.data.sources import read_source
from captioning.inference.captioner import Captioner
from captioning.inference.scoring import read_split
from captioning.models.caption_model import build_caption_model, check_nothing_fetched
from captioning.registry import SpecError, plain
from captioning.tasks import caption, evaluate
from captioning.tasks.base import part_prefixes
from captioning.vocab import SPECIALS
from tests.conftest import CONF, compose_train, tiny_overrides
from tests.hostile.probe import assert_refused, run_command, snapshot

WORDS = [*SPECIALS, "a", "red", "square"]


def make_checkpoint(path: Path, edit=None, root: Path | None = None) -> Path:
    """A tiny untrained image captioner saved as training saves one; `edit(payload)` changes it first."""
    spec = plain(compose_train(tiny_overrides(root or path.parent / "data")).model)
    model = build_caption_model(spec, len(WORDS), pretrained=False)
    source = {"name": "synthetic", "root": str(root or path.parent / "data"), "num_train": 4, "num_val": 2,
              "num_test": 2, "image_size": 64, "seed": 0}
    payload = {"task": "image_caption", "model_spec": spec, "parts": part_prefixes(model), "vocab": WORDS,
               "preprocess": model.encoder.preprocess, "max_words": 20, "encoder_weights": None,
               "data": {"name": "synthetic", "source": source, "allow_outside_root": False},
               "model": model.state_dict(), "epoch": 1, "step": 1}
    if edit is not None:
        edit(payload)
    return save_checkpoint(payload, path)


def composed(command: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(command, overrides=overrides)


def evaluate_cfg(checkpoint: Path, tmp_path: Path, *extra: str):
    return composed("evaluate", [f"checkpoint={checkpoint}", "split=test", "device=cpu", "java=none", "spice=false",
                                 f"output_dir={tmp_path / 'eval'}", *extra])


def caption_cfg(checkpoint: Path, images: Path, *extra: str):
    return composed("caption", [f"checkpoint={checkpoint}", f"images={images}", "device=cpu", *extra])


# ---------------------------------------------------------------- a checkpoint's data source is never generated


def test_evaluate_does_not_generate_the_data_set_a_checkpoint_names(tmp_path):
    """The crafted checkpoint asks for a billion images in a folder of its choosing: refused, nothing written."""
    target = tmp_path / "chosen-by-the-file"

    def huge(payload):
        payload["data"]["source"].update(root=str(target), num_train=10**9, num_test=10**9)

    checkpoint = make_checkpoint(tmp_path / "crafted.pt", huge)
    before = snapshot(tmp_path)
    outcome = run_command(lambda: evaluate(evaluate_cfg(checkpoint, tmp_path)))
    assert_refused(outcome, "data.source", before, snapshot(tmp_path))
    assert str(checkpoint) in outcome.message and "data=" in outcome.message, outcome.message
    assert not target.exists()  # not even the folder: the generator never ran


def test_a_checkpoint_cannot_switch_generation_back_on(tmp_path):
    """`generate` is supplied by the reader, never by the spec: a checkpoint giving it is refused by the registry."""
    payload = {"data": {"name": "synthetic", "source": {"name": "synthetic", "root": str(tmp_path / "d"),
                                                        "generate": True}}}
    with pytest.raises(SpecError, match="data.source.generate"):
        read_split(payload, tmp_path / "crafted.pt", "test", None, None)
    assert not (tmp_path / "d").exists()


def test_an_already_generated_data_set_is_read(tmp_path):
    """The usual case: the run generated its synthetic data, and evaluate reads it from the checkpoint's spec."""
    source = {"name": "synthetic", "root": str(tmp_path / "d"), "num_train": 2, "num_val": 2, "num_test": 3,
              "image_size": 16}
    read_source(source)  # the user's own run generates it
    before = snapshot(tmp_path)
    _, records = read_split({"data": {"name": "synthetic", "source": source}}, tmp_path / "run.pt", "test", None, None)
    assert len(records) == 3 and snapshot(tmp_path) == before


def test_data_given_on_the_command_line_is_generated(tmp_path):
    """`data=` on the command line is the user's choice: a synthetic source given there is generated as before."""
    source = {"name": "synthetic", "root": str(tmp_path / "d"), "num_train": 1, "num_val": 1, "num_test": 2,
              "image_size": 16}
    _, records = read_split({"data": None}, tmp_path / "run.pt", "test", {"name": "synthetic", "source": source}, None)
    assert len(records) == 2


# ---------------------------------------------------------------- a hub, URL or folder model named by a file


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network (or the Hugging Face hub through timm) fails the test loudly."""
    import huggingface_hub
    import timm.models._factory as timm_factory

    def refuse(*args, **kwargs):
        raise AssertionError(f"a network request was attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(timm_factory, "load_model_config_from_hf", refuse)


def hub_encoder(name: str):
    def edit(payload):
        payload["model_spec"]["encoder"] = {"name": "timm", "model": name, "pretrained": False, "trainable": False}
    return edit


@pytest.mark.parametrize("name", ["hf-hub:evil/model", "hf_hub:evil/model", "https://evil.example/model.pth",
                                  "local-dir:/home/someone/model"])
def test_caption_refuses_a_hub_model_named_by_a_checkpoint(tmp_path, no_network, images_folder, name):
    checkpoint = make_checkpoint(tmp_path / "hub.pt", hub_encoder(name))
    before = snapshot(tmp_path)
    outcome = run_command(lambda: caption(caption_cfg(checkpoint, images_folder)))
    assert_refused(outcome, "model_spec.encoder.model", before, snapshot(tmp_path))
    assert str(checkpoint) in outcome.message and name in outcome.message, outcome.message


def test_evaluate_and_the_python_api_refuse_a_hub_model_named_by_a_checkpoint(tmp_path, no_network):
    checkpoint = make_checkpoint(tmp_path / "hub.pt", hub_encoder("hf-hub:evil/model"))
    before = snapshot(tmp_path)
    outcome = run_command(lambda: evaluate(evaluate_cfg(checkpoint, tmp_path)))
    assert_refused(outcome, "model_spec.encoder.model", before, snapshot(tmp_path))
    outcome = run_command(lambda: Captioner.from_checkpoint(checkpoint, "cpu"))
    assert_refused(outcome, "model_spec.encoder.model", before, snapshot(tmp_path))


def test_the_demo_refuses_a_hub_model_named_by_a_checkpoint_unless_the_user_names_it(tmp_path, no_network, monkeypatch):
    from captioning.inference import demo

    checkpoint = make_checkpoint(tmp_path / "hub.pt", hub_encoder("hf-hub:evil/model"))
    monkeypatch.setattr(demo, "build_demo", lambda *a, **k: pytest.fail("the page was built"))
    options = {"host": "127.0.0.1", "port": 7860, "device": "cpu", "examples": [], "max_upload_mb": 1,
               "max_image_pixels": None}
    before = snapshot(tmp_path)
    outcome = run_command(lambda: demo.serve(str(checkpoint), **options))
    assert_refused(outcome, "model_spec.encoder.model", before, snapshot(tmp_path))
    outcome = run_command(lambda: demo.serve(str(checkpoint), **options, allow_hub_model="hf-hub:other/model"))
    assert_refused(outcome, "give allow_hub_model='hf-hub:evil/model'", before, snapshot(tmp_path))  # another name
    assert composed("demo", ["allow_hub_model=hf-hub:evil/model"]).allow_hub_model == "hf-hub:evil/model"


def test_the_name_the_user_gives_is_let_through():
    """allow_hub_model= names the one hub model the user chose; registry names pass without it."""
    spec = {"encoder": {"name": "timm", "model": "hf-hub:org/model"}}
    check_nothing_fetched(spec, "model_spec", allowed="hf-hub:org/model")
    check_nothing_fetched({"encoder": {"name": "timm", "model": "resnet50.a1_in1k"}}, "model_spec")
    with pytest.raises(SpecError, match="allow_hub_model='hf-hub:org/model'"):
        check_nothing_fetched(spec, "model_spec", allowed="hf-hub:org/other")
    assert composed("caption", ["checkpoint=x", "images=y", "allow_hub_model=hf-hub:org/model"]).allow_hub_model


# ---------------------------------------------------------------- model sizes named by a file


@pytest.mark.parametrize("size", [10**9, 10**5, 31])
def test_a_model_spec_that_does_not_fit_its_weights_is_refused_before_it_is_built(tmp_path, images_folder, size):
    """hidden_size=10**9 would allocate petabytes: the spec is built on the meta device and compared with the
    weights the file holds first (so a model is never larger than its checkpoint)."""
    checkpoint = make_checkpoint(tmp_path / "big.pt",
                                 lambda payload: payload["model_spec"]["decoder"].update(hidden_size=size))
    before = snapshot(tmp_path)
    for work in (lambda: caption(caption_cfg(checkpoint, images_folder)),
                 lambda: evaluate(evaluate_cfg(checkpoint, tmp_path)),
                 lambda: Captioner.from_checkpoint(checkpoint, "cpu")):
        outcome = run_command(work)
        assert_refused(outcome, f"{checkpoint}: model_spec", before, snapshot(tmp_path))
        assert str(size) in outcome.message or "does not fit the checkpoint's weights" in outcome.message, outcome.message


# ---------------------------------------------------------------- pickled objects: no advice to load them unsafely


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_pickled_object_is_refused_without_torchs_unsafe_advice(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"format": 2, "task": "image_caption", "model": {}, "evil": Payload()}, path)
    images = tmp_path / "images"
    images.mkdir()
    before = snapshot(tmp_path)
    for work in (lambda: Captioner.from_checkpoint(path, "cpu"), lambda: caption(caption_cfg(path, images)),
                 lambda: evaluate(evaluate_cfg(path, tmp_path))):
        outcome = run_command(work)
        assert_refused(outcome, str(path), before, snapshot(tmp_path))
        assert "GLOBAL posix.getcwd" in outcome.message, outcome.message
        assert "weights_only" not in outcome.message and "trust" not in outcome.message, outcome.message
