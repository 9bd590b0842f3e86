"""Image files for the encoding benchmarks: CIFAR-size files from the shared data, large JPEG
photos generated from them, and the real photographs that ship with scikit-learn and
matplotlib.

There are no large photographs in the shared data. A "12-megapixel photo" here is a real
image (a CIFAR-10 image or one of the bundled photographs) resized to 4000 x 3000 with
bicubic interpolation, with a 1/f ("pink") texture over every octave and fine grain
added so that it has detail at every scale as a camera's photo does, saved as a JPEG of
quality 90 (3-5 MB, as a phone's). For throughput, a few such photos are copied into many
distinct files (:func:`distinct_copies`): each copy is decoded in full, and its own bytes give
it its own fingerprint, so the embedding cache cannot skip it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from _protocol import CIFAR10

LARGE_SIZE = (4000, 3000)


def cifar_files(n: int, split: str = "test") -> list[str]:
    """``n`` CIFAR-10 files (32 x 32 JPEG), cycling over the classes in a fixed order."""
    folders = sorted(p for p in (CIFAR10 / split).iterdir() if p.is_dir())
    if not folders:
        raise SystemExit(f"shared CIFAR-10 not found at {CIFAR10} (set MODAL_VLM_CIFAR10)")
    per_class = [sorted(folder.glob("*.jpg")) for folder in folders]
    return [str(per_class[i % len(folders)][i // len(folders)]) for i in range(n)]


def bundled_photos() -> list[str]:
    """Paths of the real photographs bundled with scikit-learn (2) and matplotlib (1, if
    installed): 640 x 427 and 512 x 600 JPEG files."""
    import sklearn

    photos = sorted(str(p) for p in (Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg"))
    try:
        import matplotlib

        hopper = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        photos += [str(hopper)] if hopper.is_file() else []
    except ImportError:
        pass
    return photos


def _pink_texture(width: int, height: int, rng) -> np.ndarray:
    """Zero-mean, unit-variance noise with equal energy in every octave (a 1/f spectrum)."""
    texture = np.zeros((height, width, 3), np.float32)
    octaves, step = 0, 1
    while width // step >= 2:
        coarse = rng.standard_normal((max(2, height // step), max(2, width // step), 3)).astype(np.float32)
        texture += np.stack([np.asarray(Image.fromarray(coarse[..., c], "F").resize((width, height), Image.BILINEAR))
                             for c in range(3)], axis=-1)
        octaves, step = octaves + 1, step * 2
    return texture / np.sqrt(octaves)


def large_photo(source: str, rng, size=LARGE_SIZE) -> Image.Image:
    """A ``size`` RGB image from the image file ``source`` (see the module docstring)."""
    width, height = size
    quarter = (width // 4, height // 4)  # texture at a quarter of the size, then one bicubic 4x
    base = np.asarray(Image.open(source).convert("RGB").resize(quarter, Image.BICUBIC), np.float32)
    textured = np.clip(base + 24 * _pink_texture(*quarter, rng), 0, 255).astype(np.uint8)
    pixels = np.asarray(Image.fromarray(textured).resize(size, Image.BICUBIC), np.int16)
    pixels = pixels + rng.integers(-10, 11, (height, width, 1), dtype=np.int16)  # grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_large_photos(sources, folder, seed: int = 0, quality: int = 90) -> list[str]:
    """One generated large JPEG photo per source file, written to ``folder``."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, source in enumerate(sources):
        path = os.path.join(folder, f"large-{i:04d}.jpg")
        large_photo(source, rng).save(path, quality=quality)
        paths.append(path)
    return paths


def distinct_copies(paths, n: int, folder) -> list[str]:
    """``n`` JPEG files cycling over ``paths``, each made distinct by a JPEG comment segment
    (``COM``, ignored by decoders) naming its copy number."""
    os.makedirs(folder, exist_ok=True)
    sources = [Path(path).read_bytes() for path in paths]
    copies = []
    for i in range(n):
        data = sources[i % len(sources)]
        if data[:2] != b"\xff\xd8":
            raise ValueError(f"{paths[i % len(paths)]} is not a JPEG file")
        comment = f"copy {i}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        copies.append(os.path.join(folder, f"copy-{i:05d}.jpg"))
        Path(copies[-1]).write_bytes(data[:2] + segment + data[2:])
    return copies
