"""LRCN runs end to end: the acceptance numbers, run outputs, exact resume, evaluation, captioning clips, the scripts."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose as hydra_compose, initialize_config_dir
from omegaconf import OmegaConf

from captioning.checkpoint import CheckpointError
from captioning.commands.caption import main as caption_main
from captioning.data.sources import read_source
from captioning.tasks import TASKS, caption, evaluate, train
from tests.conftest import CONF, ROOT, compose_train

DECODE = {"beam_size": 3, "n_best": 1, "max_words": None, "min_words": 0, "length_penalty": "none", "alpha": 0.7,
          "forbid_unk": False}


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory):
    return tmp_path_factory.mktemp("clip-cache")


def small(clip_root) -> list[str]:
    """The built-in clips, fewer of them (generated once per module), in smaller batches: seconds on two cores."""
    return [f"data.source.root={clip_root}", "data.source.num_train=600", "data.source.num_val=100",
            "data.source.num_test=40", "train.batch_size=16", "train.show_examples=0"]


def losses(run_dir):
    return {row["step"]: row["loss"] for row in map(json.loads, (run_dir / "steps.jsonl").read_text().splitlines())}


def caption_report(run_dir, output_dir):
    """Beam-search the val clips with best.pt -> (report, % of captions naming the true direction)."""
    report = TASKS.get("video_caption")().evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", split="val",
                                                              data=None, output_dir=output_dir, decode=DECODE,
                                                              java=None, spice=False)
    labels = {r.clip_id: r.label for r in read_source(OmegaConf.load(run_dir / "config.yaml").data.source)["val"]}
    captions = json.loads((output_dir / "results.json").read_text())
    named = [item["caption"].split()[-1] == labels[item["image_id"]] for item in captions]
    return report, 100.0 * sum(named) / len(named)


@pytest.fixture(scope="module")
def activity_run(tmp_path_factory, clip_root):
    run_dir = tmp_path_factory.mktemp("activity-run")
    metrics = train(compose_train(["task=activity"] + small(clip_root) + ["train.epochs=4"], run_dir))
    return run_dir, metrics


@pytest.mark.slow
def test_cnn_lstm_recognises_the_direction(activity_run, tmp_path):
    """Acceptance: >= 95% top-1 on held-out clips; evaluation writes the confusion matrix."""
    run_dir, metrics = activity_run
    assert metrics["accuracy"] >= 95, metrics
    for name in ("checkpoints/best.pt", "checkpoints/last.pt", "metrics.json", "config.yaml", "steps.jsonl", "curves.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    report = TASKS.get("activity")().evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", split="test", data=None,
                                                         output_dir=tmp_path)
    assert report["metrics"]["accuracy"] >= 90 and np.array(report["metrics"]["confusion"]).sum() == 40
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 41


@pytest.mark.slow
def test_one_frame_cannot_beat_chance(tmp_path, clip_root):
    """Acceptance: the same model shown one frame per clip stays at chance (4 classes: 25%)."""
    metrics = train(compose_train(["task=activity", "data.frames=1"] + small(clip_root) + ["train.epochs=4"], tmp_path))
    history = [json.loads(line)["accuracy"] for line in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert max(history) <= 40, history  # 100 val clips: 40% is 3.5 standard deviations above chance
    assert metrics["loss"] > 1.3  # and its validation loss never leaves ln(4) = 1.39


@pytest.mark.slow
def test_video_description_bleu(tmp_path, clip_root):
    """Acceptance: validation BLEU-4 >= 40, trained from scratch (4 of the 8 frames per clip, to stay quick)."""
    metrics = train(compose_train(["task=video_caption"] + small(clip_root) + [
        "data.frames=4", "optim.lr=2e-3", "train.epochs=8"], tmp_path / "run"))
    assert metrics["select"] >= 40, metrics  # BLEU-4 of best.pt on the validation clips (greedy)
    report, _ = caption_report(tmp_path / "run", tmp_path / "eval")
    assert report["nltk_bleu"]["BLEU-4"] >= 35 and report["data"]["images"] == 100  # beam 3, same clips


@pytest.mark.slow
def test_description_from_the_activity_model_names_the_direction(activity_run, tmp_path, clip_root, monkeypatch,
                                                                  capsys):
    """The activity model's frame CNN (frozen: its features are computed once per run) and clip LSTM start the
    captioner; its captions then say where the shape goes, which a captioner trained from scratch on this
    budget does not learn (its direction words stay at chance)."""
    from captioning.models import encoders

    frames = {"count": 0}
    original = encoders.ImageEncoder.forward

    def counting(self, images):
        frames["count"] += images.size(0)
        return original(self, images)

    monkeypatch.setattr(encoders.ImageEncoder, "forward", counting)
    run_dir = tmp_path / "run"
    metrics = train(compose_train(["task=video_caption"] + small(clip_root) + [
        f"train.init_from={activity_run[0] / 'checkpoints' / 'best.pt'}", "model.temporal.pooling=mean",
        "model.encoder.trainable=false", "train.encoder_lr=3e-4", "train.epochs=6"], run_dir))
    assert metrics["epoch"] == 6 and frames["count"] == (600 + 100) * 8  # every frame once, not once per epoch
    monkeypatch.setattr(encoders.ImageEncoder, "forward", original)
    report, direction = caption_report(run_dir, tmp_path / "eval")
    assert direction >= 90, (direction, report["nltk_bleu"])

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    records = read_source(OmegaConf.load(run_dir / "config.yaml").data.source)["test"][:3]
    results = caption(OmegaConf.create({"checkpoint": str(run_dir / "checkpoints" / "best.pt"),
                                        "images": [str(r.path) for r in records] + [str(bad)], "batch_size": 2,
                                        "device": "cpu", "output": None, "decode": DECODE}))
    assert "broken.mp4: not a readable video" in capsys.readouterr().err
    assert [r["clip"] for r in results] == [str(r.path) for r in records]
    assert sum(result["caption"].endswith(record.label) for result, record in zip(results, records, strict=True)) >= 2


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(tmp_path, clip_root):
    base = ["task=activity"] + small(clip_root) + ["data.frames=2", "model.temporal.dropout=0.3", "train.batch_size=128",
                                                   "train.epochs=3"]  # dropout: the RNG state must be restored too
    train(compose_train(base + ["train.max_steps=7"], tmp_path / "straight"))
    train(compose_train(base + ["train.max_steps=3"], tmp_path / "stopped"))
    train(compose_train(base + ["train.max_steps=7", f"train.resume={tmp_path / 'stopped/checkpoints/last.pt'}"],
                        tmp_path / "resumed"))
    straight, after = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(after) == [4, 5, 6, 7]  # 5 batches per epoch: resumes inside epoch 1, crosses into epoch 2
    for step in after:
        assert after[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6), step


@pytest.mark.slow
def test_scripts_run_every_task(tmp_path, clip_root, capsys):
    """`scripts/train.py task=...` dispatches through conf/task; scripts/evaluate.py and caption.py follow the checkpoint's task."""
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "task=activity", f"hydra.run.dir={tmp_path / 'activity'}",
               "train.max_steps=2", "train.epochs=1", "train.evaluate_test=true"]
    subprocess.run(command + small(clip_root), check=True, capture_output=True, cwd=ROOT,
                   env={**os.environ, "TQDM_DISABLE": "1"})
    cfg = compose_train(["task=video_caption", "train.max_steps=2", "train.epochs=1"] + small(clip_root),
                        tmp_path / "video_caption")
    train(cfg)  # what scripts/train.py does with it
    for task in ("activity", "video_caption"):
        assert torch.load(tmp_path / task / "checkpoints" / "last.pt", weights_only=True)["task"] == task
    assert "accuracy" in json.loads((tmp_path / "activity" / "metrics.json").read_text())["test"]  # train.evaluate_test
    assert (tmp_path / "activity" / "test" / "confusion.png").is_file()
    for task, expected in (("activity", "top-1 accuracy"), ("video_caption", "BLEU-4")):
        cfg = compose("evaluate", [f"checkpoint={tmp_path / task / 'checkpoints' / 'last.pt'}", "max_images=8",
                                   f"output_dir={tmp_path / 'eval' / task}", "java=none"])
        report = evaluate(cfg)  # what scripts/evaluate.py prints
        assert report["task"] == task and expected in report["summary"]
    assert (tmp_path / "eval" / "activity" / "confusion.png").is_file()
    source = OmegaConf.load(tmp_path / "video_caption" / "config.yaml").data.source
    clips = [str(r.path) for r in read_source(source)["test"][:2]]
    capsys.readouterr()
    caption_main(compose("caption", [f"checkpoint={tmp_path / 'video_caption' / 'checkpoints' / 'last.pt'}",
                                     f"images=[{','.join(clips)}]", "device=cpu"]))  # scripts/caption.py's own `main`
    captions = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in captions] == clips  # scripts/caption.py reads clips for this checkpoint
    with pytest.raises(CheckpointError, match="writes no captions"):
        caption(compose("caption", [f"checkpoint={tmp_path / 'activity' / 'checkpoints' / 'last.pt'}", "images=x"]))
    assert (tmp_path / "eval" / "video_caption" / "results.json").is_file()


def compose(config_name: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return hydra_compose(config_name, overrides=overrides)
