"""Scheduled sampling (Bengio et al. 2015) for cross-entropy training of caption decoders.

At each word the decoder is fed, with probability p, a word drawn from its own previous output distribution instead
of the reference word. p starts at 0 and rises by `increase_prob` every `increase_every` epochs from epoch `start`,
up to `max_prob` (the schedule of ruotianluo's scheduled_sampling_* options). The loss
(`models.decoders.base.scheduled_sampling_loss`) runs word by word through the decoder contract, so every decoder
trains this way.
"""
from __future__ import annotations

OFF = {"start": 0, "increase_every": 1, "increase_prob": 0.0, "max_prob": 0.0}  # plain teacher forcing


def schedule_of(train_cfg) -> dict:
    """`train.scheduled_sampling` as keyword arguments of `sampling_probability`; OFF for a config without it."""
    schedule = train_cfg.get("scheduled_sampling")
    return dict(schedule) if schedule is not None else dict(OFF)


def sampling_probability(epoch: int, *, start: int, increase_every: int, increase_prob: float,
                         max_prob: float) -> float:
    """The probability of feeding the model its own word during 0-based `epoch`."""
    if epoch < start or max_prob <= 0:
        return 0.0
    return min(max_prob, increase_prob * ((epoch - start) // increase_every + 1))


class CrossEntropy:
    """A caption task's cross-entropy loss at the epoch's scheduled-sampling probability (0: plain teacher forcing):
    `(model or its DDP wrapper, batch) -> (summed loss, words)`; `cached`: the batch holds features, not images;
    `label_smoothing` (train.label_smoothing): against smoothed targets."""

    def __init__(self, cached: bool, sampler, schedule: dict, label_smoothing: float = 0.0):
        self.cached, self.sampler, self.schedule, self.label_smoothing = cached, sampler, schedule, label_smoothing

    def __call__(self, parallel, batch: dict):
        return parallel(batch["input"], batch["tokens"], self.cached,
                        sampling_prob=sampling_probability(self.sampler.epoch, **self.schedule),
                        label_smoothing=self.label_smoothing)
