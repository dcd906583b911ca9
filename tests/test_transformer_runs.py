"""The caption Transformer through the project's entry points: trained by the one loop (cross-entropy, SCST,
scheduled sampling), exported to ONNX (captions equal PyTorch's, with caches of any length), one member of a
checkpoint ensemble beside an LSTM, and, on the built-in shapes, a captioner that works (slow)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from captioning.export.onnx_export import export_onnx
from captioning.inference.captioner import Captioner
from captioning.tasks import train
from tests.conftest import compose_train, tiny_overrides

# The ONNX parity tests of test_export.py, collected here again: they read this module's `exported` fixture.
from tests.test_export import (  # noqa: F401
    held_out_images,
    test_exported_graphs_match_pytorch,
    test_onnx_captions_equal_pytorch_captions,
)

TINY_TRANSFORMER = ["model/decoder=transformer", "model.decoder.d_model=16", "model.decoder.heads=2",
                    "model.decoder.ff_size=32", "model.decoder.num_layers=2", "model.decoder.memory_layers=1",
                    "model.encoder.blocks=3"]


def transformer_overrides(synthetic_root: Path) -> list[str]:
    """conftest's tiny run (120 shapes, tiny CNN) with a tiny transformer (8 x 8 grid cells) for its LSTM, and no
    attention maps drawn at validation (matplotlib: 1.5 s a map)."""
    return ([o for o in tiny_overrides(synthetic_root) if not o.startswith("model.decoder.")] + TINY_TRANSFORMER
            + ["train.attention_maps=0"])


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory, synthetic_root) -> Path:
    """Mechanics, not quality: one short epoch, with one attention map drawn at its validation."""
    run_dir = tmp_path_factory.mktemp("transformer-run")
    train(compose_train(transformer_overrides(synthetic_root) + ["train.epochs=1", "train.show_examples=0",
                                                                 "train.attention_maps=1"], run_dir))
    return run_dir


@pytest.fixture(scope="module")
def exported(transformer_run, tmp_path_factory) -> tuple[Path, Path]:
    checkpoint = transformer_run / "checkpoints" / "best.pt"
    return checkpoint, export_onnx(checkpoint, tmp_path_factory.mktemp("onnx-transformer"))


def test_the_step_graph_takes_caches_of_any_length(exported, synthetic_root):
    """Traced once at one cached word, step.onnx names the caches' length axis, so it decodes captions of any
    length: the captions compared with PyTorch's in the imported tests are longer than that."""
    checkpoint, folder = exported
    spec = json.loads((folder / "captioner.json").read_text())
    assert len(spec["state"]) == 4 + 4  # 2 layers x (self-attention keys, values), then 2 x cross keys, values
    import onnx  # half a second to import: only where a graph is read

    graph = onnx.load(str(folder / "step.onnx")).graph
    shapes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert shapes["state_0"] == ["rows", 2, "state_0_length", 8]  # (rows, heads, words so far, d_head)
    assert shapes["state_4"][:2] == ["rows", 2] and shapes["state_4"][2] == 64 + 1  # grid cells + the pooled token
    captions = Captioner.from_checkpoint(checkpoint, "cpu").caption(held_out_images(synthetic_root), beam_size=3)
    assert max(len(c.caption.split()) for c in captions) > 2


def test_validation_draws_the_transformers_attention_map(transformer_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(transformer_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["val/attention/0"] and events.Images("val/attention/0")[0].width > 200


@pytest.mark.slow
def test_scst_trains_a_transformer_from_its_cross_entropy_checkpoint(transformer_run, synthetic_root, tmp_path):
    best = transformer_run / "checkpoints" / "best.pt"
    metrics = train(compose_train(transformer_overrides(synthetic_root) + [
        "train.objective=scst", f"train.init_from={best}", "train.max_steps=2", "train.batch_size=4",
        "train.scst.samples=3", "train.scst.baseline=mean", "train.show_examples=0"], tmp_path))
    logged = json.loads((tmp_path / "validation.jsonl").read_text().splitlines()[-1])
    assert metrics["step"] == 2 and logged["scst_entropy"] > 0


@pytest.mark.slow
def test_scheduled_sampling_trains_a_transformer(synthetic_root, tmp_path):
    metrics = train(compose_train(transformer_overrides(synthetic_root) + [
        "train.scheduled_sampling.max_prob=0.5", "train.scheduled_sampling.increase_prob=0.5", "train.max_steps=2",
        "train.show_examples=0"], tmp_path))
    assert metrics["step"] == 2 and metrics["loss"] > 0


@torch.no_grad()
def test_a_transformer_and_an_lstm_checkpoint_caption_as_one_ensemble(transformer_run, tiny_run, synthetic_root):
    """The ensemble's score of its caption is the summed mean of the two members' own log-probabilities."""
    checkpoints = [transformer_run / "checkpoints" / "best.pt", tiny_run / "checkpoints" / "best.pt"]
    ensemble = Captioner.from_checkpoint(checkpoints, "cpu")
    paths = held_out_images(synthetic_root, 2)
    caption = ensemble.caption(paths, beam_size=3)[0]
    tokens = ensemble.vocab.encode(caption.caption, max_length=100)  # <start> words <end>
    if len(tokens) - 2 > ensemble.max_words:
        tokens = tokens[:-1]  # cut at max_words, without an <end>
    total = torch.zeros(())
    for checkpoint in checkpoints:
        member = Captioner.from_checkpoint(checkpoint, "cpu")
        decoder = member.model.decoder
        state = decoder.init_state(member.encode(member.read(paths[0])[None]))
        for word, following in zip(tokens[:-1], tokens[1:], strict=True):
            log_probs, state = decoder.step(torch.tensor([word]), state)
            total += log_probs[0, following] / 2
    assert caption.score == pytest.approx(float(total), abs=1e-4)


@pytest.mark.slow
def test_a_short_run_on_the_builtin_shapes_captions_them(synthetic_root, tmp_path):
    """Val BLEU-4 >= 50 after 6 epochs of 600 pictures (about 8 s on 1 CPU thread; seeds 0-3 gave 73, 60, 61, 62),
    and each word's attention over the grid from `caption(return_attention=True)`."""

    overrides = [f"data.source.root={synthetic_root}", "data.source.num_train=600", "data.source.num_val=50",
                 "data.source.num_test=10", "vocab.min_count=1", "model.encoder.width=8", "model.encoder.out_dim=32",
                 "model/decoder=transformer", "model.decoder.d_model=32", "model.decoder.heads=4",
                 "model.decoder.ff_size=64", "model.decoder.num_layers=2", "model.decoder.memory_layers=1",
                 "train.batch_size=32", "train.epochs=6", "optim.lr=0.002", "train.show_examples=0",
                 "train.attention_maps=0"]
    metrics = train(compose_train(overrides, tmp_path))
    assert metrics["BLEU-4"] >= 50, metrics
    captioner = Captioner.from_checkpoint(tmp_path / "checkpoints" / "best.pt", "cpu")
    paths = sorted(next(synthetic_root.glob("*-600-50-10-seed0")).glob("images/test_*"))[:3]
    for caption in captioner.caption(paths, beam_size=3, return_attention=True):
        assert caption.grid == [4, 4] and len(caption.attention) == len(caption.caption.split())
        assert all(len(row) == 16 and 0 < sum(row) <= 1 for row in caption.attention)  # the pooled token has the rest
