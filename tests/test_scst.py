"""Self-critical training pieces: sampling with gradients for every decoder, the baselines, the policy-gradient step."""
from __future__ import annotations

import pytest
import torch

from captioning.data.batches import Features
from captioning.decoding import sample_with_log_probs
from captioning.models.decoders import DECODERS
from captioning.models.decoders.lstm import LSTMDecoder
from captioning.training.scst import baseline_of, policy_loss
from tests.test_transformer import transformer

START, END, VOCAB = 1, 2, 12


def decoder_of(kind: str):
    torch.manual_seed(0)
    if kind == "lstm":
        return LSTMDecoder(vocab_size=VOCAB, feature_dim=8, embed_size=8, hidden_size=16)
    return DECODERS.build({"name": kind, "embed_size": 8, "hidden_size": 16, "attention_size": 8, "dropout": 0.0},
                          "test", vocab_size=VOCAB, feature_dim=8, grid_dim=6)


def memory_of(count: int) -> Features:
    generator = torch.Generator().manual_seed(3)
    return Features(torch.randn(count, 8, generator=generator), torch.randn(count, 4, 6, generator=generator))


@torch.no_grad()
def sequence_log_prob(decoder, memory: Features, row: torch.Tensor, mask: torch.Tensor) -> float:
    """log p(sampled caption | image) recomputed word by word, counted words only."""
    state, word, total = decoder.init_state(memory), torch.tensor([START]), 0.0
    for t in range(int(mask.sum())):
        log_probs, state = decoder.step(word, state)
        total += float(log_probs[0, row[t]])
        word = row[t:t + 1]
    return total


@pytest.mark.parametrize("kind", ["lstm", "soft_attention", "updown"])
def test_one_step_raises_the_sample_above_the_baseline_and_lowers_the_one_below(kind):
    decoder, memory = decoder_of(kind), memory_of(1)
    samples = sample_with_log_probs(decoder, memory, start=START, end=END, max_tokens=6, samples=2,
                                    generator=torch.Generator().manual_seed(5))
    assert not torch.equal(samples.tokens[0], samples.tokens[1])  # two different captions of the one image
    before = [sequence_log_prob(decoder, memory, samples.tokens[k], samples.mask[k]) for k in range(2)]
    rewards = torch.tensor([[1.0, 0.0]])  # the first sample beats the mean of the others, the second does not
    total, count = policy_loss(samples, rewards, baseline_of(rewards, "mean"))
    assert count == int(samples.mask.sum())
    optimizer = torch.optim.SGD(decoder.parameters(), lr=0.05)
    (total / count).backward()
    optimizer.step()
    with torch.no_grad():
        after = [sequence_log_prob(decoder, memory, samples.tokens[k], samples.mask[k]) for k in range(2)]
    assert after[0] > before[0] and after[1] < before[1], (before, after)


def test_samples_stop_at_end_and_only_counted_words_carry_gradient():
    decoder, memory = decoder_of("lstm"), memory_of(3)
    samples = sample_with_log_probs(decoder, memory, start=START, end=END, max_tokens=8, samples=4,
                                    generator=torch.Generator().manual_seed(0))
    assert samples.tokens.shape[0] == 12 and samples.log_probs.requires_grad
    for row, counted in zip(samples.tokens, samples.mask, strict=True):
        ends = (row == END).nonzero()
        if len(ends):  # counted up to and including the first <end>, then `end` padding that does not count
            first = int(ends[0])
            assert counted[: first + 1].all() and not counted[first + 1:].any() and (row[first:] == END).all()
        else:
            assert counted.all()
    assert 0 < float(samples.entropy) <= torch.log(torch.tensor(float(VOCAB)))
    # Seeded: the same generator draws the same captions.
    again = sample_with_log_probs(decoder, memory, start=START, end=END, max_tokens=8, samples=4,
                                  generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.tokens, samples.tokens)
    # Zero advantage: no gradient at all.
    total, _ = policy_loss(samples, torch.ones(3, 4), torch.ones(3, 4))
    assert float(total.detach()) == 0.0


@pytest.mark.parametrize("kind", ["soft_attention", "updown", "transformer"])
def test_sampled_rows_gather_their_images_memory_once_not_once_per_word(kind):
    """K samples per image read their image's grid (or cross-attention keys) through one gather after the reorder
    that repeats them, reused by every later step: with gradients, each step's own gather would be kept for the
    backward pass (at COCO scale, 20 copies of a 320-row grid instead of one). A reorder gathers again."""
    decoder, memory = (transformer(VOCAB) if kind == "transformer" else decoder_of(kind)), memory_of(2)
    rows, per_image = torch.arange(2).repeat_interleave(3), decoder.init_state(memory)
    state = decoder.reorder_state(per_image, rows)
    words = torch.full((6,), START)
    _, first = decoder.step(words, state)
    _, second = decoder.step(words, first)
    gathered = state.rows_memory()
    assert all(a is b for a, b in zip(second.rows_memory(), gathered, strict=True))
    for row_memory, image_memory in zip(gathered, per_image.memory, strict=True):
        assert torch.equal(row_memory, image_memory[rows])  # each row reads its own image
    swapped = decoder.reorder_state(second, torch.tensor([5, 4, 3, 2, 1, 0]))
    for row_memory, image_memory in zip(swapped.rows_memory(), per_image.memory, strict=True):
        assert torch.equal(row_memory, image_memory[rows.flip(0)])


