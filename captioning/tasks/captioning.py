"""Captioning tasks: images (Show and Tell) and clips (LRCN video description), one class over an input strategy."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from captioning import distributed
from captioning.data.batches import Features
from captioning.data.datasets import CaptionDataset
from captioning.data.encoding import cache_features
from captioning.data.feature_rows import StoreRows, item_reader
from captioning.data.features import FeatureStore, extract_features
from captioning.data.inputs import ClipInputs, ImageInputs
from captioning.data.loading import image_options, make_loader
from captioning.data.records import clean_captions
from captioning.data.regions import region_encoder
from captioning.data.sampler import EpochSampler
from captioning.data.sources import read_source
from captioning.data.tensor_batches import TensorBatches
from captioning.data.transforms import augments, build_transform
from captioning.inference.attention_maps import map_writer, validation_maps
from captioning.inference.captioner import Captioner, check_caption_payload, check_decode_limits
from captioning.inference.paths import caption_paths
from captioning.inference.scoring import evaluate_checkpoints
from captioning.models.caption_model import build_caption_model
from captioning.registry import plain
from captioning.tasks.base import (
    TASKS,
    Task,
    data_extras,
    encoder_extras,
    inherit_encoder_identity,
    part_prefixes,
    shared_parts,
    slow_parts,
    warm_start,
)
from captioning.training.loop import TaskRun
from captioning.training.run_log import RunLog
from captioning.training.scheduled_sampling import CrossEntropy, schedule_of
from captioning.training.scst import self_critical
from captioning.training.validation import CAPTION_METRICS, greedy_captions, validate
from captioning.vocab import Vocabulary, check_vocabulary

log = logging.getLogger(__name__)


def in_order(count: int) -> list[tuple[int, int]]:
    return [(index, 0) for index in range(count)]


def summary_line(metrics: dict) -> str:
    return (f"val loss {metrics['loss']:.3f} | BLEU-1 {metrics['BLEU-1']:.1f} BLEU-4 {metrics['BLEU-4']:.1f} "
            f"CIDEr {metrics['CIDEr']:.1f}")


class CaptionTask(Task):
    metrics = CAPTION_METRICS
    objectives = ("xe", "scst")
    label_part = "decoder"
    ensembles = True
    model_parts: tuple[str, ...] = ("encoder", "decoder")

    def inputs(self, data_cfg: DictConfig, trainable: bool) -> ImageInputs | ClipInputs:
        raise NotImplementedError

    def check_payload(self, payload: dict, path: str | Path) -> None:
        check_caption_payload(payload)

    # ------------------------------------------------------------------ training

    def setup(self, cfg: DictConfig, device: torch.device, amp_dtype: torch.dtype | None, resume: dict | None,
              init: dict | None, run_log: RunLog) -> TaskRun:
        splits = self.load_data(cfg, captions=True)
        start = resume or init
        shared = shared_parts(self.model_parts, start)
        vocab = self.vocabulary(cfg, splits["train"], start, shared, run_log)
        spec = self.model_spec(cfg)
        model = build_caption_model(spec, len(vocab), pretrained="encoder" not in shared).to(device)
        distributed.broadcast_module(model)
        if resume is None and init is not None:
            warm_start(model, init, cfg.train.init_from)
        inherit_encoder_identity(model, start, shared)  # which pretrained weights a copied frozen encoder holds
        inputs = self.inputs(cfg.data, model.encoder.trainable)
        tables, cached = self.model_inputs(splits, model, inputs, cfg, device, amp_dtype)
        train_set, val_set = (CaptionDataset(splits[split], vocab, cfg.vocab.max_words, item_reader(tables[split], cached))
                              for split in ("train", "val"))
        scst = cfg.train.get("objective", "xe") == "scst"  # self-critical: every image once per epoch
        mode = "random_caption" if scst else cfg.data.sampling
        sampler = EpochSampler([len(r.captions) for r in splits["train"]], mode, shuffle=True, seed=cfg.seed,
                               batch_size=cfg.train.batch_size, rank=distributed.rank(),
                               world_size=distributed.world_size(), lengths=train_set.caption_lengths(),
                               bucket=cfg.train.bucket_pool)
        per_rank = cfg.train.batch_size // distributed.world_size()  # train.batch_size is the global batch
        validate_captions = self.validation(cfg, model, vocab, splits["val"], val_set, inputs, device, amp_dtype,
                                            cached, run_log)
        extras = {"task": self.name, "model_spec": spec, "parts": part_prefixes(model), "vocab": vocab.to_json(),
                  "preprocess": model.encoder.preprocess, "max_words": cfg.vocab.max_words, **encoder_extras(model),
                  "data": data_extras(cfg.data), **inputs.checkpoint_extras}
        if scst:
            loss, validate_captions = self_critical(model, vocab, splits["train"], cfg, cached, run_log,
                                                    validate_captions)
        else:
            loss = CrossEntropy(cached, sampler, schedule_of(cfg.train), cfg.train.get("label_smoothing", 0.0))
        return TaskRun(model=model, loss=loss, sampler=sampler,
                       train_loader=self.train_batches(tables["train"], train_set, sampler, per_rank, inputs, cfg,
                                                       device, cached),
                       validate=validate_captions, metrics=self.metrics, extras=extras, summary=summary_line,
                       pretrained=slow_parts(model, self.label_part, init))

    def vocabulary(self, cfg: DictConfig, train: list, start: dict | None, shared: set, run_log: RunLog) -> Vocabulary:
        """The start checkpoint's words when its decoder is taken over, else the training captions' (written to the
        run folder as vocab.json)."""
        if self.label_part in shared:  # the decoder comes from the checkpoint: so do the words it was trained on
            vocab, origin = Vocabulary(start["vocab"]), f"from the start checkpoint ({start['task']})"
        else:
            vocab = Vocabulary.build((c for r in train for c in r.captions), cfg.vocab.min_count)
            check_vocabulary(vocab, cfg.vocab.min_count, f"data.source ({cfg.data.name}): train split")
            origin = f"min_count={cfg.vocab.min_count}, train split only"
        run_log.text("vocab.json", json.dumps(vocab.to_json(), ensure_ascii=False))
        log.info("vocabulary: %d words (%s)", len(vocab), origin)
        return vocab

    def train_batches(self, table, dataset: CaptionDataset, sampler: EpochSampler, per_rank: int, inputs,
                      cfg: DictConfig, device: torch.device, cached: bool):
        """Store rows read per batch, tensors indexed on the device, or a DataLoader over images or clips."""
        if isinstance(table, StoreRows):  # each batch's rows read from the store, prefetched
            return TensorBatches(table, dataset.tokens, sampler, per_rank, device)
        if cached and "pooled" in table:  # batches indexed out of tensors on the device
            features = Features(table["pooled"], table["grid"]) if "grid" in table else table["pooled"]
            return TensorBatches(features, dataset.tokens, sampler, per_rank, device)
        return make_loader(dataset, sampler, per_rank, cfg.data, device, collate_fn=inputs.collate)

    def validation(self, cfg: DictConfig, model, vocab: Vocabulary, records: list, dataset: CaptionDataset, inputs,
                   device: torch.device, amp_dtype: torch.dtype | None, cached: bool, run_log: RunLog):
        """-> `validate()`: val loss and greedy-caption metrics (and, every validation, a few attention maps to
        TensorBoard with `train.attention_maps`), each rank on its shard."""
        per_rank = cfg.train.batch_size // distributed.world_size()
        pairs = list(EpochSampler([len(r.captions) for r in records], "pairs", shuffle=False))
        loss_loader, caption_loader = (make_loader(dataset, distributed.shard(order), per_rank, cfg.data, device,
                                                   collate_fn=inputs.collate)
                                       for order in (pairs, in_order(len(dataset))))
        references, max_words = [r.captions for r in records], cfg.vocab.max_words
        drawable = hasattr(model.decoder, "attention_weights") and model.encoder.preprocess is not None  # images
        shown = cfg.train.get("attention_maps", 0) if drawable else 0

        def validate_captions() -> tuple[dict, list[str]]:
            metrics, captions = validate(model, loss_loader, caption_loader, references, vocab, device,
                                         cached=cached, max_tokens=max_words + 1, amp_dtype=amp_dtype)
            if shown and distributed.is_main():  # where a few validation captions looked, to TensorBoard
                batch = next(iter(caption_loader))
                rows = torch.arange(min(shown, len(batch["index"])))
                memory = model.memory(batch["input"].index_select(0, rows).to(device), cached).float()
                paths = [records[int(i)].image_path for i in batch["index"][rows]]
                run_log.images("val/attention", validation_maps(model, vocab, model.encoder.preprocess, max_words,
                                                                paths, memory, device))
            return metrics, [f"`{' '.join(captions[i])}` (ref: {references[i][0]})" for i in sorted(captions)[:5]]
        return validate_captions

    def model_spec(self, cfg: DictConfig) -> dict:
        """The model this run builds: `cfg.model` as plain data."""
        return plain(cfg.model)

    def model_inputs(self, splits: dict, model, inputs, cfg: DictConfig, device: torch.device,
                     amp_dtype: torch.dtype | None) -> tuple[dict, bool]:
        """Per train/val split, the input tables; True when they hold features rather than images or clips.

        - a frozen encoder without augmentation: every input is encoded once now, not once per epoch;
        - otherwise (fine-tuning or augmenting): inputs are read every epoch.
        """
        encoder, data_cfg = model.encoder, cfg.data
        transform, options = build_transform(encoder.preprocess), image_options(data_cfg, encoder.preprocess)
        if not encoder.trainable and not augments(data_cfg.get("augment")):
            return {split: cache_features(encoder, inputs.loader(splits[split], transform, **options), len(splits[split]),
                                          grid=model.decoder.uses_grid, stack=inputs.stack, batch_size=cfg.train.batch_size, device=device,
                                          num_workers=data_cfg.num_workers, amp_dtype=amp_dtype,
                                          desc=f"encoding {split} {inputs.kind}s")
                    for split in ("train", "val")}, True
        train_transform = build_transform(encoder.preprocess, data_cfg.get("augment"))
        return {"train": inputs.loader(splits["train"], train_transform, **options),
                "val": inputs.loader(splits["val"], transform, **options)}, False

    def finish(self, cfg: DictConfig, run: TaskRun, result: dict, device: torch.device) -> None:
        run_dir = Path(cfg.run_dir)
        if cfg.train.show_examples and self.has_test and run.extras["preprocess"] is not None:  # images to read
            self.show_examples(run.model, cfg, run.extras, device)
        if cfg.train.evaluate_test:
            report = self.evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", split="test", data=None,
                                              decode=plain(cfg.decode), output_dir=run_dir / "test", device=str(device),
                                              features=cfg.data.get("features"),
                                              allow_hub_model=cfg.model.encoder.get("model"))  # the user's own encoder
            print(report["summary"])
            result["test"] = report["metrics"]
            (run_dir / "metrics.json").write_text(json.dumps(result, indent=2))

    def show_examples(self, model, cfg: DictConfig, extras: dict, device: torch.device) -> None:
        """Greedy captions for a few held-out test inputs, printed as `path<TAB>caption`."""
        splits = read_source(extras["data"]["source"], allow_outside_root=extras["data"]["allow_outside_root"])
        records = clean_captions(splits.get("test", []), "test captions", "skip")[: cfg.train.show_examples]
        if not records:
            return
        vocab, inputs = Vocabulary(extras["vocab"]), self.inputs(cfg.data, True)
        dataset = CaptionDataset(records, vocab, extras["max_words"],
                                 inputs.loader(records, build_transform(extras["preprocess"])))
        loader = DataLoader(dataset, batch_size=len(records), sampler=in_order(len(records)), collate_fn=inputs.collate)
        captions = greedy_captions(model, loader, vocab, device, cached=False, max_tokens=extras["max_words"] + 1,
                                   desc="test examples")
        print(f"captions of held-out test {inputs.kind}s (greedy):")
        for index, record in enumerate(records):
            print(f"{record.image_path}\t{' '.join(captions[index])}")

    # ------------------------------------------------------------------ using a checkpoint

    def evaluate(self, cfg: DictConfig) -> dict:
        return self.evaluate_checkpoint(plain(cfg.checkpoint), split=cfg.split, decode=plain(cfg.decode),
                                        data=plain(cfg.data) if cfg.data else None, output_dir=cfg.output_dir, device=cfg.device,
                                        batch_size=cfg.batch_size, max_items=cfg.max_images,
                                        java=None if cfg.java == "none" else cfg.java, spice=cfg.spice,
                                        meteor=cfg.get("meteor", "required"), overwrite=cfg.get("overwrite", False),
                                        features=cfg.data.get("features") if cfg.data else None,
                                        allow_hub_model=cfg.get("allow_hub_model"))

    def evaluate_checkpoint(self, checkpoint: str | Path | list, **options) -> dict:
        """Caption every input of a split and score it: `inference.scoring.evaluate_checkpoints`."""
        return evaluate_checkpoints(checkpoint, task=self.name, **options)

    def caption(self, cfg: DictConfig) -> list[dict]:
        """`conf/caption.yaml`: `images=` names images for an image captioner, clips for a clip captioner."""
        captioner = Captioner.from_checkpoint(plain(cfg.checkpoint), device=cfg.device,
                                              allow_hub_model=cfg.get("allow_hub_model"))
        decode = plain(cfg.decode)
        check_decode_limits(decode, captioner.max_words, str(plain(cfg.checkpoint)))
        spec = plain(cfg.images) if not isinstance(cfg.images, str) else cfg.images
        paths, overwrite = captioner.inputs.find(spec), cfg.get("overwrite", False)
        after = map_writer(captioner, paths, cfg.get("attention_maps"), overwrite)
        if after is not None:
            decode["return_attention"] = True
        return caption_paths(paths, captioner.read, lambda batch: captioner.caption_inputs(batch, **decode),
                             batch_size=cfg.batch_size, output=cfg.output, kind=captioner.inputs.kind,
                             overwrite=overwrite, after=after)


@TASKS.register("image_caption")
class ImageCaptionTask(CaptionTask):
    """Show and Tell: a CNN encodes the image, its pooled vector (or grid) starts the caption decoder."""
    name = "image_caption"

    def inputs(self, data_cfg: DictConfig, trainable: bool) -> ImageInputs:
        return ImageInputs(keep_in_memory=bool(data_cfg.get("keep_in_memory")) and trainable)

    def model_spec(self, cfg: DictConfig) -> dict:
        """A store of precomputed regions (scripts/pack_region_features.py) is the encoder: its header gives the
        widths, whatever model.encoder says."""
        spec = plain(cfg.model)
        regions = region_encoder(cfg.data.get("features"))
        if regions is not None:
            spec["encoder"] = regions
            log.info("model.encoder: the precomputed regions of %s (%d-wide regions, %d-wide pooled vectors)",
                     cfg.data.features, regions["grid_dim"], regions["dim"])
        return spec

    def model_inputs(self, splits: dict, model, inputs, cfg: DictConfig, device: torch.device,
                     amp_dtype: torch.dtype | None) -> tuple[dict, bool]:
        """`data.features=PATH` with a frozen encoder: the feature store (made by scripts/extract_features.py, or
        here first, by rank 0, when `data.extract_features=true`); it must come from this very encoder."""
        encoder, data_cfg = model.encoder, cfg.data
        if not data_cfg.get("features") or encoder.trainable:
            if data_cfg.get("features"):
                log.warning("model.encoder.trainable=true: features change while fine-tuning, so images are read and "
                            "data.features=%s is not used", data_cfg.features)
            return super().model_inputs(splits, model, inputs, cfg, device, amp_dtype)
        if data_cfg.get("extract_features") and encoder.name != "regions" and distributed.is_main():
            extract_features(encoder, [record for split in splits.values() for record in split], data_cfg.features,
                             device=device, batch_size=cfg.train.batch_size, num_workers=data_cfg.num_workers,
                             amp_dtype=amp_dtype, store_grid=model.decoder.uses_grid, verify_finished=False)
        distributed.barrier()  # the other ranks wait for rank 0's store
        store = FeatureStore(data_cfg.features)  # verifies the checksums
        store.check_encoder(encoder)
        if augments(data_cfg.augment):
            log.warning("data.augment is ignored: cached features were computed from unaugmented images")
        tables, where = store.tables({split: splits[split] for split in ("train", "val")}, model.decoder.uses_grid,
                                     data_cfg.get("features_in_memory", "auto"), device)
        log.info("features %s: %s", "in memory" if where.in_memory else "read from the store as batches need them",
                 where.reason)
        return tables, True


@TASKS.register("video_caption")
class VideoCaptionTask(CaptionTask):
    """LRCN video description: a frame CNN and a clip LSTM, whose summary starts the caption decoder."""
    name = "video_caption"
    model_parts = ("encoder", "temporal", "decoder")

    def inputs(self, data_cfg: DictConfig, trainable: bool) -> ClipInputs:
        return ClipInputs(data_cfg.frames, keep_in_memory=bool(data_cfg.get("keep_in_memory")) and trainable)
