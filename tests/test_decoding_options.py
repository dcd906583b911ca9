"""The decoding options users ask for, on hand-made probability tables and against exhaustive search:
n-gram blocking, diverse beam search (Vijayakumar et al. 2018) and nucleus sampling."""
from __future__ import annotations

import math

import pytest
import torch

from captioning.decoding import beam_search, diverse_beam_search, greedy_search, repeated_ngram_words, sample
from tests.test_decoding import END, KINDS, START, A, B, C, TableDecoder, decoder_of, exhaustive, images, memory_of


def has_repeated_ngram(words: list[int], n: int) -> bool:
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


# ---------------------------------------------------------------- n-gram blocking

def test_repeated_ngram_words_bans_exactly_the_words_that_would_repeat_an_ngram():
    history = torch.tensor([[A, B, A, B],     # trigram: "b a b" seen, "a b a" seen: after "a b" -> a banned
                            [A, B, C, A],     # after "c a": "c a ?" never seen -> nothing banned
                            [A, A, A, A]])    # after "a a": "a a a" seen -> a banned
    banned = repeated_ngram_words(history, 3, vocab_size=5)
    assert banned.tolist() == [[False, False, True, False, False], [False] * 5, [False, False, True, False, False]]
    bigram = repeated_ngram_words(history, 2, vocab_size=5)  # after "b": b a seen; after "a": a b; after "a": a a
    assert bigram.tolist() == [[False, False, True, False, False], [False, False, False, True, False],
                               [False, False, True, False, False]]
    unigram = repeated_ngram_words(history, 1, vocab_size=5)  # every word used so far
    assert unigram.tolist() == [[False, False, True, True, False], [False, False, True, True, True],
                                [False, False, True, False, False]]
    assert not repeated_ngram_words(history[:, :2], 3, vocab_size=5).any()  # no complete trigram yet


