"""Export an image captioning checkpoint as three ONNX graphs plus a JSON description:

    encoder.onnx   image (B, 3, S, S) float32          -> pooled (B, D) [, grid (B, N, C)]
    init.onnx      pooled [, grid]                     -> state_0 .. state_k   (every tensor: rows on axis 0)
    step.onnx      tokens (R,) int64, state_0 .. k     -> log_probs (R, V), next_state_0 .. k
    captioner.json vocabulary, special ids, max_words, preprocessing, input and output names

Because every state tensor keeps its rows on axis 0 (`decoder.export_state`), a search reorders the state by
indexing, whatever the decoder; a state tensor may also grow along another axis as words are added (a transformer's
caches), which step.onnx takes at any length. Only the frozen graph is exported: no optimizer, no training code.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from captioning.checkpoint import load_checkpoint
from captioning.data.batches import Features
from captioning.errors import ExportError
from captioning.inference.captioner import Captioner

FORMAT = 1  # captioner.json layout version, checked by the runtime


class EncoderGraph(nn.Module):
    def __init__(self, encoder: nn.Module, with_grid: bool):
        super().__init__()
        self.encoder, self.with_grid = encoder, with_grid

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory = self.encoder(images)
        return (memory.pooled.float(), memory.grid.float()) if self.with_grid else (memory.pooled.float(),)


class InitGraph(nn.Module):
    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, pooled: torch.Tensor, grid: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        return self.decoder.export_state(self.decoder.init_state(Features(pooled, grid)))


class StepGraph(nn.Module):
    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        log_probs, new_state = self.decoder.step(tokens, self.decoder.import_state(state))
        return (log_probs, *self.decoder.export_state(new_state))


def state_axes(names: list[str], state: tuple[torch.Tensor, ...], stepped: tuple[torch.Tensor, ...]) -> dict:
    """The dynamic axes of each state tensor, as step.onnx's input and as its output: rows (axis 0), and any axis that
    grew in one step (a transformer's key and value caches gain a position per word). The step graph is traced
    after that first step, so no axis is traced at length 0."""
    axes = {}
    for name, before, after in zip(names, state, stepped, strict=True):
        grows = {axis: f"{name}_length" for axis in range(1, before.dim()) if before.size(axis) != after.size(axis)}
        axes[name] = axes[f"next_{name}"] = {0: "rows", **grows}
    return axes


def export_onnx(checkpoint: str | Path, output_dir: str | Path, *, opset: int = 17, overwrite: bool = False) -> Path:
    """Write encoder.onnx, init.onnx, step.onnx and captioner.json for an image captioning checkpoint into
    `output_dir`; returns its path. Existing files there are replaced only with `overwrite`."""
    output_dir = Path(output_dir)
    names = ("encoder.onnx", "init.onnx", "step.onnx", "captioner.json")
    if output_dir.exists() and not output_dir.is_dir():
        raise ExportError(f"{output_dir}: output is a file, not a folder; choose a folder for the export")
    existing = [output_dir / name for name in names if (output_dir / name).exists()]
    if existing and not overwrite:
        raise ExportError(f"{existing[0]}: exists; choose another output or set overwrite=true")
    payload = load_checkpoint(checkpoint)
    captioner = Captioner.from_payloads([(payload, checkpoint)], device="cpu")
    if captioner.inputs.kind != "image":
        raise ExportError(f"{checkpoint}: a {captioner.inputs.kind} captioner; export takes image captioners")
    if captioner.preprocess is None:
        raise ExportError(f"{checkpoint}: a model of precomputed region features has no image encoder to export; "
                          "export takes captioners of image files")
    encoder, decoder = captioner.model.encoder.eval(), captioner.model.decoder.eval()
    with_grid = bool(getattr(decoder, "uses_grid", False))
    size = int(captioner.preprocess["input_size"])
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # under a file, no permission
        raise ExportError(f"{output_dir}: cannot create the output folder ({error.strerror or error})") from None

    with torch.no_grad():
        images = torch.zeros(2, 3, size, size)
        memory = EncoderGraph(encoder, with_grid)(images)
        memory_names = ["pooled", "grid"][: len(memory)]
        state = InitGraph(decoder)(*memory)
        state_names = [f"state_{i}" for i in range(len(state))]
        tokens = torch.full((2,), captioner.vocab.start, dtype=torch.long)
        stepped = StepGraph(decoder)(tokens, *state)[1:]
        step_axes = {"tokens": {0: "rows"}, **state_axes(state_names, state, stepped)}
        rows = {0: "rows"}
        graphs = [(EncoderGraph(encoder, with_grid), (images,), ["images"], memory_names, {"images": {0: "batch"}}),
                  (InitGraph(decoder), tuple(memory), memory_names, state_names, dict.fromkeys(memory_names, rows)),
                  (StepGraph(decoder), (tokens, *stepped), ["tokens", *state_names],
                   ["log_probs", *(f"next_{name}" for name in state_names)], step_axes)]
        for (graph, args, inputs, outputs, dynamic), name in zip(graphs, names, strict=False):
            with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice; its graphs are plain ONNX
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, args, str(output_dir / name), input_names=inputs, output_names=outputs,
                                  dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    vocab = captioner.vocab
    description = {"format": FORMAT, "vocab": vocab.itos, "start": vocab.start, "end": vocab.end, "unk": vocab.unk,
                   "pad": vocab.pad, "max_words": captioner.max_words, "preprocess": captioner.preprocess,
                   "memory": memory_names, "state": state_names, "checkpoint": str(Path(checkpoint).resolve()),
                   "model_spec": payload["model_spec"]}
    (output_dir / "captioner.json").write_text(json.dumps(description, indent=1))
    return output_dir
