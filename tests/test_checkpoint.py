"""Checkpoints are written atomically, load with weights_only, and fail clearly when wrong."""
import pickle

import pytest
import torch

from captioning.checkpoint import CheckpointError, checkpoint_task, load_checkpoint, load_state, save_checkpoint, saved_config
from captioning.models.captioner import build_model


def test_atomic_write_keeps_previous_file_when_killed(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)

    def dies_halfway(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # the run is killed mid-write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    payload = torch.load(path, weights_only=True)
    assert payload["step"] == 1 and torch.equal(payload["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary files left behind


def test_missing_and_corrupt_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="torn.pt: not a readable checkpoint"):
        load_checkpoint(torn)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign.pt: not a captioning checkpoint, missing \['model'"):
        load_checkpoint(foreign)


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": Payload()}, handle)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_checkpoint_rebuilds_the_model_and_rejects_a_mismatch(tiny_run):
    path = tiny_run / "checkpoints" / "best.pt"
    payload = load_checkpoint(path)
    for key in ("model", "model_config", "vocab", "preprocess", "optimizer", "epoch", "step", "rng", "metrics", "config"):
        assert key in payload, key
    model = build_model(payload["model_config"], len(payload["vocab"]), pretrained=False)
    load_state(model, payload["model"], path)
    wrong = build_model(payload["model_config"], len(payload["vocab"]) + 3, pretrained=False)
    with pytest.raises(CheckpointError, match="best.pt: model weights do not fit"):
        load_state(wrong, payload["model"], path)


def test_a_checkpoint_cannot_name_code_to_run(tiny_run, tmp_path):
    """Evaluation rebuilds the data source from the saved config: only this package's targets may be called."""
    path = tiny_run / "checkpoints" / "best.pt"
    payload = load_checkpoint(path)
    assert checkpoint_task(path) == "image_caption"
    saved_config(payload["config"]["data"], path, "data")  # the project's own source passes
    payload["config"]["data"]["source"]["_target_"] = "os.system"
    save_checkpoint(payload, tmp_path / "doctored.pt")
    from captioning.evaluation import evaluate_checkpoint

    with pytest.raises(CheckpointError, match="doctored.pt: its saved data config names 'os.system'"):
        evaluate_checkpoint(tmp_path / "doctored.pt", split="test", data=None, decode={}, output_dir=tmp_path / "out")
