"""DistributedDataParallel on CPU (gloo, 2 processes): same losses as one process on the same global batch."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from captioning.checkpoint import load_checkpoint, load_state
from captioning.models.caption_model import build_activity_model, build_caption_model
from captioning.tasks import train
from tests.conftest import compose_train, tiny_overrides


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, runs: list[tuple[int, list[str], str]]) -> None:
    """What torchrun sets up for each process, then the ordinary training entry point, once per run: each run its
    own process group (its own port), set up and torn down by the run."""
    os.environ.update(MASTER_ADDR="127.0.0.1", WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      TQDM_DISABLE="1")
    torch.set_num_threads(1)
    from captioning import distributed

    for port, overrides, run_dir in runs:
        os.environ["MASTER_PORT"] = str(port)
        try:
            train(compose_train(overrides, run_dir))
        finally:
            distributed.cleanup()


def run_ddp(*runs: tuple[list[str], object]) -> None:
    """Each (overrides, run_dir) as a 2-process run, one after another in the same 2 processes (each new pair of
    interpreters costs seconds)."""
    mp.spawn(_worker, args=(2, [(free_port(), overrides, str(run_dir)) for overrides, run_dir in runs]), nprocs=2,
             join=True)


def train_in_one_process(overrides: list[str], run_dir) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker process does; restored below, later tests compare exact floats
    try:
        return train(compose_train(overrides, run_dir))
    finally:
        torch.set_num_threads(threads)


def losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    steps = {row["step"]: row["loss"] for row in rows}
    assert len(steps) == len(rows), "a step was logged twice: only rank 0 may write the run folder"
    return steps


def assert_per_rank_rng(path) -> None:
    """Each rank's own RNG state is saved (ranks are seeded apart, so their torch generators differ)."""
    states = load_checkpoint(path)["rng"]
    assert isinstance(states, list) and len(states) == 2
    assert not torch.equal(states[0]["torch"], states[1]["torch"])


@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batch(tmp_path, synthetic_root):
    # frozen encoder: no batch-norm statistics that differ between a whole batch and half of it
    base = tiny_overrides(synthetic_root) + ["model.encoder.trainable=false", "train.batch_size=16", "train.epochs=3",
                                             "train.show_examples=0"]
    single = train_in_one_process(base + ["train.max_steps=6"], tmp_path / "single")
    # three independent runs in one pair of processes; the resume below starts fresh ones, as a real resume does
    run_ddp((base + ["train.max_steps=6"], tmp_path / "ddp"),
            (base + ["train.max_steps=3", "train.micro_batch=3"], tmp_path / "pieces"),
            (base + ["train.max_steps=3"], tmp_path / "stopped"))

    one, two = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert sorted(two) == list(range(1, 7))  # rank 0 alone wrote the log: one line per step
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
    # each rank's 8 captions in pieces of 3, 3 and 2 (train.micro_batch): only the last piece synchronises, the step
    # divides by the global number of words, and the update is the one of whole batches
    pieces = losses(tmp_path / "pieces")
    assert sorted(pieces) == [1, 2, 3]
    for step in pieces:
        assert pieces[step] == pytest.approx(one[step], rel=1e-5), step
    # validation decoded each half of the split on one rank, scored the whole split
    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    for name in ("loss", "BLEU-4", "CIDEr"):
        assert ddp_metrics[name] == pytest.approx(single[name], rel=1e-5, abs=1e-6), name

    # the checkpoint loads in a single process, and a DDP run resumes from it
    path = tmp_path / "ddp" / "checkpoints" / "last.pt"
    payload = load_checkpoint(path)
    load_state(build_caption_model(payload["model_spec"], len(payload["vocab"]), pretrained=False), payload["model"],
               path)
    assert_per_rank_rng(path)
    assert_per_rank_rng(tmp_path / "stopped" / "checkpoints" / "last.pt")
    run_ddp((base + ["train.max_steps=6", f"train.resume={tmp_path / 'stopped/checkpoints/last.pt'}"],
             tmp_path / "resumed"))
    resumed = losses(tmp_path / "resumed")
    assert sorted(resumed) == [4, 5, 6]
    for step in resumed:
        assert resumed[step] == pytest.approx(one[step], rel=1e-5), step


@pytest.mark.slow
def test_clip_task_two_processes_match_one(tmp_path):
    """task=activity under DDP: the same per-step losses and validation as one process on the same global batch."""
    # frozen frame CNN and no input batch norm in the clip LSTM: every clip's loss is independent of its batch,
    # so a whole batch and its two halves give the same gradients
    base = ["task=activity", f"data.source.root={tmp_path / 'clips'}", "data.source.num_train=48",
            "data.source.num_val=18", "data.source.num_test=4", "data.frames=4", "model.encoder.trainable=false",
            "model.temporal.input_norm=false", "model.temporal.hidden_size=16", "train.batch_size=16",
            "train.epochs=2", "train.show_examples=0"]
    single = train_in_one_process(base, tmp_path / "single")
    run_ddp((base, tmp_path / "ddp"))

    one, two = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert sorted(one) == sorted(two) == list(range(1, 7))  # 3 global batches per epoch, rank 0 alone wrote the log
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
    # each rank classified its half of the validation clips; the metrics cover them all
    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp_metrics["accuracy"] == single["accuracy"]
    assert ddp_metrics["loss"] == pytest.approx(single["loss"], rel=1e-5)
    written = sorted(path.name for path in (tmp_path / "ddp").iterdir())
    assert written == sorted(path.name for path in (tmp_path / "single").iterdir())  # the same run folder, once

    path = tmp_path / "ddp" / "checkpoints" / "last.pt"
    payload = load_checkpoint(path)
    assert payload["task"] == "activity" and payload["step"] == 6
    load_state(build_activity_model(payload["model_spec"], len(payload["classes"]), pretrained=False),
               payload["model"], path)
    assert_per_rank_rng(path)
    assert len(load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["rng"]) == 1


def test_global_batch_must_divide_among_processes():
    from captioning.data.sampler import EpochSampler

    with pytest.raises(ValueError, match="batch_size=15"):
        EpochSampler([5] * 10, batch_size=15, rank=0, world_size=2)
    shards = [list(EpochSampler([1] * 10, "pairs", batch_size=4, rank=r, world_size=2)) for r in (0, 1)]
    whole = list(EpochSampler([1] * 10, "pairs"))
    assert shards[0] + shards[1] != whole and sorted(shards[0] + shards[1]) == sorted(whole[:8])  # last partial batch dropped
    assert shards[0][:2] + shards[1][:2] == whole[:4]  # together the ranks hold the first global batch
