"""Region features of different sizes in one batch: `Features.mask`, and attention decoders that ignore padding.

The reference is each image alone (no padding, no mask): a padded batch must give its captions, its scores and
the sum of its losses, whatever the padded cells hold.
"""
from __future__ import annotations

import pytest
import torch

from captioning.data.batches import Features
from captioning.decoding import beam_search, greedy_search
from captioning.models.decoders import DECODERS
from captioning.models.decoders.attend import coverage_penalty

START, END = 1, 2
REGIONS = [3, 6, 1, 4]  # regions per image: the batch pads them to 6
KINDS = ["soft_attention", "updown"]


def decoder_of(kind: str, dropout: float = 0.0, **options):
    torch.manual_seed(0)
    spec = {"name": kind, "embed_size": 6, "hidden_size": 5, "attention_size": 4, "dropout": dropout, **options}
    return DECODERS.build(spec, "test", vocab_size=11, feature_dim=7, grid_dim=3)


def images(seed: int = 0) -> list[Features]:
    """One Features per image: pooled (7,), grid (K_i, 3)."""
    generator = torch.Generator().manual_seed(seed)
    return [Features(torch.randn(7, generator=generator), torch.randn(k, 3, generator=generator)) for k in REGIONS]


def padded_batch(items: list[Features], fill: str) -> Features:
    """Features.stack of `items`; fill="noise" writes large random numbers over the padded cells."""
    batch = Features.stack(items)
    if fill == "noise":
        noise = torch.randn(batch.grid.shape, generator=torch.Generator().manual_seed(9)) * 1e4
        batch.grid = torch.where(batch.mask.unsqueeze(2), batch.grid, noise)
    return batch


def alone(item: Features) -> Features:
    return Features(item.pooled[None], item.grid[None])


def captions() -> torch.Tensor:
    """Captions of 1 to 5 words for the images, 0-padded: (4, 7)."""
    tokens = torch.zeros(len(REGIONS), 7, dtype=torch.long)
    generator = torch.Generator().manual_seed(4)
    for row, words in enumerate([5, 1, 3, 2]):
        tokens[row, 0] = START
        tokens[row, 1:words + 1] = torch.randint(3, 11, (words,), generator=generator)
        tokens[row, words + 1] = END
    return tokens


def until_end(tokens: torch.Tensor) -> list[int]:
    words = tokens.tolist()
    return words[: words.index(END) + 1] if END in words else words


def test_stack_pads_grids_and_masks_the_padding():
    items = images()
    batch = Features.stack(items)
    assert batch.grid.shape == (4, 6, 3) and batch.mask.dtype == torch.bool
    assert batch.mask.tolist() == [[i < k for i in range(6)] for k in REGIONS]
    for row, item in enumerate(items):
        assert torch.equal(batch.grid[row, : len(item.grid)], item.grid)
        assert torch.equal(batch.grid[row, len(item.grid):], torch.zeros(6 - len(item.grid), 3))
    same = [Features(torch.randn(7), torch.randn(5, 3)) for _ in range(3)]
    plain = Features.stack(same)
    assert plain.mask is None and torch.equal(plain.grid, torch.stack([item.grid for item in same]))
    # An item's own mask is kept (here: its last region is padding), even when every grid has the same size.
    masked = Features.stack([same[0], Features(same[1].pooled, same[1].grid, torch.tensor([1, 1, 1, 1, 0]).bool())])
    assert masked.mask.tolist() == [[True] * 5, [True] * 4 + [False]]
    assert Features.stack([Features(torch.randn(7)), Features(torch.randn(7))]).grid is None
    assert Features.padded(batch.pooled, [item.grid for item in items]).mask.tolist() == batch.mask.tolist()


def test_the_mask_travels_with_the_rows():
    batch = Features.stack(images())
    rows = torch.tensor([3, 0, 0])
    picked = batch.index_select(0, rows)
    assert torch.equal(picked.mask, batch.mask[rows]) and torch.equal(picked.grid, batch.grid[rows])
    assert torch.equal(batch.to("cpu").mask, batch.mask) and batch.float().mask.dtype == torch.bool
    with pytest.raises(ValueError, match="mask must be bool"):
        Features(batch.pooled, batch.grid, batch.mask.float())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("training", [True, False])
