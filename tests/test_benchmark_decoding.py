"""The decoding benchmark: its baseline decodes like ours, and the script prints its table."""
from __future__ import annotations

import json

import torch
from hydra import compose, initialize_config_dir

from benchmarks.decoding_throughput import benchmark, tutorial_beam_search
from captioning.data.batches import Features
from captioning.decoding import greedy_search
from captioning.models.decoders.lstm import LSTMDecoder
from tests.conftest import CONF


@torch.no_grad()
def test_tutorial_loop_with_one_beam_is_greedy():
    """The per-image baseline decodes the same model the same way, so the speedup compares like with like."""
    torch.manual_seed(0)
    decoder = LSTMDecoder(vocab_size=20, feature_dim=8, embed_size=8, hidden_size=16).eval()
    features = torch.randn(8, 8) * 3
    tokens, scores = greedy_search(decoder, Features(features), start=1, end=2, max_tokens=10)
    for row in range(8):
        words, score = tutorial_beam_search(decoder, Features(features[row:row + 1]), 1, 2, beam_size=1, max_tokens=10)
        assert words == tokens[row, :len(words)].tolist() and abs(score - float(scores[row])) < 1e-5


def test_benchmark_prints_its_table(learned_run, synthetic_root, tmp_path, capsys):
    output = tmp_path / "benchmark.json"
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("benchmark_decoding", overrides=[
            f"checkpoint={learned_run / 'checkpoints' / 'best.pt'}", f"data.source.root={synthetic_root}",
            "device=cpu", "num_images=16", "beam_sizes=[1,3]", "batch_sizes=[1,8]", "seconds=0.01",
            f"output={output}"])
    report = benchmark(cfg)
    table = capsys.readouterr().out.splitlines()
    assert [(row["beam_size"], row["batch_size"]) for row in report["rows"]] == [(1, 1), (1, 8), (3, 1), (3, 8)]
    assert all(row["batched_images_per_s"] > 0 and row["loop_images_per_s"] > 0 for row in report["rows"])
    rows = [line for line in table if line.split()[:1] in (["1"], ["3"])]
    assert len(rows) == 4 and all(line.endswith(report["device"]) for line in rows)
    assert json.loads(output.read_text()) == report
