"""A decoder plugs in from one place: defined and registered here, outside the package, it is trained by the
one loop, decoded by beam search, saved, refused when its name is not registered, and reloaded when it is."""
import math

import pytest
import torch
from omegaconf import open_dict
from torch import nn

from captioning.checkpoint import CheckpointError
from captioning.data.batches import Features
from captioning.decoding import beam_search, greedy_search
from captioning.inference.captioner import Captioner
from captioning.models.decoders import DECODERS, CaptionDecoder
from captioning.tasks import train
from tests.conftest import compose_train, tiny_overrides


class GRUDecoder(CaptionDecoder):
    """A GRU cell whose state keeps each row's image vector beside h, both with the batch on dim 0
    (the LSTM's (h, c) have it on dim 1): beam search must go through `reorder_state` to get it right."""

    def __init__(self, vocab_size: int, feature_dim: int, hidden_size: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden_size, padding_idx=0)
        self.start = nn.Linear(feature_dim, hidden_size)
        self.cell = nn.GRUCell(hidden_size + feature_dim, hidden_size)
        self.project = nn.Linear(hidden_size, vocab_size)

    def init_state(self, memory: Features) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(self.start(memory.pooled)), memory.pooled  # (B, H), (B, D)

    def step(self, tokens, state):
        h, image = state
        h = self.cell(torch.cat([self.embed(tokens), image], dim=1), h)
        return torch.log_softmax(self.project(h), dim=-1), (h, image)

    def reorder_state(self, state, rows):
        return tuple(s.index_select(0, rows) for s in state)

    def target_logits(self, memory: Features, tokens: torch.Tensor) -> torch.Tensor:
        state, logits = self.init_state(memory), []
        for t in range(tokens.size(1) - 1):
            h, image = state
            state = (self.cell(torch.cat([self.embed(tokens[:, t]), image], dim=1), h), image)
            logits.append(self.project(state[0]))
        targets = tokens[:, 1:]
        return torch.stack(logits, dim=1)[targets != 0]  # (N, V) at the real targets, row-major


@pytest.fixture
def registered():
    DECODERS.register("test_gru")(GRUDecoder)
    yield
    DECODERS.unregister("test_gru")


@pytest.mark.slow
def test_a_decoder_registered_outside_the_package_trains_decodes_saves_and_reloads(registered, tmp_path, synthetic_root):
    cfg = compose_train(tiny_overrides(synthetic_root) + ["train.epochs=3", "train.show_examples=0"], tmp_path)
    with open_dict(cfg):
        cfg.model.decoder = {"name": "test_gru", "hidden_size": 32}
    result = train(cfg)  # the one loop, validation and checkpoints, nothing GRU-specific anywhere
    words = len(Captioner.from_checkpoint(tmp_path / "checkpoints" / "last.pt", "cpu").vocab)
    assert result["loss"] < math.log(words) - 0.3  # it learned: a uniform guess scores log(V)

    best = tmp_path / "checkpoints" / "best.pt"
    captioner = Captioner.from_checkpoint(best, "cpu")
    assert isinstance(captioner.model.decoder, GRUDecoder)
    images = sorted((synthetic_root).rglob("test_*.png"))[:4]
    assert len(images) == 4
    beam = captioner.caption(images, beam_size=3)
    assert all(caption.caption for caption in beam)
    memory = captioner.encode(torch.stack([captioner.read(image) for image in images]))
    vocab = captioner.vocab
    one, _ = beam_search(captioner.model.decoder, memory, start=vocab.start, end=vocab.end, beam_size=1, max_tokens=21)
    greedy, _ = greedy_search(captioner.model.decoder, memory, start=vocab.start, end=vocab.end, max_tokens=21)
    assert [vocab.decode(row) for row in one[:, 0].tolist()] == [vocab.decode(row) for row in greedy.tolist()]
    # batch invariance: each image alone gets the caption it got in the batch
    assert [captioner.caption(image, beam_size=3).caption for image in images] == [c.caption for c in beam]

    DECODERS.unregister("test_gru")
    with pytest.raises(CheckpointError, match=r"model_spec.decoder.name: unknown decoder 'test_gru'"):
        Captioner.from_checkpoint(best, "cpu")
    DECODERS.register("test_gru")(GRUDecoder)
    again = Captioner.from_checkpoint(best, "cpu")
    assert [c.caption for c in again.caption(images, beam_size=3)] == [c.caption for c in beam]
