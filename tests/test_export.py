"""ONNX export: the exported graphs, run by onnxruntime and the NumPy beam search (no torch), give PyTorch's
preprocessing, log-probabilities (within 1e-4) and captions, for the pooled LSTM and both attention decoders."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from captioning.errors import ExportError
from captioning.export.onnx_export import export_onnx
from captioning.export.runtime import OnnxCaptioner
from captioning.inference.captioner import Captioner
from tests.conftest import ROOT, compose_train, tiny_overrides


@pytest.fixture(scope="module", params=["lstm", "soft_attention", "updown"])
def exported(request, tmp_path_factory, synthetic_root, tiny_run) -> tuple[Path, Path]:
    """(checkpoint, export folder): the tiny run's pooled LSTM, or a 1-epoch attention run on the same data."""
    if request.param == "lstm":
        checkpoint = tiny_run / "checkpoints" / "best.pt"
    else:
        from captioning.tasks import train

        run_dir = tmp_path_factory.mktemp(f"export-{request.param}")
        train(compose_train(tiny_overrides(synthetic_root) + [f"model/decoder={request.param}", "train.epochs=1",
                                                             "model.encoder.blocks=3"], run_dir))
        checkpoint = run_dir / "checkpoints" / "best.pt"
    return checkpoint, export_onnx(checkpoint, tmp_path_factory.mktemp(f"onnx-{request.param}"))


def held_out_images(synthetic_root: Path, count: int = 6) -> list[Path]:
    return sorted(next(synthetic_root.glob("*-120-24-24-seed0")).glob("images/test_*"))[:count]


@torch.no_grad()
def test_exported_graphs_match_pytorch(exported, synthetic_root):
    checkpoint, folder = exported
    captioner, onnx = Captioner.from_checkpoint(checkpoint, "cpu"), OnnxCaptioner(folder)
    paths = held_out_images(synthetic_root)
    images = torch.stack([captioner.read(p) for p in paths])
    batch = np.stack([onnx.preprocess(p) for p in paths])
    assert np.abs(batch - images.numpy()).max() < 1e-5  # the same pixels in, without torchvision
    memory, onnx_memory = captioner.encode(images), onnx.encode(batch)
    assert np.abs(onnx_memory[0] - memory.pooled.numpy()).max() < 1e-4
    # Three steps along the greedy path, both ways: log-probabilities within 1e-4.
    decoder = captioner.model.decoder
    state, onnx_state = decoder.init_state(memory), onnx.initial_state(onnx_memory)
    tokens = torch.full((len(paths),), captioner.vocab.start)
    for _ in range(3):
        log_probs, state = decoder.step(tokens, state)
        onnx_log_probs, onnx_state = onnx.step(tokens.numpy(), onnx_state)
        assert np.abs(onnx_log_probs - log_probs.numpy()).max() < 1e-4
        tokens = log_probs.argmax(dim=1)


def test_onnx_captions_equal_pytorch_captions(exported, synthetic_root):
    checkpoint, folder = exported
    captioner, onnx = Captioner.from_checkpoint(checkpoint, "cpu"), OnnxCaptioner(folder)
    paths = held_out_images(synthetic_root)
    for options in (dict(beam_size=1), dict(beam_size=3, n_best=2, length_penalty="avg")):
        expected = captioner.caption(paths, **options)
        got = onnx.caption(paths, **options)
        assert [g["caption"] for g in got] == [e.caption for e in expected]
        assert [g["score"] for g in got] == pytest.approx([e.score for e in expected], abs=1e-4)
        assert [[a["caption"] for a in g["alternatives"]] for g in got] == \
            [[a["caption"] for a in e.alternatives] for e in expected]


def test_the_runtime_runs_without_torch(exported, synthetic_root):
    checkpoint, folder = exported
    paths = held_out_images(synthetic_root, 2)
    code = ("import runpy, sys; sys.argv = ['runtime', *sys.argv[1:]]; "
            "runpy.run_module('captioning.export.runtime', run_name='__main__'); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code, str(folder), *map(str, paths), "--beam-size", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = Captioner.from_checkpoint(checkpoint, "cpu").caption(paths, beam_size=3)
    assert done.stdout.splitlines() == [f"{p}\t{e.caption}" for p, e in zip(paths, expected, strict=True)]
    spec = json.loads((folder / "captioner.json").read_text())
    assert spec["vocab"][spec["end"]] == "<end>" and spec["state"]


def test_export_refuses_to_replace_an_export_and_bad_descriptions(tiny_run, tmp_path):
    checkpoint = tiny_run / "checkpoints" / "best.pt"
    export_onnx(checkpoint, tmp_path)
    with pytest.raises(ExportError, match="encoder.onnx"):
        export_onnx(checkpoint, tmp_path)
    (tmp_path / "captioner.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="format 99"):
        OnnxCaptioner(tmp_path)
