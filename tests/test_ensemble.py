"""Checkpoint ensembles: the search runs over the mean of the members' log-probabilities, members may have
different decoders, and members that do not share a vocabulary are refused by name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from captioning.checkpoint import CheckpointError, load_checkpoint
from captioning.decoding import beam_search, greedy_search
from captioning.inference.captioner import Captioner
from captioning.inference.ensemble import EnsembleDecoder, EnsembleMemory
from captioning.tasks import evaluate
from tests.conftest import CONF
from tests.test_caption import builtin_test_split
from tests.test_decoding import END, START, TABLE, TableDecoder, decoder_of, images, memory_of


class Table(torch.nn.Module, TableDecoder):
    """The hand-made table as a module, as ensemble members are."""


class OtherTable(Table):
    """TABLE with every row's probabilities reversed among the words: members that disagree."""
    def step(self, tokens, state):
        flipped = TABLE[state, tokens].clone()
        flipped[:, 2:] = flipped[:, 2:].flip(-1)
        return flipped.clamp(min=1e-6).log(), state


class MeanTable(TableDecoder):
    """One decoder whose log-probs are the mean of TableDecoder's and OtherTable's."""
    def step(self, tokens, state):
        return (TableDecoder.step(self, tokens, state)[0] + OtherTable.step(self, tokens, state)[0]) / 2, state


@pytest.mark.parametrize("options", [dict(beam_size=1), dict(beam_size=3, n_best=3, length_penalty="avg")])
def test_ensemble_search_is_the_search_over_the_mean_of_the_members_log_probs(options):
    ensemble = EnsembleDecoder([Table(), OtherTable()])
    memory = EnsembleMemory([images(0, 1), images(0, 1)])
    got = beam_search(ensemble, memory, start=START, end=END, max_tokens=4, **options)
    expected = beam_search(MeanTable(), images(0, 1), start=START, end=END, max_tokens=4, **options)
    assert torch.equal(got[0], expected[0]) and torch.allclose(got[1], expected[1])
    alone = beam_search(TableDecoder(), images(0, 1), start=START, end=END, max_tokens=4, **options)
    assert not torch.equal(got[0], alone[0])  # the second member changes the answer


@torch.no_grad()
def test_members_with_different_decoders_decode_in_lockstep():
    """A pooled LSTM and both attention decoders over one batch: batch invariance (each member's state is reordered
    by its own decoder) and beam 1 = greedy over the ensemble."""
    members = [decoder_of(kind, 9) for kind in ("lstm/init", "soft_attention", "updown")]
    ensemble = EnsembleDecoder(members)
    features = memory_of(5)
    memory = EnsembleMemory([features] * 3)
    tokens, scores = beam_search(ensemble, memory, start=START, end=END, beam_size=3, n_best=2, max_tokens=6)
    for index in (0, 3):
        one = memory_of(5)
        one.pooled, one.grid = features.pooled[index:index + 1], features.grid[index:index + 1]
        alone, alone_scores = beam_search(ensemble, EnsembleMemory([one] * 3), start=START, end=END, beam_size=3,
                                          n_best=2, max_tokens=6)
        assert torch.equal(alone[0], tokens[index, :, : alone.size(2)]) and torch.allclose(alone_scores[0], scores[index])
    greedy, _ = greedy_search(ensemble, memory, start=START, end=END, max_tokens=6)
    beam1, _ = beam_search(ensemble, memory, start=START, end=END, beam_size=1, max_tokens=6)
    assert torch.equal(beam1[:, 0, : greedy.size(1)], greedy)
    step, _ = ensemble.step(torch.full((5,), START), ensemble.init_state(memory))
    mean = torch.stack([m.step(torch.full((5,), START), m.init_state(features))[0] for m in members]).mean(0)
    assert torch.allclose(step, mean)


def test_an_ensemble_of_one_checkpoint_twice_captions_like_the_checkpoint(learned_run, synthetic_root):
    best = learned_run / "checkpoints" / "best.pt"
    single, pair = Captioner.from_checkpoint(best, "cpu"), Captioner.from_checkpoint([best, best], "cpu")
    paths = builtin_test_split(synthetic_root)[0][:8]
    a, b = single.caption(paths, beam_size=3, n_best=2), pair.caption(paths, beam_size=3, n_best=2)
    assert [c.caption for c in a] == [c.caption for c in b]
    assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-5)


def test_members_must_share_a_vocabulary(learned_run, tmp_path):
    best = learned_run / "checkpoints" / "best.pt"
    payload = load_checkpoint(best)
    payload["vocab"][5], payload["vocab"][6] = payload["vocab"][6], payload["vocab"][5]
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: vocab differs from the first member's .*index 5"):
        Captioner.from_checkpoint([best, tmp_path / "other.pt"], "cpu")


def test_evaluate_takes_a_list_of_checkpoints(learned_run, tmp_path):
    members = [str(learned_run / "checkpoints" / "best.pt"), str(learned_run / "checkpoints" / "last.pt")]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"checkpoint=[{members[0]},{members[1]}]", "split=val", "java=none",
                                             f"output_dir={tmp_path}", "max_images=24"])
    report = evaluate(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert [m["path"] for m in written["checkpoint"]["members"]] == [str(Path(p).resolve()) for p in members]
    assert all(len(m["sha256"]) == 64 for m in written["checkpoint"]["members"])
    assert report["metrics"]["CIDEr"] == pytest.approx(written["metrics"]["CIDEr"])
