"""What the fast encoding paths change in the numbers: reduced-size JPEG decoding, channels-last
batches and mixed precision, each against the reference encoding.

1. **Reduced-size JPEG decoding** (``jpeg_draft``), at each margin (the decoded shorter side
   keeps at least margin x the backbone's resize size), against full decoding: cosine of
   the embeddings and agreement of the zero-shot predictions, on

   * the real photographs bundled with scikit-learn and matplotlib, at their size;
   * 12-megapixel JPEG photos generated from them and from CIFAR-10 images (``_images.py``).

   The reference for "no visible change": full decoding of the same photo saved at JPEG
   quality 95 instead of 90.
2. **Precision**: the shared CIFAR-10 images encoded by modal-vlm's encoder before issue 15
   (contiguous float32 under ``no_grad``) vs. channels-last float32 under
   ``inference_mode``, bfloat16 and float16 autocast: embedding cosine, largest absolute
   difference, zero-shot accuracy and the accuracy of a logistic-regression probe
   (trained on ``--train-per-class`` images per class, tested on ``--test-per-class``).

    python benchmarks/bench_encode_fidelity.py [--model conse-efficientnet-lite0-minilm]
        [--pretrained random] [--image-size 160] [--n-large 24] [--dtypes float32 bfloat16 float16]
        [--out benchmarks/results/encode_fidelity_<model>.md]

Prints markdown tables and writes them to ``--out``. Accuracy does not depend on the machine's
load; only the run time does.
"""
from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

from _images import bundled_photos, cifar_files, write_large_photos
from _protocol import CIFAR10, ROOT
from bench_encode_throughput import encode_before
from modal_vlm.embeddings import encoding
from modal_vlm.backbones import create_backbone
from modal_vlm.embeddings.cache import EmbeddingCache
from modal_vlm.embeddings.inputs import as_image_items

MARGINS = (1, 2, 3, 4)


def class_names():
    return sorted(p.name for p in (CIFAR10 / "test").iterdir() if p.is_dir())


def zero_shot(backbone, embeddings, names):
    text = backbone.encode_text([f"a photo of a {name}." for name in names]).cpu().numpy()
    return (embeddings @ text.T).argmax(axis=1)


def dct_scale(path, size):
    """The DCT scale-down ``Image.draft`` picks for ``path`` at ``size`` (1: full size)."""
    with Image.open(path) as image:
        width = image.size[0]
        image.draft(image.mode, (size, size))
        return round(width / image.size[0])


def resaved(paths, folder, quality=95):
    out = []
    for i, path in enumerate(paths):
        out.append(os.path.join(folder, f"q{quality}-{i:04d}.jpg"))
        with Image.open(path) as image:
            image.save(out[-1], quality=quality)
    return out


def draft_rows(backbone, sets, names, folder):
    """Cosine to full decoding and zero-shot agreement per photo set and margin."""
    rows = []
    for set_name, paths in sets.items():
        items = as_image_items(paths)
        full = encoding.encode_items(backbone, items, jpeg_draft=False)
        predictions = zero_shot(backbone, full, names)
        floor = encoding.encode_items(backbone, as_image_items(resaved(paths, folder)), jpeg_draft=False)
        variants = [("full decode, JPEG quality 95 instead of 90 (reference)", floor, "—")]
        default = encoding.DRAFT_MARGIN
        try:
            for margin in MARGINS:
                encoding.DRAFT_MARGIN = margin
                scales = sorted({dct_scale(p, encoding.draft_size(backbone)) for p in paths})
                label = f"reduced-size decode, margin {margin}" + (" (default)" if margin == default else "")
                variants.append((label, encoding.encode_items(backbone, items), ", ".join(f"1/{s}" for s in scales)))
        finally:
            encoding.DRAFT_MARGIN = default
        for label, embeddings, scales in variants:
            cosine = (full * embeddings).sum(axis=1)
            same = (zero_shot(backbone, embeddings, names) == predictions).sum()
            rows.append(f"| {set_name} ({len(paths)}) | {label} | {scales} | {cosine.mean():.4f} | "
                        f"{cosine.min():.4f} | {same}/{len(paths)} |")
    return rows


