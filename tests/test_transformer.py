"""The caption Transformer against its references: cached steps = the causal pass, beam = exhaustive search,
beam 1 = greedy, an image alone = the same image in a padded batch (padded regions get no attention), ensembles
with an LSTM, the state's reorder and export, the self-critical and scheduled-sampling losses, bad arguments.

Training runs (ONNX export, SCST and scheduled sampling through `train`, the built-in shapes) are in
test_transformer_runs.py.
"""
from __future__ import annotations

import re

import pytest
import torch

from captioning.data.batches import Features
from captioning.decoding import beam_search, greedy_search, sample_with_log_probs
from captioning.inference.ensemble import EnsembleDecoder, EnsembleMemory
from captioning.models.decoders import DECODERS
from captioning.models.decoders.base import scheduled_sampling_loss
from captioning.registry import SpecError
from captioning.training.scst import baseline_of, policy_loss
from tests.test_decoding import END, START, assert_exhaustive, decoder_of, memory_of

SIZES = {"d_model": 16, "heads": 4, "ff_size": 32}


def transformer(vocab_size: int = 30, *, num_layers: int = 2, memory_layers: int = 1, positions: str = "sinusoidal",
                **arguments):
    """A tiny transformer over memory_of's features (pooled 8, grid cells of 6), in eval mode."""
    torch.manual_seed(0)
    spec = {"name": "transformer", **SIZES, "num_layers": num_layers, "memory_layers": memory_layers,
            "positions": positions, **arguments}
    return DECODERS.build(spec, "model.decoder", vocab_size=vocab_size, feature_dim=8, grid_dim=6).eval()


def regions_of(count: int, seed: int = 0) -> Features:
    """memory_of's images as padded region batches: image i has 4 - i % 3 real regions; the padding holds NaN, which
    must reach no result."""
    memory = memory_of(count, seed)
    real = torch.arange(4) < (4 - torch.arange(count) % 3).unsqueeze(1)  # (count, 4)
    return Features(memory.pooled, memory.grid.masked_fill(~real.unsqueeze(2), float("nan")), real)


def alone(memory: Features, index: int) -> Features:
    """Image `index` of a batch on its own, without its padding (no mask)."""
    cells = memory.grid[index] if memory.mask is None else memory.grid[index][memory.mask[index]]
    return Features(memory.pooled[index:index + 1], cells.unsqueeze(0))


