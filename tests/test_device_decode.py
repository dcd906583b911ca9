"""Device-side JPEG decoding for feature extraction: the same images as the CPU path, CPU fallbacks, bad files.

On CUDA the batch is decoded by nvJPEG; here `decode_jpeg` runs on the CPU (libjpeg), the same code path.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.data.datasets import ImageLoader
from captioning.data.device_decode import DevicePreprocess, JpegBytes
from captioning.data.features import FeatureStore, extract_features
from captioning.data.images import ImageReadError
from captioning.data.records import CaptionRecord
from captioning.data.transforms import build_transform
from captioning.models import encoders

PREPROCESS = {"input_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear",
              "crop_pct": 0.875}
CPU = torch.device("cpu")


def photo(path, size=(120, 90), mode="RGB", seed=0, **save):
    """A smooth picture (JPEG-friendly), so the two decoders' small rounding differences stay small."""
    y, x = np.mgrid[0:size[1], 0:size[0]]
    rng = np.random.default_rng(seed)
    channels = [np.sin(x / rng.uniform(5, 15) + c) * np.cos(y / rng.uniform(5, 15)) for c in range(3)]
    pixels = ((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8)
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode != "RGB" else image).save(path, **save)
    return path


def records_of(paths):
    return [CaptionRecord(i, path, "train", ["a caption"]) for i, path in enumerate(paths)]


def both_paths(paths):
    records = records_of(paths)
    transform = build_transform(PREPROCESS)
    loader = JpegBytes(records, transform)
    prepare = DevicePreprocess(PREPROCESS, loader.cpu)
    on_device = prepare([loader(i) for i in range(len(paths))], CPU)
    on_cpu = torch.stack([ImageLoader(records, transform)(i) for i in range(len(paths))])
    return loader, on_device, on_cpu


def test_device_decoding_gives_the_cpu_paths_images(tmp_path):
    paths = [photo(tmp_path / f"{i}.jpg", size=(120 + 10 * i, 90), seed=i, quality=95) for i in range(3)]
    loader, on_device, on_cpu = both_paths(paths)
    assert [loader(i)[0] for i in range(3)] == ["jpeg"] * 3
    assert on_device.shape == on_cpu.shape == (3, 3, 64, 64)
    # Decoders and resizers round differently: a few levels at most, on average far under one.
    difference = (on_device - on_cpu).abs() * 0.25 * 255  # back to 0-255 levels
    assert float(difference.mean()) < 1.0 and float(difference.max()) < 12


def test_pngs_cmyk_and_rotated_jpegs_take_the_cpu_path_exactly(tmp_path):
    rotated = Image.open(photo(tmp_path / "r.jpg")).copy()
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: only the CPU path applies EXIF orientation
    rotated.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    paths = [photo(tmp_path / "a.png"), photo(tmp_path / "c.jpg", mode="CMYK"), tmp_path / "rotated.jpg"]
    loader, on_device, on_cpu = both_paths(paths)
    assert [loader(i)[0] for i in range(3)] == ["image"] * 3
    assert torch.equal(on_device, on_cpu)


def test_a_file_the_decoder_refuses_goes_to_the_cpu_path_and_bad_files_raise_as_there(tmp_path):
    good = photo(tmp_path / "good.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # its header is whole
    records = records_of([good, truncated])
    loader = JpegBytes(records, build_transform(PREPROCESS))
    prepare = DevicePreprocess(PREPROCESS, loader.cpu)
    items = [loader(0), loader(1)]  # the header of the truncated file still reads
    assert items[1][0] == "jpeg"
    with pytest.raises(ImageReadError, match="truncated.jpg"):
        prepare(items, CPU)  # the batch call fails, the file alone fails, the CPU path says why
    header_only = tmp_path / "not_an_image.jpg"
    header_only.write_text("hello")
    with pytest.raises(ImageReadError, match="not_an_image.jpg"):
        JpegBytes(records_of([header_only]), build_transform(PREPROCESS))(0)


def test_a_store_extracted_with_device_decoding_matches_the_cpu_store(tmp_path):
    paths = [photo(tmp_path / f"{i}.jpg", size=(240, 200), seed=i, quality=95) for i in range(5)]
    paths.append(photo(tmp_path / "5.png", size=(240, 200), seed=5))
    records = records_of(paths)
    encoder = encoders.efficientnet_lite0(pretrained=True)
    stores = [FeatureStore(extract_features(encoder, records, tmp_path / name, device=CPU, batch_size=4,
                                            decode_on_device=on_device))
              for name, on_device in (("cpu", False), ("device", True))]
    a, b = (store.table(records)["pooled"] for store in stores)
    cosine = torch.nn.functional.cosine_similarity(a, b)
    assert float(cosine.min()) > 0.99 and torch.equal(a[5], b[5])  # the PNG went through the CPU path in both
