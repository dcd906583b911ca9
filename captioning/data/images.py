"""Reading images robustly: any mode, EXIF orientation, a pixel limit against decompression bombs, optional
reduced-size JPEG decoding, and clear errors naming the file."""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The default of `data.max_image_pixels`, and of every reader not given a limit (the Captioner, caption.py):
# PIL's own warning threshold, 0.25 GiB of 3-byte pixels. An image whose header declares more is refused
# before anything is decoded (a 48 KB PNG can declare 20000 x 20000).
MAX_IMAGE_PIXELS = 89_478_485
# The longest side an image may have, as a multiple of its shortest. Preprocessing resizes the shorter side to the
# encoder's input size (224-256 px), so a 1 x 80,000,000 image within the pixel limit would become 256 x 20 billion
# pixels; 100 keeps any panorama and bounds the resized image to 100 x 256^2 = 6.6 million pixels.
MAX_ASPECT_RATIO = 100

_PIL_LIMIT = threading.Lock()


class ImageReadError(OSError):
    """An image file is missing, truncated, not an image, or larger than the pixel limit."""


INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def check_preprocess(preprocess, where: str = "preprocess") -> str | None:
    """What is wrong with an encoder's preprocessing read from a file (a checkpoint, captioner.json), naming the key;
    None when it is usable. The resized image (shorter side input_size / crop_pct, squared) is held to the pixel limit
    images are read under, so a crafted size cannot make every image a huge allocation."""
    if not isinstance(preprocess, dict):
        return f"{where}: expected a mapping of input_size, mean, std, interpolation, crop_pct, found {preprocess!r:.80}"
    size, crop = preprocess.get("input_size"), preprocess.get("crop_pct", 1.0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return f"{where}.input_size: expected an integer >= 1, found {size!r:.80}"
    if not _number(crop) or crop <= 0:
        return f"{where}.crop_pct: expected a number > 0, found {crop!r:.80}"
    if int(size / crop) ** 2 > MAX_IMAGE_PIXELS:
        return (f"{where}.input_size={size}: images would be resized to {int(size / crop)} px squared, over the "
                f"{MAX_IMAGE_PIXELS}-pixel limit")
    for key in ("mean", "std"):
        value = preprocess.get(key)
        if not isinstance(value, list) or len(value) != 3 or not all(map(_number, value)) or (
                key == "std" and min(value) <= 0):
            return f"{where}.{key}: expected 3 {'positive ' if key == 'std' else ''}numbers, found {value!r:.80}"
    if preprocess.get("interpolation", "bilinear") not in INTERPOLATIONS:
        return (f"{where}.interpolation: expected one of {' | '.join(INTERPOLATIONS)}, "
                f"found {preprocess['interpolation']!r:.80}")
    return None


def shown(path: str | Path) -> str:
    """A path as messages name it: quoted (repr) when spaces at its ends or control characters would hide them."""
    text = str(path)
    return repr(text) if text != text.strip() or not text.isprintable() else text


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit-depth greyscale: PIL's own convert clips at 255, so rescale by the value range.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@contextlib.contextmanager
def _pil_limit(max_pixels: int | None) -> Iterator[None]:
    """PIL refuses images over twice its own limit (warning above it), whatever ours is; a larger limit, or none,
    lifts PIL's for this read only (under a lock, as it is a module global)."""
    own = Image.MAX_IMAGE_PIXELS
    if own is None or (max_pixels and max_pixels <= own):
        yield
        return
    with _PIL_LIMIT:
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = own


@contextlib.contextmanager
def open_image(path: str | Path, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Iterator[Image.Image]:
    """`PIL.Image.open`, with every failure inside the block an ImageReadError naming the file: missing, not an
    image, damaged, or declaring more than `max_pixels` pixels (None or 0: no limit), checked from the header
    before anything is decoded."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ImageReadError(f"{shown(path)}: image file not found")
        with _pil_limit(max_pixels), Image.open(path) as image:
            if max_pixels and image.width * image.height > max_pixels:
                raise ImageReadError(_too_large(path, image.size, max_pixels))
            check_aspect(image.size, shown(path))
            yield image
    except ImageReadError:
        raise
    except UnidentifiedImageError as error:
        raise ImageReadError(f"{shown(path)}: not a readable image ({error})") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:  # neither is an OSError
        size = _declared_size(path)  # PIL's limit struck first: say it as ours does
        raise ImageReadError(_too_large(path, size, max_pixels) if size and max_pixels
                             else f"{shown(path)}: refused as a decompression bomb ({error})") from error
    except Exception as error:  # decoders raise many types on damaged bytes (OSError, SyntaxError, struct.error, ...)
        raise ImageReadError(f"{shown(path)}: corrupt or truncated image ({type(error).__name__}: {error})") from error


def check_aspect(size: tuple[int, int], name: str) -> None:
    """Refuse (ImageReadError, naming `name`) an image whose long side is over MAX_ASPECT_RATIO times its short one,
    or that has no pixels: resized for the encoder, it would not fit in memory."""
    width, height = size
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageReadError(f"{name}: {width}x{height} is too thin to caption (the long side may be at most "
                             f"{MAX_ASPECT_RATIO} times the short one: the short side is resized to the encoder's input)")


def _too_large(path: Path, size: tuple[int, int], max_pixels: int) -> str:
    width, height = size
    return (f"{shown(path)}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(data.max_image_pixels; a decompression bomb?)")


def _declared_size(path: Path) -> tuple[int, int] | None:
    """The size an image's header declares, read with PIL's own limit lifted (nothing is decoded)."""
    try:
        with _pil_limit(None), Image.open(path) as image:
            return image.size
    except Exception:  # the message then quotes PIL's
        return None


def load_rgb(path: str | Path, size: int | None = None, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file fully decoded, upright (EXIF) and in RGB.

    `size`: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides keep at least `size` pixels
    (PIL draft mode: much faster on large photos, slightly different pixels; `data.jpeg_draft`). None: full size.
    `max_pixels`: see `open_image`.
    """
    with open_image(path, max_pixels) as image:
        if size and image.format == "JPEG":
            image.draft("RGB", (size, size))
        image.load()  # decode now, so a truncated file fails here and not later
        return to_rgb(ImageOps.exif_transpose(image))


def check_image(path: str | Path, full: bool = True, max_pixels: int | None = MAX_IMAGE_PIXELS) -> str | None:
    """Return a message if the image cannot be read, else None. `full=False` only reads the header."""
    try:
        if full:
            load_rgb(path, max_pixels=max_pixels)
        else:
            with open_image(path, max_pixels) as image:
                image.verify()
    except ImageReadError as error:
        return str(error)
    return None