def test_baselines():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    assert baseline_of(rewards, "mean").tolist() == [[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]
    assert baseline_of(rewards, "greedy", torch.tensor([0.5, 4.0])).tolist() == [[0.5] * 3, [4.0] * 3]
    with pytest.raises(ValueError, match="at least 2 samples"):
        baseline_of(rewards[:, :1], "mean")
    with pytest.raises(ValueError, match="greedy captions' rewards"):
        baseline_of(rewards, "greedy")
    with pytest.raises(ValueError, match="baseline must be one of"):
        baseline_of(rewards, "best")


def test_scst_from_a_cross_entropy_checkpoint_raises_val_cider(learned_run, synthetic_root, tmp_path):
    """One command from cross-entropy to SCST (train.init_from keeps the vocabulary and model; new optimiser)."""
    import json

    from captioning.evaluation.cider_d import CiderD
    from captioning.tasks import train
    from tests.conftest import compose_train

    best_epoch = json.loads((learned_run / "metrics.json").read_text())["best"]["epoch"]
    start = next(json.loads(line)["CIDEr"] for line in open(learned_run / "validation.jsonl")
                 if json.loads(line)["epoch"] == best_epoch)
    metrics = train(compose_train([f"data.source.root={synthetic_root}", "train.objective=scst", "train.epochs=1",
                                   f"train.init_from={learned_run / 'checkpoints' / 'best.pt'}", "optim.lr=5e-5",
                                   "train.select_metric=CIDEr", "train.show_examples=0"], tmp_path))
    assert metrics["CIDEr"] > start + 5, (start, metrics["CIDEr"])  # measured: 309.0 -> 333.8 after one epoch
    logged = json.loads((tmp_path / "validation.jsonl").read_text().splitlines()[-1])
    assert 0 < logged["scst_reward"] < 10 and 0 < logged["scst_entropy"] and logged["scst_baseline"] > 0
    frequencies = CiderD.from_state(json.loads((tmp_path / "cider_d.json").read_text()))
    assert frequencies.images == 3000  # the training split's captions, kept with the run


def test_scst_options_are_checked_before_anything_runs(tmp_path, synthetic_root):
    from captioning.config import OptionError
    from captioning.tasks import train
    from tests.conftest import compose_train

    for overrides, message in [(["task=activity", "train.objective=scst"], "train.objective=scst: task 'activity'"),
                               (["train.objective=scst", "train.scst.baseline=mean", "train.scst.samples=1"],
                                "train.scst.baseline=mean: needs train.scst.samples >= 2"),
                               (["train.objective=rl"], "train.objective='rl': expected one of xe | scst"),
                               (["train.scst.temperature=0"], "train.scst.temperature=0: expected")]:
        with pytest.raises(OptionError, match=message):
            train(compose_train([f"data.source.root={synthetic_root}", *overrides], tmp_path / "run"))
        assert not (tmp_path / "run").exists()


def test_the_reward_adds_bleu_weight_times_sentence_bleu4():
    from captioning.evaluation.bleu_reward import sentence_bleu
    from captioning.evaluation.cider_d import CiderD
    from captioning.training.scst import SelfCritical
    from captioning.vocab import Vocabulary

    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "runs", "cat", "sits", "fast"])
    references = [[["a", "dog", "runs", "fast"], ["a", "dog"]], [["a", "cat", "sits"], ["cat", "sits"]]]
    tokens = torch.tensor([[4, 5, 6, 9, 2], [4, 7, 2, 2, 2], [7, 8, 2, 2, 2]])  # "a dog runs fast", "a cat", "cat sits"
    images = [0, 1, 1]

    def rewards(weight: float) -> torch.Tensor:
        loss = SelfCritical(None, vocab, references, CiderD(references), samples=1, baseline="mean",
                            temperature=1.0, max_tokens=5, cached=True, bleu_weight=weight)
        return loss.rewards(tokens, images)
    bleu = torch.tensor([sentence_bleu(words, references[i]) for words, i in
                         zip([["a", "dog", "runs", "fast"], ["a", "cat"], ["cat", "sits"]], images, strict=True)])
    assert bleu[0] == pytest.approx(1.0) and bleu[1] < 0.01  # an exact reference; a 2-word caption has no 4-gram
    assert torch.allclose(rewards(2.5) - rewards(0.0), 2.5 * bleu, atol=1e-6)
