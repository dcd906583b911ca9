"""Decoding throughput: batched beam search against the per-image beam search loop of common tutorials.

`benchmark(cfg) -> report` is the work of `scripts/benchmark_decoding.py`. Both decoders run the same
model on the same cached image features; images per second count images captioned, not rows.
"""
from __future__ import annotations

import json
import time
from itertools import cycle
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from benchmarks.devices import device_name, peak_memory_mib, reset_peak, synchronize
from captioning.data.batches import Features
from captioning.data.inputs import ImageInputs
from captioning.data.sources import read_source
from captioning.decoding import Decoder
from captioning.inference.captioner import Captioner
from captioning.inference.paths import chunks


@torch.no_grad()
def tutorial_beam_search(decoder: Decoder, memory: Features, start: int, end: int, beam_size: int,
                         max_tokens: int) -> tuple[list[int], float]:
    """One image's memory (len 1), its beams as rows, finished ones moved to Python lists: the loop most tutorials
    show, over the same decoder contract as `beam_search` (`max_tokens` counts `<end>`).

    Unlike many of them it falls back to the live beams when none ended, instead of crashing.
    """
    k, device = beam_size, memory.device
    copies = torch.zeros(k, dtype=torch.long, device=device)
    state = decoder.reorder_state(decoder.init_state(memory), copies)  # the image's start state, k times
    words = torch.full((k,), start, dtype=torch.long, device=device)
    sequences = torch.empty(k, 0, dtype=torch.long, device=device)
    scores = torch.zeros(k, device=device)
    complete, complete_scores = [], []
    for step in range(max_tokens):
        log_probs, state = decoder.step(words, state)  # (k, V)
        V = log_probs.size(1)
        candidates = (scores[:, None] + log_probs)[:1] if step == 0 else scores[:, None] + log_probs
        scores, ids = candidates.reshape(-1).topk(k)
        parents, words = ids // V, ids % V
        sequences = torch.cat([sequences[parents], words[:, None]], dim=1)
        ended = [i for i, word in enumerate(words.tolist()) if word == end]
        live = [i for i in range(k) if i not in ended]
        complete += sequences[ended].tolist()
        complete_scores += scores[ended].tolist()
        k -= len(ended)
        if k == 0:
            break
        sequences, scores, words = sequences[live], scores[live], words[live]
        state = decoder.reorder_state(state, parents[live])
    if not complete:
        complete, complete_scores = sequences.tolist(), scores.tolist()
    best = max(range(len(complete)), key=complete_scores.__getitem__)
    return complete[best], complete_scores[best]


def timed(run, items: list, device: torch.device, seconds: float, repeats: int) -> tuple[float, float]:
    """Call `run(item)` on items in turn until `seconds` pass, `repeats` times after one untimed call.

    Returns (best rate, peak MiB): like `timeit`, the fastest window, since other load only slows one down.
    """
    run(items[0])
    reset_peak(device)
    rates, calls = [], cycle(items)
    for _ in range(repeats):
        synchronize(device)
        done, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < seconds:
            done += run(next(calls))
            synchronize(device)
        rates.append(done / (time.perf_counter() - begin))
    return max(rates), peak_memory_mib(device)


def cached_features(captioner: Captioner, images, count: int, at_least: int) -> torch.Tensor:
    """Encode up to `count` images once -> pooled features (N, D), repeated to at least `at_least` rows."""
    paths = ImageInputs.find(images)[:count]
    features = torch.cat([captioner.encode(torch.stack([captioner.read(p) for p in batch])).pooled
                          for batch in chunks(paths, 64)])
    return features.repeat(-(-at_least // len(features)), 1)


def benchmark(cfg: DictConfig) -> dict:
    """Print a table of images per second for every beam size and batch size; return it as a dict."""
    captioner = Captioner.from_checkpoint(cfg.checkpoint, device=cfg.device)
    if captioner.inputs.kind != "image":
        raise ValueError(f"{cfg.checkpoint}: a {captioner.inputs.kind} captioner; "
                         "this benchmark decodes cached image features")
    device, vocab, decoder = captioner.device, captioner.vocab, captioner.model.decoder
    if cfg.images is None:  # the test split of the configured data source (built-in shapes: generated if missing)
        images = [str(record.image_path) for record in read_source(cfg.data.source)["test"]]
    else:
        images = OmegaConf.to_container(cfg.images) if OmegaConf.is_list(cfg.images) else str(cfg.images)
    batch_sizes = cfg.cuda_batch_sizes if device.type == "cuda" else cfg.batch_sizes
    features = cached_features(captioner, images, cfg.num_images, at_least=max(batch_sizes))  # (N, D)
    decode = OmegaConf.to_container(cfg.decode, resolve=True)
    max_tokens = (decode["max_words"] or captioner.max_words) + 1  # words + <end>
    name = device_name(device)
    count = min(len(ImageInputs.find(images)), cfg.num_images)
    print(f"decoding cached features of {count} images (D={features.size(1)}) "
          f"on {device}: {name}; max_words {max_tokens - 1}, length_penalty {decode['length_penalty']}")
    header = f"{'beam':>4} {'batch':>6} {'batched img/s':>14} {'loop img/s':>11} {'speedup':>8} {'peak MiB':>9}  device"
    print(header + "\n" + "-" * len(header))

    rows = []
    for beam_size in cfg.beam_sizes:
        def one_by_one(feature: torch.Tensor, beam_size: int = beam_size) -> int:  # feature (1, D)
            tutorial_beam_search(decoder, Features(feature), vocab.start, vocab.end, beam_size, max_tokens)
            return 1

        def batched(batch: torch.Tensor, beam_size: int = beam_size) -> int:  # batch (b, D)
            captioner.decode_features(batch, **{**decode, "beam_size": beam_size, "n_best": 1})
            return len(batch)

        loop_rate = None
        if cfg.loop:
            loop_rate, _ = timed(one_by_one, list(features[:256].split(1)), device, cfg.seconds, cfg.repeats)
        for batch_size in batch_sizes:
            batches = list(features.split(batch_size))[: max(len(features) // batch_size, 1)]  # full batches only
            rate, peak = timed(batched, batches, device, cfg.seconds, cfg.repeats)
            rows.append({"beam_size": beam_size, "batch_size": batch_size, "batched_images_per_s": rate,
                         "loop_images_per_s": loop_rate, "speedup": rate / loop_rate if loop_rate else None,
                         "peak_memory_mib": peak, "device": name})
            loop = f"{loop_rate:11.1f} {rate / loop_rate:7.1f}x" if loop_rate else f"{'-':>11} {'-':>8}"
            print(f"{beam_size:>4} {batch_size:>6} {rate:14.1f} {loop} {peak:9.0f}  {name}", flush=True)
    if device.type != "cuda":
        print("peak MiB on CPU: the process's peak resident memory so far (model, features and Python included)")
    report = {"device": name, "torch": torch.__version__, "decode": decode, "rows": rows}
    if cfg.output:
        Path(cfg.output).write_text(json.dumps(report, indent=2))
    return report
