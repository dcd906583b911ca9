"""Checkpoints are written atomically, load with weights_only, and fail clearly when wrong."""
import pickle

import pytest
import torch

from captioning.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint
from captioning.data.sources import SOURCES
from captioning.models.caption_model import build_caption_model
from captioning.tasks import TASKS, checkpoint_task, read_checkpoint


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
    with pytest.raises(CheckpointError, match=r"foreign.pt: not a captioning checkpoint, missing \['format', 'task', 'model'"):
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
    for key in ("model", "model_spec", "vocab", "preprocess", "optimizer", "epoch", "step", "rng", "metrics", "config_yaml"):
        assert key in payload, key
    model = build_caption_model(payload["model_spec"], len(payload["vocab"]), pretrained=False)
    load_state(model, payload["model"], path)
    wrong = build_caption_model(payload["model_spec"], len(payload["vocab"]) + 3, pretrained=False)
    with pytest.raises(CheckpointError, match="best.pt: model weights do not fit"):
        load_state(wrong, payload["model"], path)


def test_a_checkpoint_cannot_name_code_to_run(tiny_run, tmp_path):
    """Evaluation rebuilds the data source from the checkpoint: a `_target_` anywhere outside the state dicts
    is refused on load, before anything is built, and the error names the key."""
    path = tiny_run / "checkpoints" / "best.pt"
    payload, task = read_checkpoint(path)  # the project's own checkpoint passes
    assert checkpoint_task(path) == "image_caption" and task.name == "image_caption"
    assert SOURCES.check(payload["data"]["source"], "data.source")[0] == "synthetic"  # its own data source passes
    payload["data"]["source"]["_target_"] = "os.system"
    save_checkpoint(payload, tmp_path / "doctored.pt")
    with pytest.raises(CheckpointError, match=r"doctored.pt: data.source._target_: names code to call \('os.system'\)"):
        load_checkpoint(tmp_path / "doctored.pt")
    with pytest.raises(CheckpointError, match=r"doctored.pt: data.source._target_: names code to call \('os.system'\)"):
        TASKS.get("image_caption")().evaluate_checkpoint(tmp_path / "doctored.pt", split="test", data=None, decode={},
                                                         output_dir=tmp_path / "out")