def test_blocking_turns_a_loop_into_new_words():
    # Image 1 of the table never ends; greedy loops on "a" (.7 after a). Bigram blocking: "a a" once, then "a b"
    # (a banned after a), "b b" (.6), then "b a" (b banned after b).
    tokens, _ = beam_search(TableDecoder(), images(1), start=START, end=END, beam_size=1, max_tokens=5)
    assert tokens[0, 0].tolist() == [A, A, A, A, A]
    tokens, scores = beam_search(TableDecoder(), images(1), start=START, end=END, beam_size=1, max_tokens=5,
                                 block_ngram_repeat=2)
    assert tokens[0, 0].tolist() == [A, A, B, B, A]
    assert scores[0, 0].item() == pytest.approx(math.log(.6 * .7 * .3 * .6 * .4), abs=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("kind", ["table"] + KINDS)
@pytest.mark.parametrize("n, max_tokens", [(1, 3), (2, 4)])
def test_blocked_beam_as_wide_as_the_search_space_equals_exhaustive_search_without_repeats(kind, n, max_tokens):
    decoder, memory = (TableDecoder(), images(0, 1)) if kind == "table" else (decoder_of(kind, 5), memory_of(2))
    expected = exhaustive(decoder, memory, 5, max_tokens, "avg", alpha=0.7)
    width = len(expected[0])
    tokens, scores = beam_search(decoder, memory, start=START, end=END, beam_size=width, max_tokens=max_tokens,
                                 length_penalty="avg", n_best=3, block_ngram_repeat=n)
    for index in range(len(memory)):
        allowed = [(score, s) for score, s in expected[index] if not has_repeated_ngram([w for w in s if w != END], n)
                   and score > float("-inf")]
        best = allowed[:3]  # fewer where blocking leaves fewer captions of non-zero probability (image 1 never ends)
        padding = [float("-inf")] * (3 - len(best))
        assert scores[index].tolist() == pytest.approx([score for score, _ in best] + padding, abs=1e-4)
        for row, (_, sequence) in zip(tokens[index].tolist(), best, strict=False):
            assert row[: len(sequence)] == sequence
            assert not has_repeated_ngram([w for w in row if w != END], n)


# ---------------------------------------------------------------- diverse beam search

@torch.no_grad()
@pytest.mark.parametrize("kind", ["table"] + KINDS)
@pytest.mark.parametrize("options", [dict(beam_size=3, n_best=3, length_penalty="none"),
                                     dict(beam_size=4, n_best=2, length_penalty="gnmt", min_words=1),
                                     dict(beam_size=2, n_best=1, length_penalty="avg", block_ngram_repeat=2)])
def test_one_group_is_exactly_beam_search(kind, options):
    decoder, memory = (TableDecoder(), images(0, 1, 0)) if kind == "table" else (decoder_of(kind, 7), memory_of(3))
    expected = beam_search(decoder, memory, start=START, end=END, max_tokens=6, **options)
    got = diverse_beam_search(decoder, memory, start=START, end=END, max_tokens=6, groups=1, strength=5.0, **options)
    assert torch.equal(got[0], expected[0])
    assert torch.allclose(got[1], expected[1])


class SharedPrefixTable(TableDecoder):
    """Words: <start> <end> a b c. After <start>: a .7, b .3; after a: <end> .55, c .45; after b: <end> .6, c .4;
    after c: <end>. So the two best captions, "a" (.385) and "a c" (.315), share their first word."""
    def step(self, tokens, state):
        table = torch.tensor([[0, 0, .7, .3, 0], [0, 1, 0, 0, 0], [0, .55, 0, 0, .45], [0, .6, 0, 0, .4],
                              [0, 1, 0, 0, 0]])
        return table[tokens].log(), state


def test_a_second_group_is_pushed_off_the_first_groups_words():
    decoder, memory = SharedPrefixTable(), images(0)
    tokens, scores = beam_search(decoder, memory, start=START, end=END, beam_size=2, max_tokens=3, n_best=2)
    assert [row[0] for row in tokens[0].tolist()] == [A, A]
    tokens, scores = diverse_beam_search(decoder, memory, start=START, end=END, beam_size=2, max_tokens=3, n_best=2,
                                         groups=2, strength=10.0)
    # Group 0 finds "a"; group 1 may not start with a, and at step 2 is pushed off <end> (group 0's word): "b c".
    assert tokens[0].tolist() == [[A, END, END], [B, C, END]]
    assert scores[0].tolist() == pytest.approx([math.log(.7 * .55), math.log(.3 * .4)], abs=1e-5)  # own log-probs
    # Without the penalty both groups search alike: the same caption twice.
    tokens, _ = diverse_beam_search(decoder, memory, start=START, end=END, beam_size=2, max_tokens=3, n_best=2,
                                    groups=2, strength=0.0)
    assert tokens[0, 0].tolist() == tokens[0, 1].tolist()


@torch.no_grad()
@pytest.mark.parametrize("kind", KINDS)
def test_diverse_groups_start_differently_on_real_decoders(kind):
    decoder, memory = decoder_of(kind, 9), memory_of(4)
    tokens, scores = diverse_beam_search(decoder, memory, start=START, end=END, beam_size=4, groups=4, strength=50.0,
                                         max_tokens=5, n_best=4)
    for rows in tokens.tolist():
        assert len({row[0] for row in rows}) == 4  # a penalty of 50 outweighs any log-prob gap of these models
    assert torch.equal(scores[:, 0], scores.max(dim=1).values)  # the best caption found comes first


def test_bad_diversity_options_are_refused():
    with pytest.raises(ValueError, match="divide beam_size"):
        diverse_beam_search(TableDecoder(), images(0), start=START, end=END, beam_size=3, groups=2, strength=1.0,
                            max_tokens=3)
    with pytest.raises(ValueError, match="strength"):
        diverse_beam_search(TableDecoder(), images(0), start=START, end=END, beam_size=2, groups=2, strength=-1.0,
                            max_tokens=3)
    with pytest.raises(ValueError, match="block_ngram_repeat"):
        beam_search(TableDecoder(), images(0), start=START, end=END, beam_size=2, max_tokens=3, block_ngram_repeat=-1)


# ---------------------------------------------------------------- nucleus sampling

def first_words(top_p: float, draws: int = 400) -> set[int]:
    tokens, _ = sample(TableDecoder(), images(0), start=START, end=END, max_tokens=1, top_p=top_p, samples=draws,
                       generator=torch.Generator().manual_seed(0))
    return set(tokens[:, 0].tolist())


def test_the_nucleus_is_the_fewest_likeliest_words_that_reach_top_p():
    # After <start> on image 0: a .5, b .3, c .2. The nucleus of .5 is {a}; of .75 {a, b}; of .85 all three.
    assert first_words(0.5) == {A}
    assert first_words(0.75) == {A, B}
    assert first_words(0.85) == {A, B, C}
    assert first_words(1.0) == {A, B, C}


def test_nucleus_sampling_is_seeded_and_a_tiny_nucleus_is_greedy():
    memory = memory_of(3)
    decoder = decoder_of("soft_attention", 9)
    greedy, greedy_scores = greedy_search(decoder, memory, start=START, end=END, max_tokens=6)
    tokens, scores = sample(decoder, memory, start=START, end=END, max_tokens=6, top_p=1e-6, samples=2,
                            generator=torch.Generator().manual_seed(1))
    assert torch.equal(tokens[::2], greedy) and torch.equal(tokens[1::2], greedy)
    assert torch.allclose(scores[::2], greedy_scores)
    draw = [sample(decoder, memory, start=START, end=END, max_tokens=6, top_p=0.9, samples=3,
                   generator=torch.Generator().manual_seed(seed))[0] for seed in (7, 7, 8)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    with pytest.raises(ValueError, match="top_p"):
        sample(decoder, memory, start=START, end=END, max_tokens=6, top_p=0.0)


def test_every_sampled_sequence_is_one_the_nucleus_allows():
    # Image 0 with top_p .6: after <start> {a, b}; after a {c, <end>} (.45 + .25 >= .6); after b {<end>}; after c {<end>}.
    tokens, _ = sample(TableDecoder(), images(0), start=START, end=END, max_tokens=3, top_p=0.6, samples=300,
                       generator=torch.Generator().manual_seed(0))
    allowed = {(A, C, END), (A, END, END), (B, END, END)}
    seen = {tuple(row) for row in tokens.tolist()}
    assert seen == allowed
