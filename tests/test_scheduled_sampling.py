"""Scheduled sampling (Bengio et al. 2015): the schedule, the loss through the decoder contract, and its options."""
from __future__ import annotations

import pytest
import torch

from captioning.config import OptionError
from captioning.models.caption_model import CaptionModel
from captioning.models.decoders.base import scheduled_sampling_loss
from captioning.training.scheduled_sampling import sampling_probability
from tests.test_scst import decoder_of, memory_of


def test_the_probability_rises_every_increase_every_epochs_up_to_max_prob():
    schedule = dict(start=2, increase_every=3, increase_prob=0.1, max_prob=0.25)
    got = [sampling_probability(epoch, **schedule) for epoch in range(10)]
    assert got == pytest.approx([0, 0, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.25, 0.25])
    assert all(sampling_probability(e, **{**schedule, "max_prob": 0.0}) == 0 for e in range(10))  # off by default


TOKENS = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 9, 2, 0, 0], [1, 4, 4, 4, 4, 2]])  # <start> ... <end>, 0-padded


@torch.no_grad()
@pytest.mark.parametrize("kind", ["lstm", "soft_attention", "updown"])
def test_with_probability_zero_it_is_the_teacher_forced_loss(kind):
    decoder, memory = decoder_of(kind).eval(), memory_of(3)
    total, count = scheduled_sampling_loss(decoder, memory, TOKENS, prob=0.0)
    expected_total, expected_count = decoder.loss(memory, TOKENS)
    assert count == expected_count == 12 and total.item() == pytest.approx(expected_total.item(), rel=1e-5)


class Spy(torch.nn.Module):
    """Always predicts word 3 with certainty, and records the words it is fed."""
    def __init__(self):
        super().__init__()
        self.fed = []

    def init_state(self, memory):
        return None

    def step(self, tokens, state):
        self.fed.append(tokens.tolist())
        log_probs = torch.full((len(tokens), 12), -1e9)
        log_probs[:, 3] = 0.0
        return log_probs, state


def test_with_probability_one_every_real_position_is_fed_the_models_own_word():
    spy = Spy()
    scheduled_sampling_loss(spy, memory_of(3), TOKENS, prob=1.0)
    assert spy.fed[0] == [1, 1, 1]  # <start> first
    for t, fed in enumerate(spy.fed[1:], start=1):  # then the model's own word where a target was real
        assert fed == [3 if TOKENS[row, t] != 0 else 0 for row in range(3)]
    half = Spy()
    scheduled_sampling_loss(half, memory_of(3), TOKENS, prob=0.5, generator=torch.Generator().manual_seed(0))
    swapped = sum(word == 3 for fed in half.fed[1:] for word in fed)
    assert 0 < swapped < 12  # some words are the model's, some the reference's


def test_the_model_forward_takes_the_probability():
    torch.manual_seed(0)
    decoder = decoder_of("lstm").eval()
    model = CaptionModel(torch.nn.Identity(), decoder).eval()
    memory = memory_of(3)
    with torch.no_grad():
        assert model(memory, TOKENS)[0].item() == pytest.approx(model(memory, TOKENS, sampling_prob=0.0)[0].item())
        assert model(memory, TOKENS, sampling_prob=1.0)[0].item() != pytest.approx(model(memory, TOKENS)[0].item())


@pytest.mark.parametrize("overrides, message", [
    (["train.objective=scst", "train.scheduled_sampling.max_prob=0.25"], "expected 0 with train.objective=scst"),
    (["task=activity", "train.select_metric=accuracy", "train.scheduled_sampling.max_prob=0.25"], "writes no captions"),
    (["train.scheduled_sampling.max_prob=1.5"], "a number in [0, 1]"),
    (["train.scheduled_sampling.increase_every=0"], "an integer >= 1"),
])
def test_bad_schedules_are_refused(overrides, message, synthetic_root):
    from captioning.tasks import train
    from tests.conftest import compose_train, tiny_overrides

    base = [] if "task=activity" in overrides else tiny_overrides(synthetic_root)
    with pytest.raises(OptionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train(compose_train(base + overrides))
