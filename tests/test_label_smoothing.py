"""train.label_smoothing: 0 is the plain loss to the bit, e > 0 is torch's label-smoothed cross-entropy summed, for
every caption decoder and with scheduled sampling; values out of range, SCST and the activity task are refused by key."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from captioning.config import OptionError, check_options
from captioning.data.batches import Features
from captioning.models.caption_model import CaptionModel, decoder_sizes
from captioning.models.decoders import DECODERS
from captioning.models.decoders.base import scheduled_sampling_loss, smoothed_nll
from captioning.tasks import check_task, train
from captioning.training.scheduled_sampling import CrossEntropy
from tests.conftest import CONF, compose_train, tiny_overrides

VOCAB, FEATURES, GRID, CELLS = 11, 6, 5, 4
SMALL = {"embed_size": 8, "hidden_size": 8, "attention_size": 8, "d_model": 8, "heads": 2, "num_layers": 1,
         "ff_size": 16, "memory_layers": 1}
DECODER_FILES = sorted(path.stem for path in (CONF / "model" / "decoder").glob("*.yaml"))


class Identity(torch.nn.Module):
    """Stands in for the encoder: the batch holds cached features."""

    def from_cached(self, memory):
        return memory


def small_model(name: str) -> CaptionModel:
    spec = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "decoder" / f"{name}.yaml"))
    spec.update({key: value for key, value in SMALL.items() if key in spec})
    torch.manual_seed(0)
    decoder = DECODERS.build(spec, "model.decoder", **decoder_sizes(spec, VOCAB, FEATURES, GRID))
    return CaptionModel(Identity(), decoder)


def batch() -> tuple[Features, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    memory = Features(torch.randn(3, FEATURES, generator=generator), torch.randn(3, CELLS, GRID, generator=generator))
    tokens = torch.tensor([[1, 4, 5, 6, 2], [1, 7, 2, 0, 0], [1, 3, 8, 9, 2]])  # <start>=1, 0-padded
    return memory, tokens


def targets_of(tokens: torch.Tensor) -> torch.Tensor:
    targets = tokens[:, 1:]
    return targets[targets != 0]


@pytest.mark.parametrize("name", DECODER_FILES)
def test_zero_is_todays_loss_bit_for_bit(name):
    """Through the training loss object (train.label_smoothing=0), in training mode with dropout: the same value as
    the forward call before the option existed, and, in eval mode, as F.cross_entropy over the target logits."""
    model, (memory, tokens) = small_model(name).train(), batch()
    loss = CrossEntropy(cached=True, sampler=SimpleNamespace(epoch=0), schedule={"start": 0, "increase_every": 1,
                        "increase_prob": 0.0, "max_prob": 0.0}, label_smoothing=0.0)
    torch.manual_seed(5)
    before, count = model(memory, tokens, True)
    torch.manual_seed(5)
    now, now_count = loss(model, {"input": memory, "tokens": tokens})
    assert torch.equal(now, before) and now_count == count == 10
    model.eval()
    plain = F.cross_entropy(model.decoder.target_logits(memory, tokens).float(), targets_of(tokens), reduction="sum")
    assert torch.equal(model(memory, tokens, True, label_smoothing=0.0)[0], plain)


@pytest.mark.parametrize("name", DECODER_FILES)
def test_smoothing_is_torchs_label_smoothed_cross_entropy_summed(name):
    model, (memory, tokens) = small_model(name).eval(), batch()
    logits = model.decoder.target_logits(memory, tokens).float()
    for smoothing in (0.1, 0.5):
        expected = F.cross_entropy(logits, targets_of(tokens), reduction="sum", label_smoothing=smoothing)
        total, count = model(memory, tokens, True, label_smoothing=smoothing)
        assert count == 10 and torch.allclose(total, expected, rtol=1e-6), (name, smoothing)
        assert not torch.allclose(total, model(memory, tokens, True)[0])  # it changed the loss


def test_smoothing_follows_its_definition():
    """(1 - e) x -log p(word) + e x the mean of -log p over the vocabulary, summed over the targets."""
    log_probs = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(2)).log_softmax(dim=1)
    targets = torch.tensor([3, 0, 10, 5])
    by_hand = sum(0.9 * -log_probs[i, t] + 0.1 * -log_probs[i].mean() for i, t in enumerate(targets))
    assert torch.allclose(smoothed_nll(log_probs, targets, 0.1), by_hand, rtol=1e-6)
    assert torch.allclose(F.cross_entropy(log_probs, targets, reduction="sum", label_smoothing=0.1), by_hand, rtol=1e-6)
    assert torch.equal(smoothed_nll(log_probs, targets, 0.0), F.nll_loss(log_probs, targets, reduction="sum"))


@pytest.mark.parametrize("name", ["lstm", "soft_attention"])
def test_scheduled_sampling_smooths_the_same_loss(name):
    """A sampling probability too small to swap a word: word by word through `step`, the teacher-forced smoothed loss."""
    model, (memory, tokens) = small_model(name).eval(), batch()
    for smoothing in (0.0, 0.2):
        stepped, count = scheduled_sampling_loss(model.decoder, memory, tokens, 1e-12, torch.Generator(),
                                                 label_smoothing=smoothing)
        forced, _ = model(memory, tokens, True, label_smoothing=smoothing)
        assert count == 10 and torch.allclose(stepped, forced, rtol=1e-5), (name, smoothing)


@pytest.mark.parametrize("value", [-0.1, 1, 1.5, "0.1", True])
def test_a_value_outside_zero_to_one_is_refused_by_key(value):
    cfg = compose_train([f"train.label_smoothing={value if not isinstance(value, str) else repr(value)}"], "run")
    with pytest.raises(OptionError, match=r"^train\.label_smoothing=.*: expected a number in \[0, 1\)$"):
        check_options(cfg, "train")


def test_scst_and_the_activity_task_refuse_it():
    scst = compose_train(["train.objective=scst", "train.label_smoothing=0.1"], "run")
    with pytest.raises(OptionError, match=r"^train\.label_smoothing=0\.1: .*expected 0 with train\.objective=scst$"):
        check_options(scst, "train")
    check_options(compose_train(["train.objective=scst", "train.label_smoothing=0.0"], "run"), "train")
    activity = compose_train(["task=activity", "data=synthetic_clips", "train.label_smoothing=0.1",
                              "train.select_metric=accuracy"], "run")
    with pytest.raises(OptionError, match=r"^train\.label_smoothing=0\.1: .*task 'activity' writes no captions"):
        check_task(activity)
    check_task(compose_train(["train.label_smoothing=0.1"], "run"))  # a caption task takes it


def test_a_run_trains_with_it_and_validates_without_it(tmp_path, synthetic_root, monkeypatch):
    """train.label_smoothing reaches every training step's loss; the validation loss stays plain cross-entropy."""
    seen = {True: set(), False: set()}  # model.training -> the label_smoothing values its forward calls got
    forward = CaptionModel.forward

    def recording(self, *args, label_smoothing: float = 0.0, **kwargs):
        if kwargs.get("sample") is None:
            seen[self.training].add(label_smoothing)
        return forward(self, *args, label_smoothing=label_smoothing, **kwargs)

    monkeypatch.setattr(CaptionModel, "forward", recording)
    train(compose_train(tiny_overrides(synthetic_root) + ["train.label_smoothing=0.2", "train.max_steps=2",
                                                          "train.epochs=1", "train.show_examples=0"], tmp_path))
    assert seen == {True: {0.2}, False: {0.0}}
