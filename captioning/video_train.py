"""`train_activity(cfg)` and `train_video_caption(cfg)`: the LRCN runs behind `task=activity|video_caption`.

Each reads clips, builds its model and batches, and hands them to `video_loop.fit`. With a frozen
frame encoder every clip's per-frame features are computed once per run, not once per epoch.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from captioning.checkpoint import load_checkpoint, load_state
from captioning.data.clip_dataset import (LabelledClips, cache_frame_features, collate_captioned_clips,
                                          collate_labelled_clips)
from captioning.data.clip_sources import check_labels
from captioning.data.clips import ClipLoader, ClipRecord, check_clips
from captioning.data.dataset import CaptionDataset, EpochSampler, augments, build_transform
from captioning.data.records import DataError, clean_captions
from captioning.engine import VALIDATION_METRICS, caption_batch_loss, greedy_captions, validate
from captioning.models.video import TimeDistributed, build_activity_model, build_video_caption_model
from captioning.train import resolve_amp, resolve_device, seed_everything
from captioning.video_engine import ACTIVITY_METRICS, activity_loss, activity_metrics, predict_activities
from captioning.video_evaluation import evaluate_activity, evaluate_video_captions
from captioning.video_loop import Run, fit
from captioning.vocab import Vocabulary

log = logging.getLogger(__name__)


def start(cfg: DictConfig) -> tuple[torch.device, torch.dtype | None, dict | None]:
    """Seed, make the run folder, save the resolved config; -> device, AMP dtype, the checkpoint to resume."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by torchrun
        raise RuntimeError("clip tasks train in one process: launch without torchrun (multi-GPU DDP is for "
                           "task=image_caption)")
    seed_everything(cfg.seed)
    run_dir = Path(cfg.run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    device = resolve_device(cfg.train.device)
    return device, resolve_amp(cfg.train.amp, device), load_checkpoint(cfg.train.resume) if cfg.train.resume else None


def load_clip_splits(data_cfg: DictConfig) -> dict[str, list[ClipRecord]]:
    """Read the configured clip source and open every train/val clip now (`data.on_bad_image` decides)."""
    if augments(data_cfg.get("augment")):
        raise ValueError("data.augment is not supported for clips (per-frame random transforms would break motion)")
    if data_cfg.get("features"):
        raise ValueError("data.features (image feature stores) is not supported for clips; "
                         "a frozen frame encoder's features are computed once per run instead")
    splits = instantiate(data_cfg.source, _convert_="all")
    for split in ("train", "val"):
        if not splits.get(split):
            raise DataError(f"data: the source gives no '{split}' clips")
        if data_cfg.verify_images != "none":
            splits[split] = check_clips(splits[split], data_cfg.on_bad_image, full=data_cfg.verify_images == "full",
                                        desc=f"checking {split} clips")
    return splits


def clip_inputs(splits: dict[str, list[ClipRecord]], encoder: TimeDistributed, data_cfg: DictConfig, batch_size: int,
                device: torch.device) -> tuple[dict[str, Callable[[int], tuple]], bool]:
    """Per train/val split, `index -> (frames or features, mask)`; the flag is True for cached features."""
    transform = build_transform(encoder.preprocess)
    keep = bool(data_cfg.keep_in_memory) and encoder.trainable
    loaders = {split: ClipLoader(splits[split], data_cfg.frames, transform, keep=keep) for split in ("train", "val")}
    if encoder.trainable:
        return loaders, False
    return {split: cache_frame_features(encoder, loaders[split], len(splits[split]), batch_size=batch_size, device=device,
                                        num_workers=data_cfg.num_workers, desc=f"encoding {split} clips")
            for split in loaders}, True


def make_loader(dataset, sampler, batch_size: int, collate_fn, data_cfg: DictConfig, device: torch.device) -> DataLoader:
    pin = device.type == "cuda" if data_cfg.pin_memory == "auto" else bool(data_cfg.pin_memory)
    # An explicit generator keeps DataLoader start-up from consuming the global RNG, so resumes are exact.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, pin_memory=pin,
                      num_workers=data_cfg.num_workers, generator=torch.Generator())


