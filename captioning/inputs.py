"""What a training item's input is: an image tensor, a feature computed once per run, or a cached feature."""
from __future__ import annotations

import logging
from typing import Callable

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from captioning.data.dataset import ImageLoader, augments, build_transform, collate
from captioning.data.records import CaptionRecord
from captioning.engine import compute_features
from captioning.features import FeatureStore, extract_features
from captioning.models.encoders import ImageEncoder

log = logging.getLogger(__name__)


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, load: Callable[[int], torch.Tensor], count: int):
        self.load, self.count = load, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        return {"input": self.load(index), "tokens": torch.zeros(1, dtype=torch.long), "index": index}


def split_inputs(splits: dict[str, list[CaptionRecord]], encoder: ImageEncoder, data_cfg: DictConfig, batch_size: int,
                 device: torch.device, amp_dtype: torch.dtype | None) -> tuple[dict[str, torch.Tensor | Callable[[int], torch.Tensor]], bool]:
    """Per train/val split, `record index -> input`; the flag is True when inputs are features, not images.

    Cached inputs come as a feature table (N, D) tensor (indexing it is the lookup), images as a loader.

    - `data.features=PATH` with a frozen encoder: read the feature store (made by scripts/extract_features.py,
      or here first when `data.extract_features=true`); it must come from this very encoder.
    - frozen encoder, no augmentation: encode every image once now, not once per epoch.
    - otherwise (fine-tuning or augmenting): decode images every epoch.
    """
    wanted = ("train", "val")
    eval_transform = build_transform(encoder.preprocess)
    if data_cfg.get("features") and encoder.trainable:
        log.warning("model.encoder.trainable=true: features change while fine-tuning, so images are read and "
                    "data.features=%s is not used", data_cfg.features)
    elif data_cfg.get("features"):
        if data_cfg.get("extract_features"):
            records = [record for split in splits.values() for record in split]
            extract_features(encoder, records, data_cfg.features, device=device, batch_size=batch_size,
                             num_workers=data_cfg.num_workers, amp_dtype=amp_dtype)
        store = FeatureStore(data_cfg.features)
        store.check_encoder(encoder)
        if augments(data_cfg.augment):
            log.warning("data.augment is ignored: cached features were computed from unaugmented images")
        return {split: store.table(splits[split]) for split in wanted}, True
    elif not encoder.trainable and not augments(data_cfg.augment):
        inputs = {}
        for split in wanted:
            images = ImageLoader(splits[split], eval_transform)
            loader = DataLoader(_Indexed(images, len(images.paths)), batch_size=batch_size, collate_fn=collate,
                                num_workers=data_cfg.num_workers)
            inputs[split] = compute_features(encoder, loader, device, len(images.paths), amp_dtype,
                                             desc=f"encoding {split} images")
        return inputs, True
    train_transform = build_transform(encoder.preprocess, data_cfg.augment)
    return {"train": ImageLoader(splits["train"], train_transform), "val": ImageLoader(splits["val"], eval_transform)}, False
