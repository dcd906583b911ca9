"""Image preprocessing as the encoder's weights expect it, plus optional training augmentation."""
from __future__ import annotations

import math
from typing import Callable

import torch
from PIL import Image
from torchvision import transforms as T

INTERPOLATION = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
                  "nearest": T.InterpolationMode.NEAREST}


def build_transform(preprocess: dict, augment: dict | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """Resize/crop/normalise exactly as the encoder's weights expect; optional training augmentation.

    `preprocess` = {input_size, mean, std, interpolation, crop_pct} from the encoder.
    `augment` = {hflip: bool, random_resized_crop: bool, color_jitter: float} (training only).
    """
    size = int(preprocess["input_size"])
    interpolation = INTERPOLATION[preprocess.get("interpolation", "bilinear")]
    augment = augment or {}
    steps: list = []
    if augment.get("random_resized_crop"):
        steps.append(T.RandomResizedCrop(size, scale=(0.6, 1.0), interpolation=interpolation, antialias=True))
    else:
        steps += [T.Resize(decode_size(preprocess), interpolation=interpolation, antialias=True), T.CenterCrop(size)]
    if augment.get("hflip"):
        steps.append(T.RandomHorizontalFlip())
    if augment.get("color_jitter"):
        strength = float(augment["color_jitter"])
        steps.append(T.ColorJitter(strength, strength, strength))
    steps += [T.ToTensor(), T.Normalize(preprocess["mean"], preprocess["std"])]
    return T.Compose(steps)


def decode_size(preprocess: dict) -> int:
    """The shorter side an image is resized to before the centre crop: the least a reduced-size (draft) JPEG
    decode may keep without the encoder seeing fewer pixels."""
    return int(math.floor(int(preprocess["input_size"]) / preprocess.get("crop_pct", 1.0)))


def augments(augment: dict | None) -> bool:
    """Whether an `augment` option turns any augmentation on."""
    return bool(augment) and any(bool(value) for value in augment.values())
