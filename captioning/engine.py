"""One training epoch, validation and batch captioning: plain functions with explicit arguments."""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioning import distributed
from captioning.decoding import greedy_search
from captioning.metrics import bleu, cider
from captioning.models.captioner import CaptionModel
from captioning.vocab import Vocabulary, tokenize


def summed_loss(decoder: torch.nn.Module, features: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Teacher-forcing cross-entropy summed over the real (non-pad) next-word targets, and how many there are."""
    targets = tokens[:, 1:]
    targets = targets[targets != 0]  # (N,) in the decoder's targets_only order
    logits = decoder(features, tokens, targets_only=True)  # (N, V)
    return F.cross_entropy(logits.float(), targets, reduction="sum"), targets.numel()


LossFn = Callable[[dict], tuple[torch.Tensor, int]]  # a batch on the device -> (summed loss, number of terms)


def caption_batch_loss(model: CaptionModel, cached: bool) -> LossFn:
    """The captioning loss of a batch whose inputs are images or clips, or, when `cached`, their features."""
    def loss(batch: dict) -> tuple[torch.Tensor, int]:
        return summed_loss(model.decoder, features_of(model, batch["input"], cached), batch["tokens"])
    return loss


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def features_of(model: CaptionModel, inputs: torch.Tensor, cached: bool) -> torch.Tensor:
    """Inputs are either images (B, 3, H, W) or, when `cached`, precomputed features (B, D)."""
    return inputs if cached else model.encoder(inputs)


def train_one_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: torch.device, loss_fn: LossFn, *, step: int, max_steps: int | None,
                    amp_dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
                    grad_clip: float | None = None, scheduler=None, on_step: Callable[[int, float], None] | None = None,
                    desc: str = "train") -> tuple[int, bool]:
    """Train until the loader is exhausted or `max_steps` is reached; `loss_fn` makes one batch's summed loss.

    Returns (step, stopped_early); stopped_early is True when batches of this epoch were left over.
    """
    model.train()
    progress = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    for batch in progress:
        if max_steps is not None and step >= max_steps:
            return step, True
        with autocast(device, amp_dtype):
            total, count = loss_fn(to_device(batch, device))
        # Mean over the GLOBAL batch's terms: DDP averages gradients over ranks, so scale by the world size.
        # In one process this is the plain mean; across ranks it equals the one-process loss exactly.
        all_total, all_count = distributed.sum_all(total.item(), count, device=device)
        loss = total * distributed.world_size() / all_count
        if not math.isfinite(all_total):
            raise FloatingPointError(f"loss became {all_total} at step {step}; lower optim.lr or set train.grad_clip")
        reported = all_total / all_count
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step += 1
        progress.set_postfix(loss=f"{reported:.3f}", step=step)
        if on_step is not None:
            on_step(step, reported)
    return step, False


@torch.no_grad()
def mean_loss(model: CaptionModel, loader: DataLoader, device: torch.device, *, cached: bool,
              amp_dtype: torch.dtype | None = None) -> float:
    """Token-averaged teacher-forcing loss over every (image, caption) pair of the loader."""
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        inputs, tokens = batch["input"].to(device), batch["tokens"].to(device)
        with autocast(device, amp_dtype):
            batch_total, batch_count = summed_loss(model.decoder, features_of(model, inputs, cached), tokens)
        total, count = total + batch_total.item(), count + batch_count
    total, count = distributed.sum_all(total, count, device=device)  # each rank saw its shard of the pairs
    return total / max(count, 1)


@torch.no_grad()
def greedy_captions(model: CaptionModel, loader: DataLoader, vocab: Vocabulary, device: torch.device, *,
                    cached: bool, max_length: int, desc: str = "captioning") -> dict[int, list[str]]:
    """Greedy-decode one caption per image: {record index: words}."""
    model.eval()
    captions = {}
    for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        features = features_of(model, batch["input"].to(device), cached)
        tokens, _ = greedy_search(model.decoder.step, model.decoder.init_state(features.float()),
                                  vocab.start, vocab.end, max_length)
        for index, row in zip(batch["index"].tolist(), tokens.tolist()):
            captions[index] = vocab.decode_tokens(row)
    return captions


# What `validate` returns, so `train.select_metric` can be checked before the first epoch.
VALIDATION_METRICS = ("loss", "perplexity", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr")


def bleu_of(captions: dict[int, list[str]], references: list[list[str]]) -> dict[str, float]:
    """BLEU of decoded captions against the raw reference captions of the same record indices."""
    indices = sorted(captions)
    return bleu([captions[i] for i in indices], [[tokenize(ref) for ref in references[i]] for i in indices])


def cider_of(captions: dict[int, list[str]], references: list[list[str]]) -> float:
    """CIDEr-D on the project tokenisation (no Java needed), against the same record indices' references."""
    indices = sorted(captions)
    return cider([captions[i] for i in indices], [[tokenize(ref) for ref in references[i]] for i in indices])


def validate(model: CaptionModel, loss_loader: DataLoader, caption_loader: DataLoader, references: list[list[str]],
             vocab: Vocabulary, device: torch.device, *, cached: bool, max_length: int,
             amp_dtype: torch.dtype | None = None) -> tuple[dict[str, float], dict[int, list[str]]]:
    """Validation loss, greedy BLEU-1..4 and CIDEr (see `VALIDATION_METRICS`); also returns the decoded captions."""
    metrics = {"loss": mean_loss(model, loss_loader, device, cached=cached, amp_dtype=amp_dtype)}
    captions = greedy_captions(model, caption_loader, vocab, device, cached=cached, max_length=max_length,
                               desc="validating")
    captions = distributed.gather_dict(captions)  # each rank decoded its shard: score the whole split
    metrics.update(bleu_of(captions, references))
    metrics["CIDEr"] = cider_of(captions, references)
    metrics["perplexity"] = math.exp(min(metrics["loss"], 50.0))
    return metrics, captions


@torch.no_grad()
def compute_features(encoder: torch.nn.Module, loader: DataLoader, device: torch.device, count: int,
                     amp_dtype: torch.dtype | None = None, desc: str = "encoding images") -> torch.Tensor:
    """Run a frozen encoder once over every image: (count, D) float32 on the CPU, row = record index."""
    encoder.eval()
    features = None
    for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        with autocast(device, amp_dtype):
            out = encoder(batch["input"].to(device, non_blocking=True)).float().cpu()
        if features is None:
            features = torch.empty(count, out.size(1))
        features[batch["index"]] = out
    return features
