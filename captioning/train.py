"""`train(cfg) -> metrics`: the whole training run, called by `scripts/train.py`, tests and sweepers alike."""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from captioning import distributed
from captioning.checkpoint import CheckpointError, load_checkpoint, load_state
from captioning.data.dataset import CaptionDataset, EpochSampler, ImageLoader, build_transform, collate
from captioning.data.records import DataError, check_images, clean_captions
from captioning.data.tensor_batches import TensorBatches
from captioning.distributed import resolve_device  # noqa: F401 - re-exported for scripts
from captioning.engine import VALIDATION_METRICS, caption_batch_loss, greedy_captions, train_one_epoch, validate
from captioning.inputs import split_inputs
from captioning.models.captioner import CaptionModel, build_model
from captioning.provenance import write_provenance
from captioning.run_log import RunLog
from captioning.vocab import Vocabulary

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA only: auto picks bf16 where supported, else fp16 (with a grad scaler)."""
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"train.amp must be auto|bf16|fp16|off, got {amp!r}")
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]], "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state((state["numpy"][0], np.array(state["numpy"][1], dtype=np.uint32), *state["numpy"][2:]))
    random.setstate(state["python"])


def restore(resume: dict, path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
            scaler: torch.amp.GradScaler | None) -> tuple[int, int, int, dict | None]:
    """Put a run back where `resume` (read from `path`) left it -> epoch, batch_in_epoch, step, best."""
    load_state(model, resume["model"], path)
    try:
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None and resume.get("scheduler"):
            scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: optimizer/scheduler state does not fit this run ({error})") from error
    set_rng_state(resume["rng"])
    log.info("resumed from %s at epoch %d, step %d", path, resume["epoch"], resume["step"])
    return resume["epoch"], resume["batch_in_epoch"], resume["step"], resume.get("best")


def load_splits(data_cfg: DictConfig, verify: tuple[str, ...] = ("train", "val")) -> dict:
    """Read the configured source, drop empty captions, and open every image of the `verify` splits now."""
    splits = instantiate(data_cfg.source, _convert_="all")
    for split in verify:
        if not splits.get(split):
            raise DataError(f"data: the source gives no '{split}' images")
    for split, records in splits.items():
        records = clean_captions(records, f"{split} captions", data_cfg.on_bad_caption)
        if data_cfg.verify_images != "none" and split in verify:
            records = check_images(records, data_cfg.on_bad_image, full=data_cfg.verify_images == "full",
                                   desc=f"checking {split} images")
        splits[split] = records
    return splits


def make_loader(dataset, sampler, batch_size: int, data_cfg: DictConfig, device: torch.device) -> DataLoader:
    pin = device.type == "cuda" if data_cfg.pin_memory == "auto" else bool(data_cfg.pin_memory)
    # An explicit generator keeps DataLoader start-up from consuming the global RNG, so resumes are exact.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, pin_memory=pin,
                      num_workers=data_cfg.num_workers, generator=torch.Generator())


def train(cfg: DictConfig) -> dict:
    """Train a captioner from a composed config; returns the final validation metrics plus `select`.

    Under torchrun every process runs this; they share each global batch (DistributedDataParallel)
    and only rank 0 writes into the run folder.
    """
    seed_everything(cfg.seed)
    device = distributed.setup(cfg.train.device)
    amp_dtype = resolve_amp(cfg.train.amp, device)
    world, rank = distributed.world_size(), distributed.rank()
    run = RunLog(cfg.run_dir, cfg.train.log_every)
    run.text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if run.active:
        write_provenance(cfg.run_dir, cfg.seed)  # git commit (+ diff), package versions, seed, command, host, time

    if not distributed.is_main():
        distributed.barrier()  # rank 0 reads (and maybe generates) the data first
    splits = load_splits(cfg.data)
    if distributed.is_main():
        distributed.barrier()
    resume = load_checkpoint(cfg.train.resume) if cfg.train.resume else None
    init = load_checkpoint(cfg.train.init_from) if cfg.train.get("init_from") else None  # weights only: a new stage
    if (resume or init) is not None:
        vocab = Vocabulary((resume or init)["vocab"])  # keep the vocabulary the weights were trained with
    else:
        vocab = Vocabulary.build((c for r in splits["train"] for c in r.captions), cfg.vocab.min_count)
    run.text("vocab.json", json.dumps(vocab.to_json(), ensure_ascii=False))
    log.info("vocabulary: %d words (min_count=%d, train split only)", len(vocab), cfg.vocab.min_count)

    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model = build_model(model_config, len(vocab), pretrained=resume is None and init is None).to(device)
    if init is not None:
        load_state(model, init["model"], cfg.train.init_from)
    encoder = model.encoder
    parallel = model
    if world > 1:  # the same modules, with gradients averaged across processes
        ids = [device.index] if device.type == "cuda" else None
        parallel = CaptionModel(DDP(encoder, device_ids=ids) if encoder.trainable else encoder,
                                DDP(model.decoder, device_ids=ids))

    inputs, cached = split_inputs(splits, encoder, cfg.data, cfg.train.batch_size, device, amp_dtype)
    lookup = {split: table.__getitem__ if cached else table for split, table in inputs.items()}
    train_set = CaptionDataset(splits["train"], vocab, cfg.vocab.max_length, lookup["train"])
    val_set = CaptionDataset(splits["val"], vocab, cfg.vocab.max_length, lookup["val"])
    sampler = EpochSampler([len(r.captions) for r in splits["train"]], cfg.data.sampling, shuffle=True, seed=cfg.seed,
                           batch_size=cfg.train.batch_size, rank=rank, world_size=world,
                           lengths=train_set.caption_lengths(), bucket=cfg.train.bucket_pool)
    batch_size = cfg.train.batch_size // world  # train.batch_size is the global batch
    train_loader = (TensorBatches(inputs["train"], train_set.tokens, sampler, batch_size, device) if cached
                    else make_loader(train_set, sampler, batch_size, cfg.data, device))
    val_pairs = list(EpochSampler([len(r.captions) for r in splits["val"]], "pairs", shuffle=False))
    val_loss_loader = make_loader(val_set, distributed.shard(val_pairs), batch_size, cfg.data, device)
    val_caption_loader = make_loader(val_set, distributed.shard([(i, 0) for i in range(len(val_set))]), batch_size,
                                     cfg.data, device)
    val_references = [r.captions for r in splits["val"]]

    encoder_lr = cfg.train.encoder_lr if cfg.train.encoder_lr is not None else cfg.optim.lr
    groups = [{"params": list(model.decoder.parameters())}]
    if encoder.trainable:
        groups.append({"params": list(encoder.parameters()), "lr": encoder_lr})
    optimizer = instantiate(cfg.optim)(groups)
    scheduler = instantiate(cfg.scheduler.build)(optimizer) if cfg.scheduler.build else None
    per_step_schedule = scheduler is not None and cfg.scheduler.interval == "step"
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    epoch, batch_in_epoch, step = 0, 0, 0
    select, mode = cfg.train.select_metric, cfg.train.select_mode
    if select not in VALIDATION_METRICS:
        raise ValueError(f"train.select_metric={select!r} is not a validation metric; choose from {VALIDATION_METRICS}")
    best = {"value": None, "epoch": None, "step": None}
    if resume is not None:
        epoch, batch_in_epoch, step, saved_best = restore(resume, cfg.train.resume, model, optimizer, scheduler, scaler)
        best = saved_best or best

    def payload(metrics: dict | None) -> dict:
        return {"task": "image_caption", "model": model.state_dict(), "model_config": model_config, "vocab": vocab.to_json(),
                "preprocess": encoder.preprocess, "max_length": cfg.vocab.max_length,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
                "scaler": scaler.state_dict() if scaler else None, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "step": step, "rng": rng_state(), "metrics": metrics, "best": best,
                "config": OmegaConf.to_container(cfg, resolve=True)}

    def on_step(done: int, loss: float) -> None:
        nonlocal step, batch_in_epoch
        step, batch_in_epoch = done, done - steps_at_epoch_start
        run.step(step, epoch, loss, optimizer.param_groups[0]["lr"])
        if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
            run.checkpoint(payload(None), "last.pt")

    metrics = None
    max_steps = cfg.train.max_steps
    decode_length = cfg.vocab.max_length + 1
    while epoch < cfg.train.epochs and (max_steps is None or step < max_steps):
        sampler.set_epoch(epoch, skip=batch_in_epoch * cfg.train.batch_size)
        steps_at_epoch_start = step - batch_in_epoch
        step, stopped = train_one_epoch(parallel, train_loader, optimizer, device, caption_batch_loss(parallel, cached),
                                        step=step, max_steps=max_steps, amp_dtype=amp_dtype, scaler=scaler,
                                        grad_clip=cfg.train.grad_clip, scheduler=scheduler if per_step_schedule else None,
                                        on_step=on_step, desc=f"epoch {epoch + 1}/{cfg.train.epochs}")
        if not stopped:  # a run stopped mid-epoch keeps (epoch, batch_in_epoch) so a resume continues it
            epoch, batch_in_epoch = epoch + 1, 0
            if scheduler is not None and not per_step_schedule:
                scheduler.step()
        metrics, captions = validate(model, val_loss_loader, val_caption_loader, val_references, vocab, device,
                                     cached=cached, max_length=decode_length, amp_dtype=amp_dtype)
        metrics.update(epoch=epoch, step=step)
        log.info("epoch %d step %d | val loss %.3f | BLEU-1 %.1f BLEU-4 %.1f CIDEr %.1f", epoch, step, metrics["loss"],
                 metrics["BLEU-1"], metrics["BLEU-4"], metrics["CIDEr"])
        run.validation(metrics, [(" ".join(captions[i]), val_references[i][0]) for i in sorted(captions)[:5]], step)
        value = metrics[select]
        if best["value"] is None or (value > best["value"] if mode == "max" else value < best["value"]):
            best = {"value": value, "epoch": epoch, "step": step}
            run.checkpoint(payload(metrics), "best.pt")
        run.checkpoint(payload(metrics), "last.pt")

    if metrics is None:
        raise RuntimeError(f"nothing to train: epoch {epoch} >= train.epochs={cfg.train.epochs} "
                           f"or step {step} >= train.max_steps={max_steps}")
    result = {**metrics, "select_metric": select, "select": best["value"], "best": best}
    run.finish(result)
    if cfg.train.show_examples and splits.get("test") and distributed.is_main():
        show_examples(model, splits["test"][: cfg.train.show_examples], vocab, build_transform(encoder.preprocess),
                      device, decode_length)
    if cfg.train.evaluate_test and distributed.is_main():
        from captioning.evaluation import evaluate_checkpoint
        from captioning.scoring import format_table

        report = evaluate_checkpoint(Path(cfg.run_dir) / "checkpoints" / "best.pt", split="test", data=None,
                                     decode=OmegaConf.to_container(cfg.decode, resolve=True),
                                     output_dir=Path(cfg.run_dir) / "test", device=str(device))
        print(format_table(report))
        result["test"] = report["metrics"]
        (Path(cfg.run_dir) / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def show_examples(model, records, vocab: Vocabulary, transform, device: torch.device, max_length: int) -> None:
    """Greedy captions for a few held-out images, printed as `path<TAB>caption`."""
    dataset = CaptionDataset(records, vocab, max_length, ImageLoader(records, transform))
    loader = DataLoader(dataset, batch_size=len(records), sampler=[(i, 0) for i in range(len(records))], collate_fn=collate)
    captions = greedy_captions(model, loader, vocab, device, cached=False, max_length=max_length, desc="test examples")
    print("captions of held-out test images (greedy):")
    for index, record in enumerate(records):
        print(f"{record.image_path}\t{' '.join(captions[index])}")
