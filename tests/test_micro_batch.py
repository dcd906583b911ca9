"""train.micro_batch: a batch's forward and backward in pieces, one optimiser step per batch, the same update."""
from __future__ import annotations

import pytest
import torch

from captioning.data.batches import Clips, Features
from captioning.execution import split_batch
from captioning.models.decoders import DECODERS
from captioning.training.loop import train_one_epoch

VOCAB = 12


def batches(count: int, size: int) -> list[dict]:
    """Caption batches of cached features: captions of 2 to 7 words, right-padded with 0."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        lengths = torch.randint(2, 8, (size,), generator=generator)
        tokens = torch.randint(3, VOCAB, (size, int(lengths.max())), generator=generator)
        tokens[torch.arange(tokens.size(1))[None, :] >= lengths[:, None]] = 0
        memory = Features(torch.randn(size, 8, generator=generator), torch.randn(size, 4, 6, generator=generator))
        out.append({"input": memory, "tokens": tokens, "lengths": lengths, "index": torch.arange(size)})
    return out


def trained(kind: str, micro_batch: int | None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    spec = {"name": kind, "embed_size": 8, "hidden_size": 16, "dropout": 0.0}
    if kind == "lstm":
        decoder = DECODERS.build(spec, "test", vocab_size=VOCAB, feature_dim=8)
    else:
        decoder = DECODERS.build({**spec, "attention_size": 8}, "test", vocab_size=VOCAB, feature_dim=8, grid_dim=6)
    optimizer = torch.optim.SGD(decoder.parameters(), lr=0.5)  # not Adam: it scales up the rounding noise of gradients
    # that are zero in exact arithmetic (an attention score's bias: softmax ignores a shift)
    losses = []
    step, _ = train_one_epoch(decoder, batches(3, 10), optimizer, torch.device("cpu"),
                              lambda batch: decoder.loss(batch["input"], batch["tokens"]), step=0, max_steps=None,
                              grad_clip=0.5, micro_batch=micro_batch, on_step=lambda s, loss: losses.append(loss))
    assert step == 3
    return {"losses": torch.tensor(losses), **{name: p.detach().clone() for name, p in decoder.named_parameters()}}


@pytest.mark.parametrize("kind", ["lstm", "soft_attention", "updown"])
def test_pieces_give_the_update_of_the_whole_batch(kind):
    whole, pieces = trained(kind, None), trained(kind, 3)  # 10 captions as 3 + 3 + 3 + 1; pieces hold fewer words
    for name, value in whole.items():  # losses and parameters after 3 steps
        torch.testing.assert_close(pieces[name], value, rtol=1e-5, atol=1e-6, msg=name)
    one_piece = trained(kind, 10)
    assert all(torch.equal(one_piece[name], value) for name, value in whole.items())  # the ordinary step, to the bit


def test_a_loss_that_counts_its_terms_after_the_forward_pass_is_averaged_over_the_batch():
    """SCST knows its number of terms (sampled words) only after sampling: each piece reports its own count and the
    step divides by the batch's total, not by the pieces' sizes."""
    weight = torch.nn.Parameter(torch.zeros(1))
    seen = []

    def loss_fn(batch):  # example i adds i + 1 terms of value (weight - i)
        seen.append(batch["index"].tolist())
        terms = batch["index"].float() + 1
        return ((weight - batch["index"].float()) * terms).sum(), int(terms.sum())

    optimizer = torch.optim.SGD([weight], lr=1.0)
    data = [{"index": torch.arange(5), "x": torch.zeros(5, 2)}]
    train_one_epoch(torch.nn.Linear(1, 1), data, optimizer, torch.device("cpu"), loss_fn, step=0, max_steps=None,
                    micro_batch=2)
    assert seen == [[0, 1], [2, 3], [4]]  # every example once, in order
    assert weight.item() == pytest.approx(-1.0)  # d/dw of (sum of terms) / 15 terms = 15 / 15


def test_split_batch_cuts_tensors_features_and_clips_along_the_batch():
    batch = {"input": Features(torch.randn(5, 3), torch.randn(5, 4, 2)), "tokens": torch.randint(0, 9, (5, 6)),
             "clips": Clips(torch.randn(5, 2, 3), torch.ones(5, 2, dtype=torch.bool)), "index": torch.arange(5) + 10}
    pieces = split_batch(batch, 2)
    assert [piece["index"].tolist() for piece in pieces] == [[10, 11], [12, 13], [14]]
    assert torch.equal(torch.cat([p["input"].grid for p in pieces]), batch["input"].grid)
    assert torch.equal(torch.cat([p["input"].pooled for p in pieces]), batch["input"].pooled)
    assert torch.equal(torch.cat([p["clips"].frames for p in pieces]), batch["clips"].frames)
    assert torch.equal(torch.cat([p["tokens"] for p in pieces]), batch["tokens"])
