"""Self-critical sequence training (Rennie et al. 2017): baselines, the policy-gradient loss, the task's loss.

The K samples per image with their log-probabilities come from `decoding.sample_with_log_probs`, through the
decoder contract, so every registered decoder trains this way, the attention ones included.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

import torch

from captioning.config import SCST_BASELINES as BASELINES  # the option schema and the loss share one list
from captioning.decoding import Samples, greedy_search
from captioning.evaluation.bleu_reward import sentence_bleu
from captioning.evaluation.cider_d import CiderD
from captioning.vocab import tokenize

log = logging.getLogger(__name__)


def baseline_of(rewards: torch.Tensor, kind: str, greedy: torch.Tensor | None = None) -> torch.Tensor:
    """rewards (B, K) of each image's K samples -> the baseline of each sample (B, K).

    greedy: the reward of the image's greedy caption (Rennie et al. 2017); mean: the mean reward of the image's other
    K - 1 samples (the "new SCST" variant, no extra decoding)."""
    if kind == "greedy":
        if greedy is None:
            raise ValueError("the greedy baseline needs the greedy captions' rewards")
        return greedy[:, None].expand_as(rewards)
    if kind == "mean":
        K = rewards.size(1)
        if K < 2:
            raise ValueError("the mean-of-others baseline needs at least 2 samples per image")
        return (rewards.sum(dim=1, keepdim=True) - rewards) / (K - 1)
    raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")


def policy_loss(samples: Samples, rewards: torch.Tensor, baseline: torch.Tensor) -> tuple[torch.Tensor, int]:
    """-(r - b) x log p summed over every counted word of every sample, and the number of those words
    (the training loop divides the one by the other). rewards and baseline: (B * K,) or (B, K), no gradient."""
    advantage = (rewards - baseline).reshape(-1).to(samples.log_probs.device, samples.log_probs.dtype).detach()
    counted = samples.mask.to(samples.log_probs.dtype)
    total = -(advantage[:, None] * samples.log_probs * counted).sum()
    return total, int(samples.mask.sum())


def empty_totals() -> dict[str, float]:
    """Sums of the sampling statistics, weighted by images (train.micro_batch pieces differ in size), and the images."""
    return {"reward": 0.0, "baseline": 0.0, "entropy": 0.0, "images": 0}


class SelfCritical:
    """The self-critical loss of a caption task: `(model or its DDP wrapper, batch) -> (summed loss, counted words)`.

    Samples K captions per image through the wrapper's forward (so DDP synchronises their gradients), scores them
    with CIDEr-D against the image's training references, subtracts the baseline (the greedy caption's reward,
    decoded in eval mode without gradients, or the mean of the other samples), and keeps running means of the
    reward, the baseline and the sampling entropy for the log (`take_stats`).
    """

    def __init__(self, model: Any, vocab: Any, references: list[list[list[str]]], reward: Any, *, samples: int,
                 baseline: str, temperature: float, max_tokens: int, cached: bool, bleu_weight: float = 0.0):
        self.model, self.vocab, self.references, self.reward = model, vocab, references, reward
        self.bleu_weight = bleu_weight
        self.samples, self.baseline, self.cached = samples, baseline, cached
        self.sampling = {"start": vocab.start, "end": vocab.end, "max_tokens": max_tokens, "samples": samples,
                         "temperature": temperature}
        self.totals = empty_totals()

    def rewards(self, tokens: torch.Tensor, images: list[int]) -> torch.Tensor:
        """CIDEr-D of each caption against its image's training references, plus bleu_weight x its BLEU-4."""
        words = [self.vocab.decode_tokens(row) for row in tokens.tolist()]
        references = [self.references[i] for i in images]
        rewards = self.reward.scores(words, references, images)
        if self.bleu_weight:
            rewards = [r + self.bleu_weight * sentence_bleu(w, refs) for r, w, refs in zip(rewards, words, references, strict=True)]
        return torch.tensor(rewards, dtype=torch.float32)

    def __call__(self, parallel: Any, batch: dict) -> tuple[torch.Tensor, int]:
        images = batch["index"].tolist()
        samples = parallel(batch["input"], batch["tokens"], self.cached, sample=self.sampling)
        rewards = self.rewards(samples.tokens, [i for i in images for _ in range(self.samples)]).view(-1, self.samples)
        greedy = self.greedy_rewards(batch["input"], images) if self.baseline == "greedy" else None
        baseline = baseline_of(rewards, self.baseline, greedy)
        for key, value in (("reward", rewards.mean()), ("baseline", baseline.mean()), ("entropy", samples.entropy)):
            self.totals[key] += float(value) * len(images)
        self.totals["images"] += len(images)
        return policy_loss(samples, rewards, baseline)

    @torch.no_grad()
    def greedy_rewards(self, inputs: Any, images: list[int]) -> torch.Tensor:
        training = self.model.training
        self.model.eval()
        try:
            memory = self.model.memory(inputs, self.cached)
            tokens, _ = greedy_search(self.model.decoder, memory, start=self.vocab.start, end=self.vocab.end,
                                      max_tokens=self.sampling["max_tokens"])
        finally:
            self.model.train(training)
        return self.rewards(tokens, images)

    def take_stats(self) -> dict[str, float]:
        """Means since the last call: reward (CIDEr-D of the samples), baseline, entropy (nats per word)."""
        images = max(self.totals["images"], 1)
        stats = {f"scst_{key}": value / images for key, value in self.totals.items() if key != "images"}
        self.totals = empty_totals()
        return stats


def self_critical(model: Any, vocab: Any, train_records: list, cfg: Any, cached: bool, run_log: Any,
                  validate: Callable[[], tuple[dict, list[str]]]) -> tuple[SelfCritical, Callable]:
    """The SCST loss of a caption run (CIDEr-D document frequencies from the training captions, written to the run
    folder as `cider_d.json`; the options of `train.scst`), and `validate` reporting its sampling statistics too."""
    references = [[tokenize(caption) for caption in record.captions] for record in train_records]
    reward = CiderD(references)
    run_log.text("cider_d.json", json.dumps(reward.state()))
    options = cfg.train.scst
    bleu_weight = float(options.get("bleu_weight", 0.0))
    log.info("self-critical training: %d samples per image, %s baseline, reward CIDEr-D%s, frequencies from %d "
             "training images", options.samples, options.baseline, f" + {bleu_weight} x BLEU-4" if bleu_weight else "",
             len(references))
    loss = SelfCritical(model, vocab, references, reward, samples=int(options.samples), baseline=str(options.baseline),
                        temperature=float(options.temperature), max_tokens=int(cfg.vocab.max_words) + 1, cached=cached,
                        bleu_weight=bleu_weight)
    return loss, with_scst_stats(validate, loss)


def with_scst_stats(validate: Callable[[], tuple[dict, list[str]]], loss: SelfCritical):
    """Validation that also reports the sampling statistics since the last one (validation.jsonl and the log)."""
    def validate_and_report() -> tuple[dict, list[str]]:
        metrics, examples = validate()
        stats = loss.take_stats()
        log.info("self-critical since the last validation: reward %.3f, baseline %.3f, entropy %.3f",
                 stats["scst_reward"], stats["scst_baseline"], stats["scst_entropy"])
        return {**metrics, **stats}, examples
    return validate_and_report
