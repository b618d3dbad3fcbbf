"""Toy image sets made locally, with class labels (nothing is downloaded).

1. `toy_shapes(n, size, seed)`: one filled shape per image on a light background; class = the shape (circle,
   square, triangle, cross); colour, size (35-60% of the side) and position drawn per image from `seed`. Images are
   (N, 3, size, size) floats in [0, 1], labels (N,) longs. Item i depends only on (seed, i).
2. `digits(size)`: scikit-learn's bundled 8 × 8 handwritten digits (1,797 images, classes 0-9), scaled to [0, 1]
   and upsampled bilinearly to `size`, as 3 equal channels. Needs scikit-learn (`pip install 'rlvr[images]'`).
"""

from __future__ import annotations

import random

import torch

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
PALETTE = ((220, 40, 40), (40, 80, 220), (30, 150, 50), (230, 190, 0), (150, 60, 200), (20, 20, 20))


def _shape(draw, kind: str, cx: float, cy: float, r: float, colour) -> None:
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        w = max(1.0, r / 3)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)


def toy_shapes(n: int, *, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of one shape each and their class (module docstring)."""
    from PIL import Image, ImageDraw

    if n < 1 or size < 8:
        raise ValueError(f"toy_shapes: need n >= 1 and size >= 8, got n={n}, size={size}")
    images, labels = torch.empty(n, 3, size, size), torch.empty(n, dtype=torch.long)
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        label = rng.randrange(len(SHAPE_CLASSES))
        r = rng.uniform(0.35, 0.6) * size / 2
        cx, cy = (rng.uniform(r, size - 1 - r) for _ in range(2))
        image = Image.new("RGB", (size, size), (240, 240, 240))
        _shape(ImageDraw.Draw(image), SHAPE_CLASSES[label], cx, cy, r, rng.choice(PALETTE))
        images[i] = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(
            2, 0, 1).float() / 255
        labels[i] = label
    return images, labels


def digits(*, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits at `size` px (module docstring)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("digits: scikit-learn is not installed (pip install 'rlvr[images]')") from err
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0  # values 0..16
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).repeat(1, 3, 1, 1), torch.tensor(data.target, dtype=torch.long)
