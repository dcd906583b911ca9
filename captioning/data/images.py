"""Reading images robustly: any mode, EXIF orientation, clear errors naming the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image."""


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


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file fully decoded, upright (EXIF) and in RGB."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not later
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except UnidentifiedImageError as error:
        raise ImageReadError(f"{path}: not a readable image ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: corrupt or truncated image ({error})") from error


def check_image(path: str | Path, full: bool = True) -> str | None:
    """Return a message if the image cannot be read, else None. `full=False` only reads the header."""
    path = Path(path)
    try:
        if full:
            load_rgb(path)
        else:
            if not path.is_file():
                raise ImageReadError(f"{path}: image file not found")
            with Image.open(path) as image:
                image.verify()
    except ImageReadError as error:
        return str(error)
    except (OSError, SyntaxError, ValueError) as error:
        return f"{path}: not a readable image ({error})"
    return None
