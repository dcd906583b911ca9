"""CIDEr-D reward throughput: `python -m benchmarks.cider_reward_speed [--captions 5000]`.

Document frequencies from the Flickr8k sample's training captions (../shared/data/flickr8k-1k) when present, else
from the built-in shapes; candidates are other images' captions, five per image as self-critical sampling makes.
Reported: captions scored per second, first pass (reference vectors computed) and second pass (cached).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from captioning.data.sources import read_source
from captioning.evaluation.cider_d import CiderD
from captioning.vocab import tokenize

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k-1k"


def training_references() -> tuple[str, list[list[list[str]]]]:
    if FLICKR.is_dir():
        spec = {"name": "flickr", "captions_file": str(FLICKR / "captions.txt"), "image_dir": str(FLICKR / "images"),
                "split_file": str(FLICKR / "split.json")}
        name = "Flickr8k 1k sample, train split"
    else:
        spec, name = {"name": "synthetic", "num_train": 800, "num_val": 8, "num_test": 8}, "built-in shapes"
    records = read_source(spec)["train"]
    return name, [[tokenize(c) for c in r.captions] for r in records]


def run(captions: int = 5000, seed: int = 0) -> dict:
    name, references = training_references()
    reward = CiderD(references)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, len(references), captions)
    candidates = [references[int(rng.integers(len(references)))][int(rng.integers(5))] for _ in range(captions)]
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        reward.scores(candidates, [references[i] for i in images], keys=images.tolist())
        rates.append(captions / (time.perf_counter() - start))
    return {"data": name, "captions": captions, "first_pass_per_s": rates[0], "cached_per_s": rates[1]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=5000)
    result = run(parser.parse_args().captions)
    print(f"CIDEr-D reward ({result['data']}): {result['first_pass_per_s']:.0f} captions/s with reference vectors "
          f"computed on first use, {result['cached_per_s']:.0f} captions/s cached ({result['captions']} captions)")
