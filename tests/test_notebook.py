"""The demo notebook runs headless on a checkpoint the tests trained, so it never rots."""
from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from captioning.inference.captioner import Captioner
from tests.conftest import ROOT
from tests.test_caption import builtin_test_split

NOTEBOOK = ROOT / "notebooks" / "caption_demo.ipynb"


def test_notebook_is_stored_without_outputs():
    code = [cell for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_demo_notebook_captions_and_plots_the_images(learned_run, synthetic_root, monkeypatch):
    checkpoint = learned_run / "checkpoints" / "best.pt"
    paths, _ = builtin_test_split(synthetic_root)
    monkeypatch.setenv("CAPTION_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("CAPTION_IMAGES", str(paths[0].parent / "test_*.png"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    expected = Captioner.from_checkpoint(checkpoint, device="cpu").caption(paths[:8], beam_size=3, n_best=3)
    for path, caption in zip(paths[:8], expected, strict=True):
        assert f"{path.name}\t{caption.caption}\t" in printed
    assert any("image/png" in output.get("data", {}) for output in outputs)  # the grid was drawn


def run_notebook(checkpoint, images: str, monkeypatch) -> list:
    monkeypatch.setenv("CAPTION_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("CAPTION_IMAGES", images)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def test_the_notebook_draws_an_attention_map_for_an_attention_checkpoint(attention_run, synthetic_root, monkeypatch):
    paths, _ = builtin_test_split(synthetic_root)
    outputs = run_notebook(attention_run / "checkpoints" / "best.pt", str(paths[0].parent / "test_*.png"), monkeypatch)
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    first = Captioner.from_checkpoint(attention_run / "checkpoints" / "best.pt", device="cpu").caption(paths[0],
                                                                                                     beam_size=3)
    assert f"attention map of: {first.caption}" in printed
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 2  # the captions grid and the map
