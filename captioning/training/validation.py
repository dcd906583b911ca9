"""Validation of caption models during training: teacher-forced loss, greedy captions, BLEU and CIDEr-D."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from tqdm import tqdm

from captioning import distributed
from captioning.decoding import greedy_search
from captioning.evaluation.metrics import bleu, cider
from captioning.execution import autocast
from captioning.vocab import Vocabulary, tokenize

# What `validate` returns, each with the direction that is better (best.pt selection follows it).
CAPTION_METRICS = {"loss": "min", "perplexity": "min", "BLEU-1": "max", "BLEU-2": "max", "BLEU-3": "max",
                   "BLEU-4": "max", "CIDEr": "max"}


@torch.no_grad()
def mean_loss(model: torch.nn.Module, loader: Iterable[dict], device: torch.device, *, cached: bool,
              amp_dtype: torch.dtype | None = None) -> float:
    """Token-averaged teacher-forcing loss over every (input, caption) pair of the loader."""
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        with autocast(device, amp_dtype):
            batch_total, batch_count = model(batch["input"].to(device), batch["tokens"].to(device), cached)
        total, count = total + batch_total.item(), count + batch_count
    total, count = distributed.sum_all(total, count, device=device)  # each rank saw its shard of the pairs
    return total / max(count, 1)


@torch.no_grad()
def greedy_captions(model: torch.nn.Module, loader: Iterable[dict], vocab: Vocabulary, device: torch.device, *,
                    cached: bool, max_tokens: int, desc: str = "captioning") -> dict[int, list[str]]:
    """Greedy-decode one caption per input: {record index: words}."""
    model.eval()
    captions = {}
    for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        memory = model.memory(batch["input"].to(device), cached).float()
        tokens, _ = greedy_search(model.decoder, memory, start=vocab.start, end=vocab.end, max_tokens=max_tokens)
        for index, row in zip(batch["index"].tolist(), tokens.tolist(), strict=True):
            captions[index] = vocab.decode_tokens(row)
    return captions


def bleu_of(captions: dict[int, list[str]], references: list[list[str]]) -> dict[str, float]:
    """BLEU of decoded captions against the raw reference captions of the same record indices."""
    indices = sorted(captions)
    return bleu([captions[i] for i in indices], [[tokenize(ref) for ref in references[i]] for i in indices])


def cider_of(captions: dict[int, list[str]], references: list[list[str]]) -> float:
    """CIDEr-D on the project tokenisation (no Java needed), against the same record indices' references."""
    indices = sorted(captions)
    return cider([captions[i] for i in indices], [[tokenize(ref) for ref in references[i]] for i in indices])


def validate(model: torch.nn.Module, loss_loader: Iterable[dict], caption_loader: Iterable[dict],
             references: list[list[str]], vocab: Vocabulary, device: torch.device, *, cached: bool, max_tokens: int,
             amp_dtype: torch.dtype | None = None) -> tuple[dict[str, float], dict[int, list[str]]]:
    """Validation loss, greedy BLEU-1..4 and CIDEr (`CAPTION_METRICS`); also returns the decoded captions."""
    metrics = {"loss": mean_loss(model, loss_loader, device, cached=cached, amp_dtype=amp_dtype)}
    captions = greedy_captions(model, caption_loader, vocab, device, cached=cached, max_tokens=max_tokens,
                               desc="validating")
    captions = distributed.gather_dict(captions)  # each rank decoded its shard: score the whole split
    metrics.update(bleu_of(captions, references))
    metrics["CIDEr"] = cider_of(captions, references)
    metrics["perplexity"] = math.exp(min(metrics["loss"], 50.0))
    return metrics, captions
