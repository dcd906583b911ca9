"""The measurements behind the training-speed choices: each option against its baseline, on this device.

    python benchmarks/speed_options.py [--device cuda] [--captions ../shared/data/flickr8k-1k/captions.txt]

1. Length bucketing (`train.bucket_pool`): decoder steps over batches drawn with and without it.
   Caption lengths come from --captions (a `image,caption` CSV) when given, else 8-16 random words.
2. `torch.compile` of the loss (decoder forward, and its backward) against eager mode.
3. channels-last memory format for EfficientNet-Lite0 (frozen, and fine-tuned) against contiguous tensors.

Decoder 512/512, 10,000-word vocabulary, batch 64, fused Adam, gradient clipping, timed through
`captioning.training.loop.train_one_epoch` (the real training step) with the decoder's own `loss`.
Every row prints the device name.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Callable

import torch

from benchmarks.devices import device_name, synchronize
from captioning.data.batches import Features
from captioning.data.sampler import EpochSampler
from captioning.models.decoders.lstm import LSTMDecoder
from captioning.models.encoders import efficientnet_lite_imagenet
from captioning.training.loop import train_one_epoch

VOCAB, HIDDEN, FEATURES, BATCH = 10_000, 512, 1280, 64


def caption_lengths(captions_file: str | None, count: int, generator: torch.Generator) -> list[int]:
    """Tokens per caption (words + <start> + <end>): real ones from the CSV, else 8-16 random words."""
    if captions_file:
        with open(captions_file, newline="") as handle:
            lengths = [len(row["caption"].split()) + 2 for row in csv.DictReader(handle)]
        return [lengths[i % len(lengths)] for i in range(count)]
    return (torch.randint(8, 17, (count,), generator=generator) + 2).tolist()


def token_batches(lengths: list[int], bucket_pool: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """`steps` batches (B, T) of random words, cut in EpochSampler's order, each padded to its longest caption."""
    sampler = EpochSampler([1] * len(lengths), "random_caption", seed=0, batch_size=BATCH,
                           lengths=[[n] for n in lengths], bucket=bucket_pool)
    order = [record for record, _ in sampler]
    batches = []
    for start in range(0, BATCH * steps, BATCH):
        widths = [lengths[i] for i in order[start:start + BATCH]]
        tokens = torch.zeros(BATCH, max(widths), dtype=torch.long)
        for row, width in enumerate(widths):
            tokens[row, :width] = torch.randint(4, VOCAB, (width,), generator=generator)
        batches.append(tokens)
    return batches


def per_second(run: Callable[[], None], items: int, repeats: int, device: torch.device) -> float:
    run()  # warm-up (and compilation)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    synchronize(device)
    return items * repeats / (time.perf_counter() - start)


def decoder_rate(batches: list[torch.Tensor], device: torch.device, compile_loss: bool) -> float:
    """Captions/s of `train_one_epoch` over the token batches, the decoder fed fixed random features."""
    torch.manual_seed(0)
    decoder = LSTMDecoder(VOCAB, FEATURES, HIDDEN, HIDDEN).to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-4, fused=True)  # as conf/optim/adam.yaml
    memory = Features(torch.randn(BATCH, FEATURES, device=device))
    loader = [{"tokens": tokens.to(device)} for tokens in batches]
    loss = torch.compile(decoder.loss, dynamic=True) if compile_loss else decoder.loss  # (memory, tokens) -> sum, count

    def epoch() -> None:
        train_one_epoch(decoder, loader, optimizer, device, lambda batch: loss(memory, batch["tokens"]),
                        step=0, max_steps=None, grad_clip=5.0)

    return per_second(epoch, BATCH * len(batches), 1, device)  # the warm-up pass compiles every width


def encoder_rate(device: torch.device, channels_last: bool, backward: bool, repeats: int) -> float:
    """EfficientNet-Lite0 images/s at batch 32: frozen forward, or forward and backward (fine-tuning)."""
    backbone = efficientnet_lite_imagenet(0, pretrained=True).to(device)  # bare: ImageEncoder always uses channels-last
    backbone.reset_classifier(0)
    backbone.train(backward)
    images = torch.randn(32, 3, 224, 224, device=device)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        if backward:
            backbone(images).sum().backward()
        else:
            with torch.no_grad():
                backbone(images)

    return per_second(run, 32, repeats, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--captions", default=None, help="image,caption CSV whose caption lengths to use")
    parser.add_argument("--steps", type=int, default=20, help="timed decoder steps per row")
    parser.add_argument("--encoder-repeats", type=int, default=5, help="timed batches of 32 images per row")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = device_name(device)
    generator = torch.Generator().manual_seed(0)
    lengths = caption_lengths(args.captions, BATCH * 50 * 2, generator)
    source = Path(args.captions).name if args.captions else "8-16 random words"
    rows = []
    for pool in (0, 50):
        batches = token_batches(lengths, pool, args.steps, generator)
        padded = sum(tokens.numel() for tokens in batches) / sum(int((tokens != 0).sum()) for tokens in batches)
        rows.append((f"decoder step, bucket_pool={pool} ({source}; {padded:.2f}x real tokens)",
                     decoder_rate(batches, device, compile_loss=False), "captions"))
    batches = token_batches(lengths, 50, args.steps, generator)
    rows.append(("decoder step, bucket_pool=50, torch.compile of the loss",
                 decoder_rate(batches, device, compile_loss=True), "captions"))
    for backward in (False, True):
        for channels_last in (False, True):
            rows.append((f"EfficientNet-Lite0 {'forward + backward' if backward else 'forward'}, batch 32, "
                         f"{'channels-last' if channels_last else 'contiguous'}",
                         encoder_rate(device, channels_last, backward, args.encoder_repeats), "images"))
    for label, rate, unit in rows:
        print(f"{label:80s} {rate:9.1f} {unit}/s  {name}")


if __name__ == "__main__":
    main()