def in_order(count: int) -> list[tuple[int, int]]:
    return [(index, 0) for index in range(count)]


def train_activity(cfg: DictConfig) -> dict:
    """Train an LRCN activity classifier; returns the final validation metrics plus `select`."""
    device, amp_dtype, resume = start(cfg)
    splits = load_clip_splits(cfg.data)
    classes = check_labels(splits, resume["classes"] if resume is not None else None)
    log.info("%d classes: %s", len(classes), ", ".join(classes))
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model = build_activity_model(model_config, len(classes), pretrained=resume is None).to(device)
    pretrained = [model.encoder]
    if cfg.train.init_from and resume is None:
        transfer_clip_encoder(model.encoder, model.head.temporal, cfg.train.init_from)
        pretrained.append(model.head.temporal)
    inputs, cached = clip_inputs(splits, model.encoder, cfg.data, cfg.train.batch_size, device)

    sets = {split: LabelledClips(splits[split], classes, inputs[split]) for split in ("train", "val")}
    sampler = EpochSampler([1] * len(sets["train"]), "random_caption", shuffle=True, seed=cfg.seed)
    train_loader = make_loader(sets["train"], sampler, cfg.train.batch_size, collate_labelled_clips, cfg.data, device)
    val_loader = make_loader(sets["val"], in_order(len(sets["val"])), cfg.train.batch_size, collate_labelled_clips,
                             cfg.data, device)
    val_ids = [record.clip_id for record in splits["val"]]

    def validate_activity() -> tuple[dict, str]:
        predicted, target, loss = predict_activities(model, val_loader, device, cached=cached, amp_dtype=amp_dtype)
        examples = "\n\n".join(f"`{val_ids[i]}`: {classes[predicted[i]]} (true: {classes[target[i]]})"
                               for i in range(min(5, len(val_ids))))
        return activity_metrics(predicted, target, loss, classes), examples

    run = Run(model, sampler, train_loader, activity_loss(model, cached), validate_activity, ACTIVITY_METRICS,
              rebuild={"model_config": model_config, "classes": classes, "vocab": None, "frames": cfg.data.frames,
                       "task": "activity"},
              summary=lambda m: f"val loss {m['loss']:.3f} | top-1 {m['accuracy']:.1f}% | "
                                f"mean class {m['mean_class_accuracy']:.1f}%", pretrained=pretrained)
    result = fit(cfg, run, device, amp_dtype, resume)
    if cfg.train.evaluate_test and splits.get("test"):
        evaluate_test_split(cfg, result, evaluate_activity)
    return result


