"""A deterministic synthetic source/target pair that shows transfer effects offline.

Every image is one textured shape on a noisy background.
- source task (16 classes): shape (circle, square, triangle, cross) x texture (horizontal
  stripes, vertical stripes, checker, dots), in colour: the "ImageNet" of the pair.
- target task (4 classes): a different labelling of related images, shifted towards a
  medical look (grey, tinted, speckled, low contrast): striped vs spotted texture x small
  vs large object, on any shape. Texture detectors learned on the source transfer, object
  size is never a source label, so a linear probe on source features is well above chance
  and fine-tuning has something left to learn.
"""
from __future__ import annotations

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
TEXTURES = ("hstripes", "vstripes", "checker", "dots")
SOURCE_CLASSES = tuple(f"{s}-{t}" for s in SHAPES for t in TEXTURES)
TARGET_CLASSES = ("striped-small", "striped-large", "spotted-small", "spotted-large")


def make_synthetic(task: str, n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images (n, 3, size, size) uint8, labels (n,) int64 and class names; same inputs, same bytes.

    Args:
        task: "source" (16 shape x texture classes) or "target" (4 texture x size classes).
        n: images to generate (classes balanced).
        size: image side, in pixels.
        seed: data seed.
    """
    if task not in ("source", "target"):
        raise ValueError(f"synthetic task must be 'source' or 'target', got {task!r}")
    rng = np.random.default_rng([seed, 0 if task == "source" else 1, n, size])
    classes = SOURCE_CLASSES if task == "source" else TARGET_CLASSES
    labels = np.arange(n, dtype=np.int64) % len(classes)  # balanced, then shuffled
    rng.shuffle(labels)
    draw = _source_image if task == "source" else _target_image
    images = np.stack([draw(int(label), size, rng) for label in labels])
    return images, labels, classes


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _shape_mask(shape: str, size: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    yy, xx = _grid(size)
    margin = radius * size + 1
    cy, cx = rng.uniform(margin, size - margin, 2)
    r = radius * size
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dx**2 + dy**2 < r**2
    if shape == "square":
        return np.maximum(abs(dx), abs(dy)) < 0.85 * r
    if shape == "triangle":
        return (dy < 0.8 * r) & (abs(dx) < (dy + 0.9 * r) * 0.6)
    arm = 0.38 * r  # cross
    return ((abs(dx) < arm) & (abs(dy) < r)) | ((abs(dy) < arm) & (abs(dx) < r))


def _texture(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 pattern whose period scales with the image (at least 4 pixels)."""
    yy, xx = _grid(size)
    period = max(4.0, size / 8) * rng.uniform(0.8, 1.25)
    phase_y, phase_x = rng.uniform(0, period, 2)
    y, x = yy + phase_y, xx + phase_x
    if texture == "hstripes":
        return (np.sin(2 * np.pi * y / period) > 0).astype(np.float32)
    if texture == "vstripes":
        return (np.sin(2 * np.pi * x / period) > 0).astype(np.float32)
    if texture == "checker":
        return (np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period) > 0).astype(np.float32)
    cell_y, cell_x = y % period - period / 2, x % period - period / 2  # dots
    return (cell_y**2 + cell_x**2 < (period / 3.2) ** 2).astype(np.float32)


def _source_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    shape, texture = SHAPES[label // len(TEXTURES)], TEXTURES[label % len(TEXTURES)]
    mask = _shape_mask(shape, size, rng.uniform(0.22, 0.4), rng)
    pattern = _texture(texture, size, rng)
    colour_a, colour_b, background = rng.uniform(0, 1, (3, 3, 1, 1)).astype(np.float32)
    obj = pattern * colour_a + (1 - pattern) * colour_b
    noise = rng.normal(0, 0.12, (3, size, size)).astype(np.float32)
    image = np.where(mask, obj, background * 0.8) + noise
    return _to_uint8(image)


def _target_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    spotted, large = divmod(label, 2)
    texture = rng.choice(("checker", "dots")) if spotted else rng.choice(("hstripes", "vstripes"))
    radius = rng.uniform(0.3, 0.4) if large else rng.uniform(0.16, 0.24)
    mask = _shape_mask(str(rng.choice(SHAPES)), size, radius, rng)
    pattern = _texture(str(texture), size, rng)
    contrast = rng.uniform(0.2, 0.45)
    base = rng.uniform(0.3, 0.6)
    grey = np.where(mask, base + contrast * (pattern - 0.5), base - 0.15)
    speckle = grey * rng.gamma(8.0, 1 / 8.0, (size, size)).astype(np.float32)
    tint = np.array([1.0, 0.95, 0.85], dtype=np.float32)[:, None, None] * rng.uniform(0.9, 1.1)
    return _to_uint8(speckle[None] * tint)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
