"""JPEG decoding on the encoder's device, for feature extraction: nvJPEG on CUDA, batched.

Workers only read each file's header (the pixel limit, the format, the EXIF orientation) and its bytes; the
batch is decoded where the encoder runs (`torchvision.io.decode_jpeg(..., device=...)`), resized and centre-
cropped there as the encoder's preprocessing says. Anything else goes through the CPU path unchanged: PNGs and
other formats, CMYK or otherwise unusual JPEGs, rotated (EXIF) photos, and files the device decoder refuses. An
unreadable file raises the same `ImageReadError` as on the CPU path, so the bad-input policy is unchanged.
On the CPU, `decode_jpeg` decodes with libjpeg: the same code path, used by the tests.
"""
from __future__ import annotations

from typing import Callable

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from captioning.data.datasets import ImageLoader
from captioning.data.images import MAX_IMAGE_PIXELS, open_image
from captioning.data.records import CaptionRecord
from captioning.data.transforms import INTERPOLATION, decode_size

EXIF_ORIENTATION = 0x0112
Item = tuple[str, int, torch.Tensor]  # ("jpeg", index, file bytes) | ("image", index, preprocessed (3, S, S))


class JpegBytes:
    """`index -> Item`: a plain JPEG's bytes, to be decoded on the device, or the CPU path's tensor for the rest."""

    def __init__(self, records: list[CaptionRecord], transform: Callable[[Image.Image], torch.Tensor],
                 max_pixels: int | None = MAX_IMAGE_PIXELS):
        self.cpu = ImageLoader(records, transform, max_pixels=max_pixels)
        self.max_pixels = max_pixels

    def __call__(self, index: int) -> Item:
        path = self.cpu.paths[index]
        with open_image(path, self.max_pixels) as image:  # the header only: raises ImageReadError like the CPU path
            plain = image.format == "JPEG" and image.mode in ("RGB", "L") and \
                image.getexif().get(EXIF_ORIENTATION, 1) == 1
        if plain:
            return "jpeg", index, read_file(str(path))
        return "image", index, self.cpu(index)


def stack_items(items: list[Item]) -> list[Item]:
    return items  # decoded and stacked on the device by DevicePreprocess


class DevicePreprocess:
    """A batch of Items -> images (B, 3, S, S) on `device`, preprocessed as `build_transform(preprocess)` does."""

    def __init__(self, preprocess: dict, fallback: ImageLoader):
        self.size, self.short_side = int(preprocess["input_size"]), decode_size(preprocess)
        self.interpolation = INTERPOLATION[preprocess.get("interpolation", "bilinear")]
        self.mean, self.std = preprocess["mean"], preprocess["std"]
        self.fallback = fallback

    def decode(self, items: list[Item], device: torch.device) -> dict[int, torch.Tensor]:
        """{position: uint8 (3, H, W) on device} for the JPEG items the device decoder takes; one batched call,
        then one call per file to find the ones it refuses (those are left to the CPU path)."""
        jpegs = [(position, data) for position, (kind, _, data) in enumerate(items) if kind == "jpeg"]
        if not jpegs:
            return {}
        try:
            images = decode_jpeg([data for _, data in jpegs], mode=ImageReadMode.RGB, device=device)
            return {position: image for (position, _), image in zip(jpegs, images, strict=True)}
        except RuntimeError:
            decoded = {}
            for position, data in jpegs:
                try:
                    decoded[position] = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
                except RuntimeError:
                    pass
            return decoded

    def __call__(self, items: list[Item], device: torch.device) -> torch.Tensor:
        decoded = self.decode(items, device)
        batch = []
        for position, (_, index, data) in enumerate(items):
            if position in decoded:
                batch.append(self.transform(decoded[position]))
            elif items[position][0] == "image":
                batch.append(data.to(device, non_blocking=True))
            else:  # refused by the device decoder: the CPU path decides (and raises ImageReadError if it cannot)
                batch.append(self.fallback(index).to(device, non_blocking=True))
        return torch.stack(batch)

    def transform(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> normalised float (3, S, S): shorter side resized (antialiased), centre crop."""
        image = TF.resize(image, self.short_side, interpolation=self.interpolation, antialias=True)
        image = TF.center_crop(image, [self.size, self.size])
        return TF.normalize(image.float().div_(255), self.mean, self.std)
