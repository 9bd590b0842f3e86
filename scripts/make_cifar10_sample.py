"""Build the embedded CIFAR-10 sample, ``modal_vlm/data/cifar10_sample.npz``, from the shared data.

The sample is what ``modal-vlm demo`` and the documentation's examples run on without any
download: the first ``--pool-per-class`` training images and the first ``--test-per-class``
test images of every class of the shared CIFAR-10 subset (``../shared/data/cifar10``, files
``NNNN.jpg`` in name order), kept as their original JPEG bytes (no re-encoding).

    python scripts/make_cifar10_sample.py [--pool-per-class 100] [--test-per-class 50]

The file holds ``jpeg`` (all JPEG files concatenated, uint8), ``offsets`` (start of each file
in ``jpeg``, plus the end), ``labels``, ``is_test``, ``class_names`` and ``files`` (the
source file of each image, relative to the CIFAR-10 folder).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "modal_vlm" / "data" / "cifar10_sample.npz"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar10", type=Path, default=ROOT / ".." / "shared" / "data" / "cifar10")
    parser.add_argument("--pool-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=50)
    args = parser.parse_args()
    class_names = sorted(p.name for p in (args.cifar10 / "train").iterdir() if p.is_dir())
    blobs, labels, is_test, files = [], [], [], []
    for split, per_class in (("train", args.pool_per_class), ("test", args.test_per_class)):
        for label, name in enumerate(class_names):
            for path in sorted((args.cifar10 / split / name).glob("*.jpg"))[:per_class]:
                blobs.append(path.read_bytes())
                labels.append(label)
                is_test.append(split == "test")
                files.append(path.relative_to(args.cifar10).as_posix())
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    np.savez(OUT, jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
             labels=np.asarray(labels, dtype=np.int64), is_test=np.asarray(is_test),
             class_names=np.asarray(class_names), files=np.asarray(files))
    print(f"{OUT}: {len(blobs)} images, {OUT.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