def precision_rows(backbone, args, names):
    """Embedding change and accuracy of each encoder precision against the float32 reference."""
    test = cifar_files(args.test_per_class * len(names))
    train = cifar_files(args.train_per_class * len(names), split="train")
    labels = lambda paths: np.array([names.index(Path(p).parent.name) for p in paths])  # noqa: E731
    y_train, y_test = labels(train), labels(test)
    before_visual = copy.deepcopy(backbone.visual).to(memory_format=torch.contiguous_format)

    def before(paths):
        cache = EmbeddingCache(f"fidelity-before-{args.model}-{args.image_size}")
        encode_before(backbone, before_visual, as_image_items(paths), 64, cache)
        return cache.get([item.fingerprint() for item in as_image_items(paths)])[1]

    variants = [("float32, contiguous, no_grad (before)", before)]
    for dtype in args.dtypes:
        label = f"{dtype}, channels-last, inference_mode" + (" autocast" if dtype != "float32" else "")
        variants.append((label, lambda paths, dtype=dtype: encoding.encode_items(
            backbone, as_image_items(paths), encode_dtype=dtype)))
    rows, reference = [], None
    for label, encode in variants:
        print(f"  encoding {len(train) + len(test)} CIFAR-10 images: {label}", flush=True)
        emb_train, emb_test = encode(train), encode(test)
        if reference is None:
            reference = emb_test, zero_shot(backbone, emb_test, names)
        cosine = (reference[0] * emb_test).sum(axis=1)
        predictions = zero_shot(backbone, emb_test, names)
        probe = LogisticRegression(max_iter=2000, C=10.0).fit(emb_train, y_train)
        rows.append(f"| {label} | {cosine.mean():.5f} | {cosine.min():.5f} | "
                    f"{np.abs(reference[0] - emb_test).max():.1e} | {(predictions == reference[1]).sum()}/{len(test)} "
                    f"| {(predictions == y_test).mean():.3f} | {probe.score(emb_test, y_test):.3f} |")
    return rows, len(test), len(train)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="conse-efficientnet-lite0-minilm")
    parser.add_argument("--pretrained", default=None, help='e.g. "random" for an open_clip architecture offline')
    parser.add_argument("--image-size", type=int, default=None, help="default: 160 for ConSE, else the model's own")
    parser.add_argument("--n-large", type=int, default=24, help="12-megapixel photos generated from CIFAR-10")
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "float16"],
                        choices=list(encoding.ENCODE_DTYPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.image_size is None and args.model.startswith("conse"):
        args.image_size = 160
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"encode_fidelity_{args.model}.md")
    backbone = create_backbone(args.model, args.pretrained, device=args.device, image_size=args.image_size)
    names = class_names()
    photos = bundled_photos()
    with tempfile.TemporaryDirectory(prefix="modal-vlm-fidelity-") as folder:
        print(f"generating {len(photos) + args.n_large} 12-megapixel JPEG photos in {folder} ...", flush=True)
        sets = {
            "bundled real photos, as they are": photos,
            "12 MP from the bundled photos": write_large_photos(photos, os.path.join(folder, "real"), seed=1),
            "12 MP from CIFAR-10": write_large_photos(cifar_files(args.n_large, split="train"),
                                                      os.path.join(folder, "cifar"), seed=2),
        }
        draft = draft_rows(backbone, sets, names, folder)
    precision, n_test, n_train = precision_rows(backbone, args, names)
    lines = [
        f"Encoding fidelity of {args.model} at {backbone.resize_size} px (key `{backbone.key}`), {args.device}.",
        "",
        "Command: `" + shlex.join(["python", "benchmarks/bench_encode_fidelity.py", *sys.argv[1:]]) + "`",
        "",
        "Reduced-size JPEG decoding vs. full decoding (zero-shot: CIFAR-10 class prompts, float32):",
        "",
        "| photos | decoding | DCT scale | cosine mean | cosine min | same zero-shot class |",
        "|---|---|---|---:|---:|---:|",
        *draft,
        "",
        f"Encoder precision on CIFAR-10 ({n_test} test images, linear probe trained on {n_train}), "
        "against the float32 encoder before issue 15:",
        "",
        "| encoder | cosine mean | cosine min | max abs diff | same zero-shot class | zero-shot accuracy "
        "| linear-probe accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *precision,
    ]
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
