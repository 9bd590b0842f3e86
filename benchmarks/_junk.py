"""Images of none of the classes for the open-set benchmarks: kinds of junk a real folder holds.

* ``near``: photos of other objects: CIFAR-10 classes the model is not told about;
* ``digits``: scikit-learn's bundled 8x8 handwritten digits, upscaled to 32x32 RGB (far from
  any photo; no download);
* ``screenshots``: synthetic screenshots drawn here (a window with a title bar, lines of text,
  buttons), 32x32 RGB like CIFAR-10. The open-set weighting was chosen on ``near`` and
  ``digits`` only, so ``screenshots`` are a kind it never saw.

Each kind is a function ``(n, rng) -> uint8 array (n, 32, 32, 3)`` except ``near``, which the
benchmarks take from the CIFAR-10 folders.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from modal_vlm.datasets import load_digits_images

SIZE = 32


def digits(n, rng) -> np.ndarray:
    """``n`` of scikit-learn's 8x8 digits (drawn without replacement), grey on black as RGB."""
    images, _, _ = load_digits_images(size=SIZE)
    chosen = np.sort(rng.choice(len(images), n, replace=False))
    return np.repeat(images[chosen][..., None], 3, axis=-1)


def _words(rng, draw, x, y, width, colour):
    """A line of word-like dashes (text at screenshot scale) from ``x`` up to ``width``."""
    while x < width:
        length = int(rng.integers(6, 22))
        draw.rectangle([x, y, min(x + length, width), y + 2], fill=colour)
        x += length + int(rng.integers(3, 6))


def screenshot(rng) -> np.ndarray:
    """One synthetic screenshot: desktop, a window with a title bar, text lines and a button."""
    side = 96
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(image)
    left, top = (int(v) for v in rng.integers(0, 24, 2))
    right, bottom = side - int(rng.integers(0, 24)), side - int(rng.integers(0, 24))
    dark = rng.random() < 0.3
    paper, ink = ((30, 30, 35), (220, 220, 220)) if dark else ((250, 250, 250), (40, 40, 40))
    draw.rectangle([left, top, right, bottom], fill=paper, outline=(120, 120, 120))
    bar = tuple(int(v) for v in rng.integers(0, 256, 3))
    draw.rectangle([left, top, right, top + 9], fill=bar)
    y = top + 14
    while y < bottom - 18:
        _words(rng, draw, left + 4, y, right - 4 - int(rng.integers(0, 30)), ink)
        y += int(rng.integers(6, 10))
    button = tuple(int(v) for v in rng.integers(0, 256, 3))
    draw.rectangle([right - 26, bottom - 13, right - 5, bottom - 4], fill=button)
    return np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR))


def screenshots(n, rng) -> np.ndarray:
    """``n`` synthetic screenshots (see :func:`screenshot`)."""
    return np.stack([screenshot(rng) for _ in range(n)])


#: The generated kinds by name.
KINDS = {"digits": digits, "screenshots": screenshots}


def junk_files(kind, n, folder, seed=0) -> np.ndarray:
    """``n`` images of a generated kind as PNG files in ``folder / kind`` (written once; the
    same ``seed`` gives the same images), their paths in order: a folder of junk, as a user's
    ``none_data`` would be."""
    from pathlib import Path

    target = Path(folder) / f"{kind}-{n}-seed{seed}"
    paths = [target / f"{i:05d}.png" for i in range(n)]
    if not all(path.exists() for path in paths):
        target.mkdir(parents=True, exist_ok=True)
        for path, pixels in zip(paths, KINDS[kind](n, np.random.default_rng(seed))):
            Image.fromarray(pixels).save(path)
    return np.array([str(path) for path in paths])