def train_video_caption(cfg: DictConfig) -> dict:
    """Train an LRCN clip captioner; returns the final validation metrics (loss, BLEU-1..4, CIDEr) plus `select`."""
    device, amp_dtype, resume = start(cfg)
    splits = load_clip_splits(cfg.data)
    splits = {split: clean_captions(records, f"{split} captions", cfg.data.on_bad_caption)
              for split, records in splits.items()}
    for split in ("train", "val"):
        if not splits[split]:
            raise DataError(f"data: no {split} clip has a caption; give the split an `annotations` JSON")
    if resume is not None:
        vocab = Vocabulary(resume["vocab"])  # the resumed run keeps the vocabulary its weights were trained with
    else:
        vocab = Vocabulary.build((c for r in splits["train"] for c in r.captions), cfg.vocab.min_count)
    vocab.save(Path(cfg.run_dir) / "vocab.json")
    log.info("vocabulary: %d words (min_count=%d, train split only)", len(vocab), cfg.vocab.min_count)
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model = build_video_caption_model(model_config, len(vocab), pretrained=resume is None).to(device)
    pretrained = [model.encoder]
    if cfg.train.init_from and resume is None:
        transfer_clip_encoder(model.encoder, model.decoder.temporal, cfg.train.init_from)
        pretrained.append(model.decoder.temporal)
    inputs, cached = clip_inputs(splits, model.encoder, cfg.data, cfg.train.batch_size, device)

    sets = {split: CaptionDataset(splits[split], vocab, cfg.vocab.max_length, inputs[split]) for split in ("train", "val")}
    sampler = EpochSampler([len(r.captions) for r in splits["train"]], cfg.data.sampling, shuffle=True, seed=cfg.seed,
                           batch_size=cfg.train.batch_size, lengths=sets["train"].caption_lengths(),
                           bucket=cfg.train.bucket_pool)
    loader = lambda dataset, order: make_loader(dataset, order, cfg.train.batch_size, collate_captioned_clips,  # noqa: E731
                                                cfg.data, device)
    train_loader = loader(sets["train"], sampler)
    val_loss_loader = loader(sets["val"], EpochSampler([len(r.captions) for r in splits["val"]], "pairs", shuffle=False))
    val_caption_loader = loader(sets["val"], in_order(len(sets["val"])))
    references = [record.captions for record in splits["val"]]

    def validate_captions() -> tuple[dict, str]:
        metrics, captions = validate(model, val_loss_loader, val_caption_loader, references, vocab, device,
                                     cached=cached, max_length=cfg.vocab.max_length + 1, amp_dtype=amp_dtype)
        return metrics, "\n\n".join(f"`{' '.join(captions[i])}` (ref: {references[i][0]})"
                                    for i in range(min(5, len(captions))))

    run = Run(model, sampler, train_loader, caption_batch_loss(model, cached), validate_captions, VALIDATION_METRICS,
              rebuild={"model_config": model_config, "vocab": vocab.to_json(), "max_length": cfg.vocab.max_length,
                       "frames": cfg.data.frames, "task": "video_caption"},
              summary=lambda m: f"val loss {m['loss']:.3f} | BLEU-1 {m['BLEU-1']:.1f} BLEU-4 {m['BLEU-4']:.1f} "
                                f"CIDEr {m['CIDEr']:.1f}", pretrained=pretrained)
    result = fit(cfg, run, device, amp_dtype, resume)
    if cfg.train.show_examples and splits.get("test"):
        show_examples(model, splits["test"][: cfg.train.show_examples], vocab, cfg.data.frames, device,
                      cfg.vocab.max_length + 1)
    if cfg.train.evaluate_test and splits.get("test"):
        evaluate_test_split(cfg, result, evaluate_video_captions, decode=OmegaConf.to_container(cfg.decode, resolve=True))
    return result


def evaluate_test_split(cfg: DictConfig, result: dict, evaluate: Callable[..., dict], **options) -> None:
    """`train.evaluate_test`: score best.pt on the test split into run_dir/test/ and add it to metrics.json."""
    run_dir = Path(cfg.run_dir)
    report = evaluate(run_dir / "checkpoints" / "best.pt", split="test", data=None, output_dir=run_dir / "test",
                      device=cfg.train.device, **options)
    print(report["summary"])
    result["test"] = {name: value for name, value in report["metrics"].items() if not isinstance(value, list)}
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2))


def transfer_clip_encoder(encoder: torch.nn.Module, temporal: torch.nn.Module, path: str | Path) -> None:
    """`train.init_from` for clips: the frame CNN and clip LSTM of an activity or description checkpoint start
    this model (same encoder and temporal config); its classifier or caption decoder starts from scratch."""
    payload = load_checkpoint(path)
    state = payload["model"]
    prefix = "head.temporal." if any(key.startswith("head.temporal.") for key in state) else "decoder.temporal."
    load_state(encoder, {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}, path,
               what="frame encoder")
    load_state(temporal, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, path, what="clip LSTM")
    log.info("frame encoder and clip LSTM start from %s (task %s)", path, payload.get("task"))


def show_examples(model, records: list[ClipRecord], vocab: Vocabulary, T: int, device: torch.device,
                  max_length: int) -> None:
    """Greedy captions for a few held-out clips, printed as `path<TAB>caption`."""
    clips = ClipLoader(records, T, build_transform(model.encoder.preprocess))
    loader = DataLoader(CaptionDataset(records, vocab, max_length, clips), batch_size=len(records),
                        sampler=in_order(len(records)), collate_fn=collate_captioned_clips)
    captions = greedy_captions(model, loader, vocab, device, cached=False, max_length=max_length, desc="test examples")
    print("captions of held-out test clips (greedy):")
    for index, record in enumerate(records):
        print(f"{record.path}\t{' '.join(captions[index])}")
