"""Training end to end: outputs, exact resume, feature caching, every data source, and the learning result."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from captioning.checkpoint import load_checkpoint, load_state
from captioning.data.datasets import CaptionDataset, ImageLoader, collate
from captioning.data.sources import read_source
from captioning.data.transforms import build_transform
from captioning.models.caption_model import build_caption_model
from captioning.tasks import train
from captioning.training.validation import bleu_of, greedy_captions
from captioning.vocab import Vocabulary
from tests.conftest import FLICKR, compose_train, tiny_overrides
from tests.test_data_sources import write_coco, write_images


def losses(run_dir):
    return {row["step"]: row["loss"] for row in map(json.loads, (run_dir / "steps.jsonl").read_text().splitlines())}


def test_run_folder_contents(tiny_run):
    for name in ("checkpoints/best.pt", "checkpoints/last.pt", "vocab.json", "metrics.json", "config.yaml", "steps.jsonl"):
        assert (tiny_run / name).is_file(), name
    assert list((tiny_run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert {"loss", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"} <= set(metrics)
    steps = losses(tiny_run)
    assert steps[max(steps)] < steps[1]  # it learned something in two epochs


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(tmp_path, synthetic_root):
    """Stop mid-epoch, resume from last.pt: the remaining losses equal those of a run never stopped."""
    base = tiny_overrides(synthetic_root) + ["model.decoder.dropout=0.3", "train.epochs=5",  # dropout: RNG must be restored
                                             "train.bucket_pool=3"]  # the length-bucketed order must be restored too
    train(compose_train(base + ["train.max_steps=12"], tmp_path / "straight"))
    train(compose_train(base + ["train.max_steps=5"], tmp_path / "stopped"))
    resumed = compose_train(base + ["train.max_steps=12", f"train.resume={tmp_path / 'stopped/checkpoints/last.pt'}"],
                            tmp_path / "resumed")
    train(resumed)
    straight, after = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(after) == list(range(6, 13))  # 8 batches per epoch: resumes inside epoch 1, crosses into epoch 2
    for step in after:
        assert after[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6), step


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["lstm", "soft_attention"])
def test_frozen_encoder_features_are_computed_once_per_run(tmp_path, synthetic_root, monkeypatch, decoder):
    from captioning.models import encoders

    calls = {"images": 0}
    original = encoders.ImageEncoder.forward

    def counting(self, images):
        calls["images"] += images.size(0)
        return original(self, images)

    monkeypatch.setattr(encoders.ImageEncoder, "forward", counting)
    # soft_attention: the cache holds grids; batches of 64 captions: what is counted is images, fewer steps do
    tiny = tiny_overrides(synthetic_root) + [f"model/decoder={decoder}", "train.batch_size=64"]
    cfg = compose_train(tiny + ["model.encoder.trainable=false", "train.epochs=2", "train.show_examples=0"], tmp_path)
    metrics = train(cfg)
    assert calls["images"] == 120 + 24 and metrics["step"] > 0  # every train and val image once, not once per epoch
    calls["images"] = 0
    train(compose_train(tiny + ["train.epochs=2", "train.show_examples=0"], tmp_path / "tuned"))
    assert calls["images"] >= 2 * 120  # a trainable encoder sees the images every epoch


@pytest.mark.slow
@pytest.mark.parametrize("image_input", ["first_step"])
def test_first_step_image_input_trains(tmp_path, synthetic_root, image_input):
    cfg = compose_train(tiny_overrides(synthetic_root) + [f"model.decoder.image_input={image_input}", "train.epochs=8",
                                                          "optim.lr=0.003"], tmp_path)
    metrics = train(cfg)
    uniform = np.log(len(json.loads((tmp_path / "vocab.json").read_text())))
    assert metrics["loss"] < 0.6 * uniform, (metrics["loss"], uniform)  # well below guessing words uniformly


@pytest.mark.slow
def test_coco_and_karpathy_sources_train(tmp_path):
    names = {i: f"COCO_val2014_{i:012d}.jpg" for i in range(1, 13)}
    write_images(tmp_path / "images", names.values())
    captions = {i: [f"a picture number {i % 3}", "a small picture"] for i in names}
    train_ids, val_ids = list(names)[:8], list(names)[8:]
    write_coco(tmp_path / "train.json", {i: names[i] for i in train_ids}, {i: captions[i] for i in train_ids})
    write_coco(tmp_path / "val.json", {i: names[i] for i in val_ids}, {i: captions[i] for i in val_ids})
    small = ["train.max_steps=2", "train.batch_size=4", "model.decoder.hidden_size=16", "model.decoder.embed_size=16",
             "vocab.min_count=1"]
    coco = compose_train(["data=coco", f"data.train.annotations={tmp_path / 'train.json'}",
                          f"data.train.images={tmp_path / 'images'}", f"data.val.annotations={tmp_path / 'val.json'}",
                          f"data.val.images={tmp_path / 'images'}"] + small, tmp_path / "coco-run")
    train(coco)
    assert (tmp_path / "coco-run" / "checkpoints" / "last.pt").is_file()

    karpathy = {"images": [{"filepath": "images", "filename": names[i], "cocoid": i,
                            "split": "train" if i in train_ids else "val",
                            "sentences": [{"raw": c} for c in captions[i]]} for i in names]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(karpathy))
    train(compose_train(["data=karpathy", f"data.dataset_json={tmp_path / 'dataset_coco.json'}",
                         f"data.image_root={tmp_path}"] + small, tmp_path / "karpathy-run"))
    assert (tmp_path / "karpathy-run" / "checkpoints" / "last.pt").is_file()


def test_missing_mandatory_key_is_named(tmp_path):
    from captioning.config import OptionError

    with pytest.raises(OptionError, match="Missing mandatory value: data.captions_file"):
        train(compose_train(["data=flickr"], tmp_path))


@pytest.mark.parametrize("override, message", [("train.amp=fast", "train.amp"), ("data.sampling=all", "data.sampling"),
                                               ("data.on_bad_image=ignore", "data.on_bad_image"),
                                               ("train.bucket_pool=-1", "train.bucket_pool")])
def test_wrong_config_values_are_named(tmp_path, synthetic_root, override, message):
    with pytest.raises(ValueError, match=message):
        train(compose_train(tiny_overrides(synthetic_root) + [override], tmp_path))


@pytest.mark.slow
@pytest.mark.skipif(not (FLICKR / "captions.txt").is_file(), reason="../shared/data/flickr8k-1k is absent")
def test_real_flickr_images_train(tmp_path):
    cfg = compose_train(["data=flickr", f"data.captions_file={FLICKR / 'captions.txt'}",
                         f"data.image_dir={FLICKR / 'images'}", f"data.split_file={FLICKR / 'split.json'}",
                         "train.max_steps=3", "train.batch_size=16", "data.verify_images=header"], tmp_path)
    metrics = train(cfg)
    assert (tmp_path / "checkpoints" / "best.pt").is_file() and metrics["step"] == 3
    assert len(json.loads((tmp_path / "vocab.json").read_text())) > 100


def decoded_bleu(model, vocab, records, load_input):
    loader = DataLoader(CaptionDataset(records, vocab, 20, load_input), batch_size=50,
                        sampler=[(i, 0) for i in range(len(records))], collate_fn=collate)
    captions = greedy_captions(model, loader, vocab, torch.device("cpu"), cached=False, max_tokens=21)
    return bleu_of(captions, [r.captions for r in records])["BLEU-4"]


def test_learning_result_image_drives_the_caption(learned_run):
    """Acceptance (1): val BLEU-4 >= 50, and >= 25 points lower when every val image is noise."""
    path = learned_run / "checkpoints" / "best.pt"
    payload = load_checkpoint(path)
    vocab = Vocabulary(payload["vocab"])
    model = build_caption_model(payload["model_spec"], len(vocab), pretrained=False)
    load_state(model, payload["model"], path)
    model.eval()
    records = read_source(payload["data"]["source"])["val"]
    transform = build_transform(payload["preprocess"])
    real = decoded_bleu(model, vocab, records, ImageLoader(records, transform))
    rng = np.random.default_rng(0)
    size = payload["preprocess"]["input_size"]
    noise_images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in records]
    noise = decoded_bleu(model, vocab, records, lambda i: transform(noise_images[i]))
    assert real >= 50, real
    assert real - noise >= 25, (real, noise)
    assert json.loads((learned_run / "metrics.json").read_text())["BLEU-4"] >= 50


class SkippingScaler:
    """A GradScaler stand-in whose first `skips` steps overflow: the optimizer step is skipped and the scale drops."""

    def __init__(self, skips: int):
        self.scale_value, self.skips, self.skipped = 2.0 ** 16, skips, False

    def scale(self, loss):
        return loss * self.scale_value

    def unscale_(self, optimizer):
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad /= self.scale_value

    def get_scale(self) -> float:
        return self.scale_value

    def step(self, optimizer):
        self.skipped = self.skips > 0
        if self.skipped:
            self.skips -= 1  # inf/NaN gradients: GradScaler leaves the parameters as they are
        else:
            optimizer.step()

    def update(self):
        if self.skipped:
            self.scale_value /= 2


def test_scheduler_does_not_step_when_the_optimizer_step_was_skipped():
    from captioning.training.loop import train_one_epoch

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)  # per-step schedule
    batches = [{"x": torch.randn(4, 3), "y": torch.randn(4, 1)} for _ in range(3)]
    seen = []  # (scheduler position, weights) after each step

    def loss_fn(batch):
        return (model(batch["x"]) - batch["y"]).square().sum(), batch["y"].numel()

    start = model.weight.detach().clone()
    step, stopped = train_one_epoch(model, batches, optimizer, torch.device("cpu"), loss_fn, step=0, max_steps=None,
                                    scaler=SkippingScaler(skips=1), scheduler=scheduler, grad_clip=None,
                                    on_step=lambda s, loss: seen.append((scheduler.last_epoch,
                                                                         model.weight.detach().clone())))
    assert (step, stopped) == (3, False)
    assert torch.equal(seen[0][1], start)  # step 1 overflowed: no update ...
    assert seen[0][0] == 0  # ... and the schedule stayed where it was
    assert not torch.equal(seen[1][1], start) and [s for s, _ in seen[1:]] == [1, 2]  # normal steps advance it


def test_loss_selects_the_epoch_with_the_lowest_validation_loss(tmp_path, synthetic_root, tiny_run):
    """train.select_metric=loss: lower is better, so best.pt is the epoch of least validation loss."""
    cfg = compose_train(tiny_overrides(synthetic_root) + ["train.select_metric=loss", "train.epochs=3",
                                                          "model.encoder.trainable=false", "train.show_examples=0"],
                        tmp_path)
    result = train(cfg)
    history = [json.loads(line) for line in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    lowest = min(history, key=lambda row: row["loss"])
    highest = max(history, key=lambda row: row["loss"])
    assert lowest["epoch"] != highest["epoch"]  # otherwise the direction would not matter
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == lowest["epoch"] and best["metrics"]["loss"] == lowest["loss"]
    assert result["select_metric"] == "loss" and result["select"] == lowest["loss"]
    # the default (BLEU-4) is a metric where higher is better
    history = [json.loads(line) for line in (tiny_run / "validation.jsonl").read_text().splitlines()]
    best = load_checkpoint(tiny_run / "checkpoints" / "best.pt")
    assert best["metrics"]["BLEU-4"] == max(row["BLEU-4"] for row in history)


def test_select_mode_is_no_longer_a_key(synthetic_root):
    """The direction comes from the metric; a leftover train.select_mode override stops composition."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="select_mode"):
        compose_train(tiny_overrides(synthetic_root) + ["train.select_mode=max"])


def test_images_kept_in_memory_are_read_once_and_train_the_same_steps(tmp_path, synthetic_root, monkeypatch):
    """data.keep_in_memory (on for the built-in shapes): each training image decoded once, the same losses."""
    from captioning.data import datasets

    reads = []
    original = datasets.load_rgb
    monkeypatch.setattr(datasets, "load_rgb", lambda path, *a: reads.append(path) or original(path, *a))
    overrides = tiny_overrides(synthetic_root) + ["train.epochs=2", "train.show_examples=0", "data.sampling=pairs",
                                                  "data.source.num_train=24", "data.source.num_val=8", "train.batch_size=8"]
    runs = {}
    for keep in (False, True):
        reads.clear()
        runs[keep] = tmp_path / str(keep)
        train(compose_train(overrides + [f"data.keep_in_memory={str(keep).lower()}"], runs[keep]))
        train_reads = [p for p in reads if "train_" in Path(p).name]
        assert len(train_reads) == (24 if keep else 2 * 24 * 5)  # 2 epochs of every (image, caption) pair
    assert losses(runs[True]) == losses(runs[False]) and len(losses(runs[True])) > 0