def test_padded_regions_get_exactly_zero_attention(kind, training):
    decoder = decoder_of(kind, dropout=0.3).train(training)
    batch = padded_batch(images(), "noise")
    weights = decoder.attention_weights(batch, captions())  # (4, 6, 6): image, next word, region
    for row, regions in enumerate(REGIONS):
        assert (weights[row, :, regions:] == 0.0).all()
    steps = captions()[:, 1:] != 0  # (4, 6): after a caption's end, skip_padding leaves zeros
    torch.testing.assert_close(weights.sum(2)[steps], torch.ones(int(steps.sum())))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("skip_padding", [True, False])
@pytest.mark.parametrize("fill", ["zeros", "noise"])
def test_padded_batch_loss_is_the_sum_of_each_image_alone(kind, skip_padding, fill):
    """Training mode (soft attention: with its coverage penalty), dropout off so both see the same network."""
    decoder = decoder_of(kind, skip_padding=skip_padding).train()
    items, tokens = images(), captions()
    total, count = decoder.loss(padded_batch(items, fill), tokens)
    parts = [decoder.loss(alone(item), tokens[row: row + 1]) for row, item in enumerate(items)]
    assert count == sum(n for _, n in parts)
    torch.testing.assert_close(total, sum(loss for loss, _ in parts), rtol=1e-5, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fill", ["zeros", "noise"])
def test_padded_batch_decodes_as_each_image_alone(kind, fill):
    decoder = decoder_of(kind).eval()
    items = images(seed=1)
    batch = padded_batch(items, fill)
    tokens, scores = greedy_search(decoder, batch, start=START, end=END, max_tokens=8)
    beams, beam_scores = beam_search(decoder, batch, start=START, end=END, beam_size=3, max_tokens=8, n_best=2)
    for row, item in enumerate(items):
        own, own_score = greedy_search(decoder, alone(item), start=START, end=END, max_tokens=8)
        assert until_end(tokens[row]) == until_end(own[0])
        torch.testing.assert_close(scores[row], own_score[0], rtol=1e-5, atol=1e-6)
        own, own_score = beam_search(decoder, alone(item), start=START, end=END, beam_size=3, max_tokens=8, n_best=2)
        assert [until_end(b) for b in beams[row]] == [until_end(b) for b in own[0]]
        torch.testing.assert_close(beam_scores[row], own_score[0], rtol=1e-5, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("kind", KINDS)
def test_exported_state_carries_each_rows_mask(kind):
    """export_state gives each row its image's mask; a step on the imported state is the step on the state."""
    decoder = decoder_of(kind).eval()
    state = decoder.reorder_state(decoder.init_state(padded_batch(images(), "noise")), torch.tensor([2, 2, 0, 3, 1]))
    exported = decoder.export_state(state)
    assert torch.equal(exported[-1], Features.stack(images()).mask[[2, 2, 0, 3, 1]])  # the one bool tensor, last
    words = torch.tensor([1, 4, 5, 6, 7])
    expected, _ = decoder.step(words, state)
    got, _ = decoder.step(words, decoder.import_state(exported))
    assert torch.equal(got, expected)
    plain = decoder.export_state(decoder.init_state(alone(images()[0])))
    assert all(t.dtype != torch.bool for t in plain)  # the mask-less state exports as it always did


def test_coverage_penalty_counts_real_regions_only():
    """Soft attention's training loss adds lambda * sum over real regions of (1 - attention received)^2: by hand."""
    decoder = decoder_of("soft_attention", doubly_stochastic=2.0)
    batch, tokens = padded_batch(images(), "noise"), captions()
    plain, _ = decoder.eval().loss(batch, tokens)
    weights = decoder.attention_weights(batch, tokens).detach()
    steps = (tokens[:, 1:] != 0).sum(1).tolist()
    by_hand = sum(float(((1 - weights[b, :n, :k].sum(0)) ** 2).sum())
                  for b, (n, k) in enumerate(zip(steps, REGIONS, strict=True)))
    assert float(coverage_penalty(weights, tokens[:, 1:], batch.mask)) == pytest.approx(by_hand, rel=1e-5)
    regularised, _ = decoder.train().loss(batch, tokens)
    assert float(regularised.detach()) == pytest.approx(float(plain.detach()) + 2.0 * by_hand, rel=1e-5)