def captions(count: int, length: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    """<start>, random words, <end>, then padding: rows of different lengths (B, length)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(count, length, dtype=torch.long)
    for row in range(count):
        words = int(torch.randint(1, length - 1, (1,), generator=generator))
        tokens[row, 0], tokens[row, words + 1] = START, END
        tokens[row, 1:words + 1] = torch.randint(3, vocab_size, (words,), generator=generator)
    return tokens


def stepped_log_probs(decoder, memory, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probs (B, T - 1, V) of every next word, one cached step at a time."""
    state, out = decoder.init_state(memory), []
    for t in range(tokens.size(1) - 1):
        log_probs, state = decoder.step(tokens[:, t], state)
        out.append(log_probs)
    return torch.stack(out, dim=1)


# ---------------------------------------------------------------- cached steps against the causal pass


@torch.no_grad()
@pytest.mark.parametrize("num_layers, memory_layers", [(1, 0), (3, 0), (3, 2)])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
@pytest.mark.parametrize("regions", [False, True])
def test_cached_steps_give_the_causal_pass_log_probs(num_layers, memory_layers, positions, regions):
    decoder = transformer(num_layers=num_layers, memory_layers=memory_layers, positions=positions)
    memory = regions_of(5) if regions else memory_of(5)
    tokens = captions(5, 9, 30)
    hidden, _ = decoder.teacher_forced(memory, tokens)
    full = torch.log_softmax(decoder.project(hidden), dim=-1)  # (B, T - 1, V), every position at once
    steps = stepped_log_probs(decoder, memory, tokens)
    assert torch.isfinite(steps).all()
    torch.testing.assert_close(steps, full, rtol=0, atol=1e-5)
    # target_logits is the same pass, at the real targets only (what the loss reads)
    targets = tokens[:, 1:] != 0
    torch.testing.assert_close(torch.log_softmax(decoder.target_logits(memory, tokens), -1), full[targets],
                               rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("regions", [False, True])
def test_rows_of_one_image_share_its_memory_and_give_what_each_row_gives_alone(regions, monkeypatch):
    decoder, memory = transformer(), (regions_of if regions else memory_of)(3)
    rows = torch.tensor([2, 0, 2, 1, 0, 2])  # data.sampling=grouped: an image's captions in one batch
    batch, tokens = memory.index_select(0, rows), captions(6, 7, 30)
    encoded = []
    monkeypatch.setattr(decoder, "init_state", lambda m, init=decoder.init_state: encoded.append(len(m)) or init(m))
    hidden, weights = decoder.teacher_forced(batch, tokens)
    assert encoded == [3]  # three distinct images, each encoded once
    for row in range(6):
        one = decoder.teacher_forced(batch.index_select(0, torch.tensor([row])), tokens[row:row + 1])
        torch.testing.assert_close(hidden[row], one[0][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(weights[row], one[1][0], atol=1e-6, rtol=0)
    changed = Features(batch.pooled, batch.grid.clone(), batch.mask)
    changed.grid[2, 0] += 1.0  # row 2: another grid behind image 2's pooled vector is another image
    encoded.clear()
    decoder.teacher_forced(changed, tokens)
    assert encoded == [6]


@torch.no_grad()
def test_padded_regions_get_no_attention_and_change_nothing():
    """An image's log-probs and attention are those of its real regions alone; the padding (NaN) has weight 0."""
    decoder = transformer(memory_layers=2)
    memory, tokens = regions_of(6), captions(6, 7, 30)
    weights = decoder.attention_weights(memory, tokens)  # (B, T - 1, N): last layer, mean over heads
    assert weights.shape == (6, 6, 4) and torch.isfinite(weights).all()
    assert (weights.masked_select(~memory.mask.unsqueeze(1).expand_as(weights)) == 0).all()
    assert (weights.sum(-1) < 1).all() and (weights.sum(-1) > 0).all()  # the pooled token holds the rest
    batched = stepped_log_probs(decoder, memory, tokens)
    for index in range(6):
        torch.testing.assert_close(stepped_log_probs(decoder, alone(memory, index), tokens[index:index + 1])[0],
                                   batched[index], rtol=0, atol=1e-5)


def test_dropout_draws_only_in_training_mode():
    decoder, memory, tokens = transformer(dropout=0.3), memory_of(3), captions(3, 6, 30)
    with torch.no_grad():
        assert torch.equal(decoder.target_logits(memory, tokens), decoder.target_logits(memory, tokens))
        decoder.train()
        assert not torch.equal(decoder.target_logits(memory, tokens), decoder.target_logits(memory, tokens))


# ---------------------------------------------------------------- search (the helpers of test_decoding.py)

SEARCHED = {"sinusoidal": dict(), "learned, 3 layers": dict(positions="learned", num_layers=3, memory_layers=2),
            "no memory layers": dict(memory_layers=0)}


@torch.no_grad()
@pytest.mark.parametrize("arguments, length_penalty", zip(SEARCHED.values(), ["none", "avg", "gnmt"], strict=True),
                         ids=SEARCHED.keys())
def test_beam_as_wide_as_the_search_space_equals_exhaustive_search(arguments, length_penalty):
    """Each kind of transformer with one of the length penalties (every search scores 85 captions per image)."""
    assert_exhaustive(transformer(5, **arguments), memory_of(3), 5, length_penalty)


def searched(kind: str, memory: Features, arguments: dict | None = None):
    """(decoder, memory) to search: a transformer, or an ensemble of one and an LSTM decoding in lockstep (each
    member's state reordered by its own decoder)."""
    decoder = transformer(**(arguments or {}))
    if kind == "transformer":
        return decoder, memory
    return EnsembleDecoder([decoder, decoder_of("lstm/init", 30)]), EnsembleMemory([memory, memory])


@torch.no_grad()
@pytest.mark.parametrize("kind, arguments", [("transformer", a) for a in SEARCHED.values()] + [("ensemble", {})],
                         ids=[*SEARCHED.keys(), "ensemble with an lstm"])
@pytest.mark.parametrize("regions", [False, True])
def test_beam_size_one_is_exactly_greedy(kind, arguments, regions):
    decoder, memory = searched(kind, regions_of(16) if regions else memory_of(16), arguments)
    greedy_tokens, greedy_scores = greedy_search(decoder, memory, start=START, end=END, max_tokens=12)
    tokens, scores = beam_search(decoder, memory, start=START, end=END, beam_size=1, max_tokens=12)
    assert tokens[:, 0].tolist() == greedy_tokens.tolist()
    assert torch.equal(scores[:, 0], greedy_scores)


@torch.no_grad()
@pytest.mark.parametrize("kind", ["transformer", "ensemble"])
@pytest.mark.parametrize("regions", [False, True])
def test_each_image_decodes_the_same_alone_or_in_a_padded_batch(kind, regions):
    """Images leave the search at different steps, so the caches are reordered, repeated and dropped."""
    features = regions_of(24) if regions else memory_of(24)
    decode = lambda f: beam_search(*searched(kind, f), start=START, end=END, beam_size=4,  # noqa: E731
                                   max_tokens=12, n_best=2, length_penalty="avg")
    tokens, scores = decode(features)
    for row in (0, 7, 13, 23):
        alone_tokens, alone_scores = decode(alone(features, row))
        T = alone_tokens.size(2)
        assert torch.equal(alone_tokens[0], tokens[row, :, :T]) and (tokens[row, :, T:] == END).all()
        assert torch.allclose(alone_scores[0], scores[row], atol=1e-5)


# ---------------------------------------------------------------- the state


@torch.no_grad()
@pytest.mark.parametrize("regions", [False, True])
def test_reorder_moves_the_caches_and_keeps_one_memory_per_image(regions):
    decoder = transformer(num_layers=3)
    memory = regions_of(3) if regions else memory_of(3)
    state = decoder.init_state(memory)
    for word in (START, 7):
        _, state = decoder.step(torch.full((3,), word), state)
    assert [tuple(cache.shape) for cache in state.recurrent] == [(3, 4, 2, 4)] * 6  # 3 layers' keys, values
    cross = [m.data_ptr() for m in state.memory]
    moved = decoder.reorder_state(state, torch.tensor([2, 2, 0, 1]))
    assert [m.data_ptr() for m in moved.memory] == cross  # per image, never copied per row
    assert moved.image.tolist() == [2, 2, 0, 1]
    log_probs, _ = decoder.step(torch.full((4,), 9), moved)
    expected, _ = decoder.step(torch.full((3,), 9), state)
    torch.testing.assert_close(log_probs, expected[[2, 2, 0, 1]], rtol=0, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("regions", [False, True])
def test_exported_state_has_rows_first_and_imports_back(regions):
    decoder = transformer(num_layers=2)
    memory = regions_of(3) if regions else memory_of(3)
    _, state = decoder.step(torch.full((3,), START), decoder.init_state(memory))
    state = decoder.reorder_state(state, torch.tensor([1, 0, 0, 2, 1]))
    tensors = decoder.export_state(state)
    assert len(tensors) == 4 + 4 + regions  # caches, cross keys and values, the mask
    assert all(t.size(0) == 5 for t in tensors) and (tensors[-1].dtype == torch.bool) == regions
    rebuilt = decoder.import_state(tuple(t.clone() for t in tensors))
    for word in (6, 11):
        expected, state = decoder.step(torch.full((5,), word), state)
        got, rebuilt = decoder.step(torch.full((5,), word), rebuilt)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert rebuilt.recurrent[0].size(2) == 3  # the cache grew a position per word


# ---------------------------------------------------------------- ensembles, SCST, scheduled sampling


@torch.no_grad()
def test_an_ensembles_step_is_the_mean_of_a_transformer_and_an_lstm():
    """Its searches are tested with the transformer's above (beam 1 = greedy, an image alone = in a batch)."""
    (ensemble, memory), features = searched("ensemble", regions_of(5)), regions_of(5)
    step, _ = ensemble.step(torch.full((5,), START), ensemble.init_state(memory))
    members = [m.step(torch.full((5,), START), m.init_state(features))[0] for m in ensemble.members]
    assert torch.allclose(step, torch.stack(members).mean(0)) and not torch.allclose(members[0], members[1])


def test_one_scst_step_raises_the_sample_above_the_baseline_and_lowers_the_one_below():
    decoder, memory = transformer(12, dropout=0.0).train(), regions_of(1)
    samples = sample_with_log_probs(decoder, memory, start=START, end=END, max_tokens=6, samples=2,
                                    generator=torch.Generator().manual_seed(5))
    assert not torch.equal(samples.tokens[0], samples.tokens[1])

    def log_prob(k: int) -> float:
        with torch.no_grad():
            row = samples.tokens[k, : int(samples.mask[k].sum())]
            stepped = stepped_log_probs(decoder, memory, torch.cat([torch.tensor([START]), row]).unsqueeze(0))
            return float(stepped[0].gather(1, row.unsqueeze(1)).sum())

    before = [log_prob(k) for k in range(2)]
    rewards = torch.tensor([[1.0, 0.0]])
    total, count = policy_loss(samples, rewards, baseline_of(rewards, "mean"))
    (total / count).backward()
    torch.optim.SGD(decoder.parameters(), lr=0.05).step()
    after = [log_prob(k) for k in range(2)]
    assert after[0] > before[0] and after[1] < before[1], (before, after)


@torch.no_grad()
def test_scheduled_sampling_at_probability_zero_is_the_teacher_forced_loss():
    decoder, memory, tokens = transformer(), regions_of(4), captions(4, 8, 30)
    total, count = scheduled_sampling_loss(decoder, memory, tokens, prob=0.0)
    expected, expected_count = decoder.loss(memory, tokens)
    assert count == expected_count and total.item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- arguments

BAD = [
    (dict(d_model=18), "model.decoder.d_model (18) must be a multiple of model.decoder.heads (4)"),
    (dict(heads=0), "model.decoder.heads must be >= 1"),
    (dict(num_layers=0), "model.decoder.num_layers must be >= 1"),
    (dict(memory_layers=-1), "model.decoder.memory_layers must be >= 0"),
    (dict(ff_size=0), "model.decoder.ff_size must be >= 1"),
    (dict(dropout=1.0), "model.decoder.dropout must be in [0, 1), got 1.0"),
    (dict(positions="rotary"), "model.decoder.positions must be one of sinusoidal, learned, got 'rotary'"),
    (dict(max_positions=0), "model.decoder.max_positions must be >= 1"),
]


@pytest.mark.parametrize("arguments, message", BAD, ids=[next(iter(a)) for a, _ in BAD])
def test_bad_arguments_are_refused_by_name(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        transformer(**arguments)


def test_unknown_and_mistyped_keys_are_refused_by_the_registry():
    with pytest.raises(SpecError, match="model.decoder.hidden_size: not an argument of decoder 'transformer'"):
        transformer(hidden_size=32)
    with pytest.raises(SpecError, match="model.decoder.tie_embeddings: expected a bool, found 'yes'"):
        transformer(tie_embeddings="yes")


def test_tied_embeddings_share_one_matrix_and_learned_positions_stop_at_their_end():
    tied, untied = transformer(), transformer(tie_embeddings=False)
    assert tied.project.weight is tied.embed.weight and untied.project.weight is not untied.embed.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 30 * 16
    short = transformer(positions="learned", max_positions=3)
    state = short.init_state(memory_of(1))
    for _ in range(3):
        _, state = short.step(torch.tensor([START]), state)
    with pytest.raises(ValueError, match="learned positions end at 3 tokens"):
        short.step(torch.tensor([START]), state)
