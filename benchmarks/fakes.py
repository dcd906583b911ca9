"""The made-up vocabulary, caption records and model that the training and SCST benchmarks both time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from captioning.data.records import CaptionRecord
from captioning.models.caption_model import CaptionModel, build_caption_model
from captioning.vocab import SPECIALS, Vocabulary


def fake_vocab(size: int) -> Vocabulary:
    return Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(size - len(SPECIALS))])


def fake_records(paths: list[Path], vocab: Vocabulary, seed: int = 0) -> list[CaptionRecord]:
    """Records with 5 random captions of 8-16 words each (a COCO-like length distribution)."""
    rng = np.random.default_rng(seed)
    words = vocab.itos[len(SPECIALS):]
    return [CaptionRecord(i, path, "train", [" ".join(rng.choice(words, rng.integers(8, 17))) for _ in range(5)])
            for i, path in enumerate(paths)]


SIZE_KEYS = {"lstm": ("embed_size", "hidden_size"), "transformer": ("d_model",)}  # the others: attention decoders


def make_model(encoder_spec: dict, vocab_size: int, hidden: int, trainable: bool, device: torch.device,
               decoder: str = "lstm") -> CaptionModel:
    """The registered encoder `encoder_spec` ({name, ...}) and a registered decoder (the Show and Tell LSTM by
    default) of embedding and state size `hidden` (attention decoders: attention size too)."""
    sizes = {key: hidden for key in SIZE_KEYS.get(decoder, ("embed_size", "hidden_size", "attention_size"))}
    spec = {"encoder": {**encoder_spec, "trainable": trainable}, "decoder": {"name": decoder, **sizes}}
    return build_caption_model(spec, vocab_size, where="benchmark").to(device)
