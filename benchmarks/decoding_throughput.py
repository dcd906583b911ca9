"""Decoding throughput: batched beam search against the per-image beam search loop of common tutorials.

`benchmark(cfg) -> report` is the work of `scripts/benchmark_decoding.py`. Both decoders run the same
model on the same cached image features; images per second count images captioned, not rows.
"""
from __future__ import annotations

import json
import platform
import resource
import time
from itertools import cycle
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from captioning.caption import chunks, find_images
from captioning.data.images import load_rgb
from captioning.inference import Captioner
from captioning.models.decoder import LSTMDecoder


@torch.no_grad()
def tutorial_beam_search(decoder: LSTMDecoder, feature: torch.Tensor, start: int, end: int, beam_size: int,
                         max_length: int) -> tuple[list[int], float]:
    """One image (1, D), its beams as rows, finished ones moved to Python lists: the loop most tutorials show.

    Unlike many of them it falls back to the live beams when none ended, instead of crashing.
    """
    k = beam_size
    state = decoder.init_state(feature.expand(k, -1))
    words = torch.full((k,), start, dtype=torch.long, device=feature.device)
    sequences = torch.empty(k, 0, dtype=torch.long, device=feature.device)
    scores = torch.zeros(k, device=feature.device)
    complete, complete_scores = [], []
    for step in range(max_length):
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
        state = tuple(s[:, parents[live]] for s in state)
    if not complete:
        complete, complete_scores = sequences.tolist(), scores.tolist()
    best = max(range(len(complete)), key=complete_scores.__getitem__)
    return complete[best], complete_scores[best]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or "CPU")
    threads = torch.get_num_threads()
    return f"{model}, {threads} thread{'s' if threads > 1 else ''}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset. CPU: the process's peak resident set (it never resets)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(run, items: list, device: torch.device, seconds: float, repeats: int) -> tuple[float, float]:
    """Call `run(item)` on items in turn until `seconds` pass, `repeats` times after one untimed call.

    Returns (best rate, peak MiB): like `timeit`, the fastest window, since other load only slows one down.
    """
    run(items[0])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rates, calls = [], cycle(items)
    for _ in range(repeats):
        sync(device)
        done, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < seconds:
            done += run(next(calls))
            sync(device)
        rates.append(done / (time.perf_counter() - begin))
    return max(rates), peak_memory_mib(device)


def cached_features(captioner: Captioner, images, count: int, at_least: int) -> torch.Tensor:
    """Encode up to `count` images once -> features (N, D), repeated to at least `at_least` rows."""
    paths = find_images(images)[:count]
    features = torch.cat([captioner.encode(torch.stack([captioner.to_input(load_rgb(p)) for p in batch]))
                          for batch in chunks(paths, 64)])
    return features.repeat(-(-at_least // len(features)), 1)


def benchmark(cfg: DictConfig) -> dict:
    """Print a table of images per second for every beam size and batch size; return it as a dict."""
    captioner = Captioner.from_checkpoint(cfg.checkpoint, device=cfg.device)
    device, vocab, decoder = captioner.device, captioner.vocab, captioner.model.decoder
    if cfg.images is None:  # the test split of the configured data source (built-in shapes: generated if missing)
        images = [str(record.image_path) for record in instantiate(cfg.data.source, _convert_="all")["test"]]
    else:
        images = OmegaConf.to_container(cfg.images) if OmegaConf.is_list(cfg.images) else str(cfg.images)
    batch_sizes = cfg.cuda_batch_sizes if device.type == "cuda" else cfg.batch_sizes
    features = cached_features(captioner, images, cfg.num_images, at_least=max(batch_sizes))  # (N, D)
    decode = OmegaConf.to_container(cfg.decode, resolve=True)
    max_length = (decode["max_length"] or captioner.max_length) + 1
    name = device_name(device)
    print(f"decoding cached features of {min(len(find_images(images)), cfg.num_images)} images (D={features.size(1)}) "
          f"on {device}: {name}; max_length {max_length - 1} words, length_penalty {decode['length_penalty']}")
    header = f"{'beam':>4} {'batch':>6} {'batched img/s':>14} {'loop img/s':>11} {'speedup':>8} {'peak MiB':>9}  device"
    print(header + "\n" + "-" * len(header))

    rows = []
    for beam_size in cfg.beam_sizes:
        def one_by_one(feature: torch.Tensor) -> int:  # feature (1, D)
            tutorial_beam_search(decoder, feature, vocab.start, vocab.end, beam_size, max_length)
            return 1

        def batched(batch: torch.Tensor) -> int:  # batch (b, D)
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
