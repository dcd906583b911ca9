"""Decoding functions against hand-worked answers, exhaustive search, and greedy search.

Decoding sees a decoder only through its contract (`init_state`, `step`, `reorder_state`), so the
hand-made probability table and the real LSTM below are both decoders, and so is a decoder whose
state keeps the batch on dim 0 and dim 1 at once.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from captioning.data.batches import Features
from captioning.decoding import beam_search, greedy_search, length_penalty_of, sample
from captioning.models.decoders import DECODERS
from captioning.models.decoders.attend import GridState
from captioning.models.decoders.lstm import LSTMDecoder

# A fake model: next-word probabilities depend on the image and the previous word only.
START, END, A, B, C = range(5)
TABLE = torch.tensor([
    # image 0; columns: next = start, end, a, b, c
    [[0, 0, .50, .30, .20],    # after <start>
     [0, 1, 0, 0, 0],          # after <end> (never reached)
     [0, .25, .10, .20, .45],  # after a
     [0, .80, .12, .04, .04],  # after b
     [0, .90, .05, .03, .02]],  # after c
    # image 1: never ends
    [[0, 0, .6, .4, 0],
     [0, 1, 0, 0, 0],
     [0, 0, .7, .3, 0],
     [0, 0, .4, .6, 0],
     [0, 0, .5, .5, 0]],
])


class TableDecoder:
    """Next-word log-probs read from TABLE. The state is each row's image id (N,), so rows that beam search
    reordered wrongly read the wrong table."""

    def init_state(self, memory: Features) -> torch.Tensor:
        return memory.pooled[:, 0].long()  # (B,) image ids

    def step(self, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return TABLE[state, tokens].log(), state

    def reorder_state(self, state: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return state.index_select(0, rows)


def images(*ids: int) -> Features:
    """The memory of a batch of table images: their ids as (B, 1) features."""
    return Features(torch.tensor(ids, dtype=torch.float).view(-1, 1))


def beam(ids=(0,), **options):
    options = {"beam_size": 2, "max_tokens": 3, **options}
    return beam_search(TableDecoder(), images(*ids), start=START, end=END, **options)


def ln(p: float) -> float:
    return math.log(p)


def lp(length: int, alpha: float) -> float:
    return ((5 + length) / 6) ** alpha


# Image 0, whole sequences: "b" .3*.8=.24 | "a c" .5*.45*.9=.2025 | "c" .2*.9=.18 | "a" .5*.25=.125.
# Greedy follows a (.5), c (.45), <end> (.9).
# Beam 2, step 1 candidates: b.end .24, a.c .225, a.end .125, a.b .1: b.end is in the top 2 and finishes;
# the live beams are a.c and a.b. Without a length penalty, .24 >= .225 means no live beam can win: stop.
HAND_WORKED = [
    # (options, expected tokens (n_best, T) before padding, expected scores)
    ({"beam_size": 1}, [[A, C, END]], [ln(.2025)]),
    ({"beam_size": 2}, [[B, END]], [ln(.24)]),
    # Average log-prob: "b" ln(.24)/2 = -.714 < "a c" ln(.2025)/3 = -.532.
    ({"beam_size": 2, "length_penalty": "avg"}, [[A, C, END]], [ln(.2025) / 3]),
    # GNMT alpha .5: "b" -1.321 beats "a c" -1.383; alpha 1: "b" -1.223 loses to "a c" -1.198.
    ({"beam_size": 2, "length_penalty": "gnmt", "alpha": 0.5}, [[B, END]], [ln(.24) / lp(2, .5)]),
    ({"beam_size": 2, "length_penalty": "gnmt", "alpha": 1.0}, [[A, C, END]], [ln(.2025) / lp(3, 1.0)]),
    # Max tokens 1: both top words are cut there, none ends.
    ({"beam_size": 2, "max_tokens": 1, "n_best": 2}, [[A], [B]], [ln(.5), ln(.3)]),
    # Max tokens 2: step 1 is the last, so its top 2 (b.end, a.c) both finish; "a c" is cut before its <end>.
    ({"beam_size": 2, "max_tokens": 2, "n_best": 2}, [[B, END], [A, C]], [ln(.24), ln(.225)]),
    # n_best 2 needs a second finished caption: step 2 finishes a.c.end .2025 and a.b.end .08.
    ({"beam_size": 2, "n_best": 2}, [[B, END], [A, C, END]], [ln(.24), ln(.2025)]),
    # Beam 3 keeps a, b, c; step 1 finishes b.end and c.end, lives a.c, a.b, a.a; step 2 finishes a.c.end.
    ({"beam_size": 3, "n_best": 3}, [[B, END], [A, C, END], [C, END]], [ln(.24), ln(.2025), ln(.18)]),
    # min_words 2: <end> is banned at step 1, so "b" cannot finish; a.c and a.b live, a.c.end wins.
    ({"beam_size": 2, "min_words": 2}, [[A, C, END]], [ln(.2025)]),
    # Forbidding b: step 1 finishes c.end .18 but live a.c .225 could still win, and does at step 2.
    ({"beam_size": 2, "forbid": (B,)}, [[A, C, END]], [ln(.2025)]),
]


def padded(rows: list[list[int]], length: int) -> torch.Tensor:
    return torch.tensor([row + [END] * (length - len(row)) for row in rows])


@pytest.mark.parametrize("options, expected_tokens, expected_scores", HAND_WORKED)
def test_beam_search_matches_hand_worked_answers(options, expected_tokens, expected_scores):
    tokens, scores = beam(**options)
    length = max(len(row) for row in expected_tokens)
    assert tokens.shape == (1, len(expected_tokens), length)
    assert tokens[0].tolist() == padded(expected_tokens, length).tolist()
    assert scores[0].tolist() == pytest.approx(expected_scores, abs=1e-5)


def test_beam_that_never_ends_still_gives_its_best_captions_at_max_length():
    # Image 1 never emits <end>. Step 1: aa .42, bb .24, ab .18, ba .16 -> live aa, bb.
    # Step 2 (last): aaa .294, bbb .144, aab .126, bba .096 -> the top 2 finish as they stand.
    tokens, scores = beam((1,), beam_size=2, n_best=2)
    assert tokens[0].tolist() == [[A, A, A], [B, B, B]]
    assert scores[0].tolist() == pytest.approx([ln(.294), ln(.144)], abs=1e-5)


def test_images_in_one_batch_keep_their_own_answers():
    # Image 0 stops after step 1 and leaves the batch while image 1 searches on.
    tokens, scores = beam((0, 1, 0), beam_size=2)
    assert tokens[:, 0].tolist() == [[B, END, END], [A, A, A], [B, END, END]]
    assert scores[:, 0].tolist() == pytest.approx([ln(.24), ln(.294), ln(.24)], abs=1e-5)


def test_greedy_search_follows_the_likeliest_word():
    tokens, scores = greedy_search(TableDecoder(), images(0, 1), start=START, end=END, max_tokens=3)
    assert tokens.tolist() == [[A, C, END], [A, A, A]]
    assert scores.tolist() == pytest.approx([ln(.2025), ln(.294)], abs=1e-5)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="length_penalty"):
        beam(length_penalty="long")
    with pytest.raises(ValueError, match="n_best"):
        beam(beam_size=2, n_best=3)


# ---------------------------------------------------------------- against real (random) decoders

# Every registered decoder kind: the pooled LSTM both ways, and the attention decoders over a grid.
KINDS = ["lstm/init", "lstm/first_step", "soft_attention", "updown"]


def lstm(image_input: str, vocab_size: int = 6) -> LSTMDecoder:
    torch.manual_seed(0)
    return LSTMDecoder(vocab_size=vocab_size, feature_dim=8, embed_size=8, hidden_size=16, num_layers=2,
                       image_input=image_input).eval()


def decoder_of(kind: str, vocab_size: int):
    if kind.startswith("lstm/"):
        return lstm(kind.split("/")[1], vocab_size)
    torch.manual_seed(0)
    return DECODERS.build({"name": kind, "embed_size": 8, "hidden_size": 16, "attention_size": 8}, "test",
                          vocab_size=vocab_size, feature_dim=8, grid_dim=6).eval()


def memory_of(count: int, seed: int = 0) -> Features:
    """Pooled vectors (count, 8) and grids of 4 cells (count, 4, 6), scaled so the words differ between images."""
    generator = torch.Generator().manual_seed(seed)
    return Features(torch.randn(count, 8, generator=generator) * 3, torch.randn(count, 4, 6, generator=generator) * 3)


def image(memory: Features, index: int) -> Features:
    """The memory of one image of a batch."""
    grid = memory.grid[index:index + 1] if memory.grid is not None else None
    return Features(memory.pooled[index:index + 1], grid)


def exhaustive(decoder, memory: Features, vocab_size: int, max_tokens: int, length_penalty: str, alpha: float):
    """Score every sequence the search could return: up to `max_tokens` tokens, stopping at the first <end>."""
    words = [w for w in range(vocab_size) if w != END]
    sequences = [list(s) + [END] for n in range(max_tokens) for s in itertools.product(words, repeat=n)]
    sequences += [list(s) for s in itertools.product(words, repeat=max_tokens)]
    results = []
    for index in range(len(memory)):
        scored = []
        for sequence in sequences:
            state, total, token = decoder.init_state(image(memory, index)), 0.0, torch.tensor([START])
            for word in sequence:
                log_probs, state = decoder.step(token, state)
                total += float(log_probs[0, word])
                token = torch.tensor([word])
            scored.append((total / length_penalty_of(len(sequence), length_penalty, alpha), sequence))
        results.append(sorted(scored, key=lambda item: -item[0]))
    return results


def assert_exhaustive(decoder, memory: Features, vocab_size: int, length_penalty: str = "none", n_best: int = 4):
    """A beam as wide as the search space finds the n_best sequences of exhaustive search, with their scores."""
    max_tokens = 3
    expected = exhaustive(decoder, memory, vocab_size, max_tokens, length_penalty, alpha=0.7)
    width = len(expected[0])  # with 5 words: 1 + 4 + 16 sequences ending in <end>, 64 cut at max_tokens
    tokens, scores = beam_search(decoder, memory, start=START, end=END, beam_size=width, max_tokens=max_tokens,
                                 length_penalty=length_penalty, n_best=n_best)
    for index in range(len(memory)):
        best = expected[index][:n_best]
        assert scores[index].tolist() == pytest.approx([score for score, _ in best], abs=1e-4)
        for row, (_, sequence) in zip(tokens[index].tolist(), best, strict=True):
            assert row[: len(sequence)] == sequence


@torch.no_grad()
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length_penalty", ["none", "avg", "gnmt"])
def test_beam_as_wide_as_the_search_space_equals_exhaustive_search(kind, length_penalty):
    assert_exhaustive(decoder_of(kind, vocab_size=5), memory_of(3), 5, length_penalty)


@torch.no_grad()
@pytest.mark.parametrize("kind", KINDS)
def test_beam_size_one_is_exactly_greedy(kind):
    decoder = decoder_of(kind, vocab_size=30)
    memory = memory_of(16)
    greedy_tokens, greedy_scores = greedy_search(decoder, memory, start=START, end=END, max_tokens=12)
    tokens, scores = beam_search(decoder, memory, start=START, end=END, beam_size=1, max_tokens=12)
    assert tokens[:, 0].tolist() == greedy_tokens.tolist()
    assert torch.equal(scores[:, 0], greedy_scores)


@torch.no_grad()
def test_wider_beams_never_score_worse_and_scores_are_sorted():
    decoder = lstm("init", vocab_size=30)
    memory = Features(torch.randn(16, 8) * 3)
    best = None
    for beam_size in (1, 3, 5):
        _, scores = beam_search(decoder, memory, start=START, end=END, beam_size=beam_size, max_tokens=10,
                                n_best=min(beam_size, 3))
        assert (scores[:, :-1] >= scores[:, 1:]).all()
        if best is not None:
            assert (scores[:, 0] >= best - 1e-5).all()
        best = scores[:, 0]


@torch.no_grad()
def test_forbidden_words_and_min_words_are_respected():
    decoder = lstm("init", vocab_size=30)
    memory = Features(torch.randn(16, 8) * 3)
    tokens, _ = beam_search(decoder, memory, start=START, end=END, beam_size=3, max_tokens=10, min_words=4,
                            forbid=(3, 7), n_best=3)
    assert not torch.isin(tokens, torch.tensor([3, 7])).any()
    assert (tokens[:, :, :4] != END).all()


@torch.no_grad()
def test_sampling_is_seeded_and_top_k_one_is_greedy():
    decoder = lstm("init", vocab_size=30)
    memory = Features(torch.randn(16, 8) * 3)
    draw = lambda seed, **kw: sample(decoder, memory, start=START, end=END, max_tokens=10,  # noqa: E731
                                     generator=torch.Generator().manual_seed(seed), **kw)
    first, second, other = draw(1, temperature=2.0), draw(1, temperature=2.0), draw(2, temperature=2.0)
    assert torch.equal(first[0], second[0]) and not torch.equal(first[0], other[0])
    greedy_tokens, greedy_scores = greedy_search(decoder, memory, start=START, end=END, max_tokens=10)
    tokens, scores = draw(3, top_k=1)
    assert torch.equal(tokens, greedy_tokens) and torch.allclose(scores, greedy_scores)


@torch.no_grad()
@pytest.mark.parametrize("kind", KINDS)
def test_each_image_decodes_the_same_alone_or_in_a_padded_batch_of_64(kind):
    decoder = decoder_of(kind, vocab_size=30)
    features = memory_of(64)
    features.pooled[40:], features.grid[40:] = 0, 0  # padding rows
    decode = lambda f: beam_search(decoder, f, start=START, end=END, beam_size=4,  # noqa: E731
                                   max_tokens=12, n_best=2, length_penalty="avg")
    tokens, scores = decode(features)
    for row in (0, 13, 39, 50):
        alone_tokens, alone_scores = decode(image(features, row))
        T = alone_tokens.size(2)
        assert torch.equal(alone_tokens[0], tokens[row, :, :T]) and (tokens[row, :, T:] == END).all()
        assert torch.allclose(alone_scores[0], scores[row], atol=1e-5)


# ---------------------------------------------------------------- the state's layout is the decoder's business


class RegionLSTM:
    """The LSTM decoder plus a read of per-row image regions at every step, so its state holds tensors whose
    batch dimension differs: regions (N, R, C) on dim 0, the LSTM's (h, c) (L, N, H) on dim 1.

    `batch_last` stores the same state with the batch last instead: regions (R, C, N), (h, c) (L, H, N).
    Only `reorder_state` knows which, so beam search must give the same answers for both layouts.
    """

    def __init__(self, lstm: LSTMDecoder, region_dim: int, batch_last: bool):
        self.lstm, self.batch_last = lstm, batch_last
        self.read = torch.randn(region_dim, lstm.vocab_size, generator=torch.Generator().manual_seed(1)) * 3

    def init_state(self, memory: Features) -> tuple[torch.Tensor, ...]:
        return self.stored(memory.grid, *self.lstm.init_state(memory))

    def stored(self, regions: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.batch_last:
            return regions.permute(1, 2, 0), h.permute(0, 2, 1), c.permute(0, 2, 1)
        return regions, h, c

    def step(self, tokens: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        regions, h, c = state
        if self.batch_last:  # back to (N, R, C) and (L, N, H)
            regions, h, c = regions.permute(2, 0, 1), h.permute(0, 2, 1).contiguous(), c.permute(0, 2, 1).contiguous()
        log_probs, (h, c) = self.lstm.step(tokens, (h, c))  # (N, V)
        log_probs = torch.log_softmax(log_probs + regions.mean(1) @ self.read, dim=-1)
        return log_probs, self.stored(regions, h, c)

    def reorder_state(self, state: tuple, rows: torch.Tensor) -> tuple:
        if self.batch_last:
            return tuple(s.index_select(s.dim() - 1, rows) for s in state)
        regions, h, c = state
        return regions.index_select(0, rows), h.index_select(1, rows), c.index_select(1, rows)


@torch.no_grad()
def test_beam_search_never_assumes_where_the_batch_dimension_is():
    base = lstm("init", vocab_size=5)
    torch.manual_seed(2)
    memory = Features(torch.randn(2, 8) * 3, torch.randn(2, 4, 6))  # 2 images of 4 regions (R=4, C=6)
    mixed, batch_last = RegionLSTM(base, 6, batch_last=False), RegionLSTM(base, 6, batch_last=True)
    assert_exhaustive(mixed, memory, 5)  # right answers with the batch on dims 0 and 1 at once...

    decode = lambda decoder: beam_search(decoder, memory, start=START, end=END, beam_size=3,  # noqa: E731
                                         max_tokens=6, n_best=2)
    tokens, scores = decode(mixed)  # ... and the same answers with the batch last
    other_tokens, other_scores = decode(batch_last)
    assert torch.equal(tokens, other_tokens) and torch.allclose(scores, other_scores, atol=1e-5)
    plain_tokens, _ = beam_search(base, memory, start=START, end=END, beam_size=3, max_tokens=6, n_best=2)
    assert not torch.equal(plain_tokens, tokens)  # the regions matter, so reordering them wrongly would show


@torch.no_grad()
@pytest.mark.parametrize("kind", ["soft_attention", "updown"])
def test_attention_state_reorders_rows_without_copying_the_grid(kind):
    """Beam search moves rows and their image indices; each image's grid and keys stay one tensor, never K copies."""
    decoder = decoder_of(kind, vocab_size=30)
    memory = memory_of(3)
    state = decoder.init_state(memory)
    grids = [m.data_ptr() for m in state.memory]
    rows = torch.tensor([2, 2, 2, 0, 1])  # image 2 three times, as a beam of 3 would after a step
    moved = decoder.reorder_state(decoder.reorder_state(state, rows), torch.tensor([4, 0, 3]))
    assert [m.data_ptr() for m in moved.memory] == grids and moved.image.tolist() == [1, 2, 0]
    # Each moved row decodes exactly as its own image does from the start.
    log_probs, _ = decoder.step(torch.full((3,), START), moved)
    expected, _ = decoder.step(torch.full((3,), START), decoder.init_state(memory).reorder(torch.tensor([1, 2, 0])))
    alone = [decoder.step(torch.tensor([START]), decoder.init_state(image(memory, i)))[0] for i in (1, 2, 0)]
    assert torch.allclose(log_probs, expected) and torch.allclose(log_probs, torch.cat(alone), atol=1e-6)
    assert isinstance(moved, GridState)
