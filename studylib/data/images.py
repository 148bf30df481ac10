"""Decode any common image file into a square RGB uint8 array, once (resize shorter side, centre crop)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")


class ImageReadError(OSError):
    """An image that cannot be decoded; carries the file name."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: grey and 16-bit are stretched to 8 bits, alpha composited on black."""
    image = ImageOps.exif_transpose(image)  # phone and camera pictures carry their rotation in EXIF
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = np.percentile(values, (0.0, 100.0)) if values.size else (0, 1)
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bilinear, antialiased), then centre-crop a square."""
    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(new, Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def read_image(path: str | Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(3, size, size) uint8 and the original (width, height); a bad file raises ImageReadError."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, naming itself
            original = image.size
            array = np.asarray(resize_square(to_rgb(image), size))
    except Image.DecompressionBombError as err:  # a huge (or forged) header: decoding it could exhaust memory
        raise ImageReadError(f"cannot read image {path}: too many pixels to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, MemoryError) as err:
        raise ImageReadError(f"cannot read image {path}: {type(err).__name__}: {err}") from None
    return array.transpose(2, 0, 1).copy(), original


def array_to_rgb(array: np.ndarray, size: int) -> np.ndarray:
    """A (h, w), (h, w, 1) or (h, w, 3) array (e.g. MedMNIST) -> (3, size, size) uint8."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    image = Image.fromarray(array if array.dtype == np.uint8 else array.astype(np.float32), None)
    return np.asarray(resize_square(to_rgb(image), size)).transpose(2, 0, 1).copy()


class LayoutError(ValueError):
    """A folder tree that cannot be read as images of classes; the message names the path and the fix."""


def image_files(folder: Path, not_regular: list[Path] | None = None) -> list[Path]:
    """Image files below `folder`, sorted. Symlinked sub-folders are followed like symlinked files
    (each real folder once, so a link cycle ends), but one that leads back up to `folder` or above is
    refused (its images would take this folder's label); hidden files and folders (.DS_Store, ._x.jpg)
    are not images. Only regular files are images: a FIFO, a device or a dangling link with an image
    suffix is left out (and appended to `not_regular`), never read."""
    found, seen = [], set()
    root = os.path.realpath(folder)
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        if top != str(folder) and (real == root or root.startswith(real.rstrip(os.sep) + os.sep)):
            raise LayoutError(f"{top} is a link to {real}, a folder at or above {folder}: its images would be "
                              f"read again under {Path(folder).name}'s label. "
                              "Remove the link, or link only to image folders")
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(top) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if os.path.isfile(path):  # follows links: False for a FIFO, a device, a dangling or looping link
                found.append(path)
            elif not_regular is not None:
                not_regular.append(path)
    return sorted(found)
