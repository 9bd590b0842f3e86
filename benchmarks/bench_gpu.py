"""The GPU check: encoding and training on a CUDA card, in one short run (never part of CI).

For each backbone (open_clip ``ViT-B-32`` and ``ViT-L-14`` with ``pretrained="random"``: the
speed does not depend on the weights, and nothing is downloaded), on one CUDA device:

* **encoding, end to end**: ``ClipPromptClassifier.transform`` on ``--images`` JPEG photos
  from an empty cache (file reading, decoding threads, preprocessing, the encoder, the cache),
  in float32 and under ``torch.autocast`` in float16 and bfloat16 (``encode_dtype``); beside
  it the **network alone** on batches already on the device. End to end / network alone says
  whether the decoding threads keep the GPU busy (1.0: the GPU is the limit; well below: the
  CPU side is);
* **one fit** on ``--labels`` labels at 10 and 100 classes: ``ClipPromptClassifier``'s
  defaults and ``ClipLinearProbe``, seconds (embeddings cached: training only) and in units of
  one full-length step (forward and backward of the text tower over all C prompts at 77
  tokens, as in ``bench_fit_steps.py``); the prompt learner also under bfloat16 autocast;
* **peak GPU memory** of each phase (``torch.cuda.max_memory_allocated``).

The photos are the real photographs bundled with scikit-learn (640 x 427 JPEG), as distinct
files (``_images.distinct_copies``); no shared data is needed on the GPU machine.

    python benchmarks/bench_gpu.py [--device cuda] [--models ViT-B-32 ViT-L-14] [--images 2048]
        [--out benchmarks/results/gpu.md]
    python benchmarks/bench_gpu.py --device cpu --smoke     # the script itself, on a CPU, in a minute

``--smoke`` runs the same code on the tiny test model with a few images (a check that the
script works, not a measurement). The table names the card, torch, CUDA and the command.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _images import bundled_photos, distinct_copies
from _protocol import ROOT
from bench_fit_steps import CIFAR100, full_length_step
from modal_vlm import ClipLinearProbe, ClipPromptClassifier
from modal_vlm.embeddings import clear_memory_cache
from modal_vlm.embeddings.encoding import encode_items
from modal_vlm.embeddings.inputs import as_image_items

DTYPES = ("float32", "float16", "bfloat16")


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float:
    """Peak memory since :func:`reset_peak`: the GPU's allocator, or the process's RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def network_alone(clf, paths, dtype, device, batch_size) -> float:
    """Images per second of the image encoder on preprocessed batches already on the device."""
    backbone = clf.backbone_
    tensors = [item.to_tensor(backbone.preprocess) for item in as_image_items(paths[:batch_size])]
    batch = torch.stack(tensors).to(device).contiguous(memory_format=torch.channels_last)
    precision = torch.autocast(device.type, dtype=getattr(torch, dtype)) if dtype != "float32" \
        else contextlib.nullcontext()
    with torch.inference_mode(), precision:
        backbone.visual(batch)   # warm-up (kernel selection)
        synchronize(device)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            backbone.visual(batch)
            synchronize(device)
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def encoding_rows(model, paths, args, device):
    rows = []
    for dtype in args.dtypes:
        clear_memory_cache()
        clf = ClipPromptClassifier(["a", "b"], model_name=model, pretrained="random", device=str(device), verbose=0,
                                   encode_dtype=None if dtype == "float32" else dtype,
                                   encode_batch_size=args.batch_size)
        clf.backbone_   # loaded before the clock
        encode_items(clf.backbone_, as_image_items(paths[:args.batch_size]), batch_size=args.batch_size,
                     encode_dtype=clf.encode_dtype)   # warm-up: kernels, threads
        synchronize(device)
        reset_peak(device)
        start = time.perf_counter()
        clf.transform(paths)
        synchronize(device)
        seconds = time.perf_counter() - start
        peak = peak_gib(device)
        ceiling = network_alone(clf, paths, dtype, device, args.batch_size)
        rows.append({"model": model, "dtype": dtype, "images_per_s": len(paths) / seconds,
                     "network_per_s": ceiling, "peak_gib": peak})
        print(f"{model} encode {dtype}: {len(paths) / seconds:.0f} img/s end to end, {ceiling:.0f} network alone, "
              f"peak {peak:.2f} GiB", flush=True)
    return rows


def fit_rows(model, args, device):
    rows = []
    X = np.random.default_rng(0).integers(0, 256, (args.labels, 64, 64, 3), dtype=np.uint8)
    arms = [("ClipPromptClassifier defaults", ClipPromptClassifier, None),
            ("ClipPromptClassifier defaults, bfloat16 autocast", ClipPromptClassifier, torch.bfloat16),
            ("ClipLinearProbe defaults", ClipLinearProbe, None)]
    for n_classes in args.classes:
        names = CIFAR100[:n_classes]
        y = np.arange(args.labels) % n_classes
        for arm, estimator, dtype in arms:
            clf = estimator(names, model_name=model, pretrained="random", device=str(device), verbose=0,
                            random_state=0, **({"max_epochs": 2} if args.smoke else {}))
            clf.transform(X)
            unit = full_length_step(clf)
            precision = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
            synchronize(device)
            reset_peak(device)
            start = time.perf_counter()
            with precision:
                clf.fit(X, y)
            synchronize(device)
            seconds = time.perf_counter() - start
            rows.append({"model": model, "classes": n_classes, "arm": arm, "epochs": len(clf.history_),
                         "seconds": seconds, "unit": unit, "peak_gib": peak_gib(device)})
            print(f"{model} fit {n_classes} classes, {arm}: {len(clf.history_)} epochs {seconds:.2f} s "
                  f"({seconds / unit:.1f} units), peak {rows[-1]['peak_gib']:.2f} GiB", flush=True)
    return rows


def describe(device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"{props.name} ({props.total_memory / 2 ** 30:.0f} GiB), torch {torch.__version__}, "
                f"CUDA {torch.version.cuda}, {os.cpu_count()} CPU cores")
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def table(encoding, fits, args, device) -> str:
    lines = [
        f"# GPU check: {describe(device)}",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/bench_gpu.py', *sys.argv[1:]])}`"
        + (" (smoke run of the script: not a measurement)" if args.smoke else "") + ".",
        "",
        f"Encoding: {args.images} distinct 640 x 427 JPEG photos, batches of {args.batch_size}, from an empty "
        "cache; network alone: the image encoder on one batch already on the device (median of 3).",
        "",
        "| model | dtype | end to end (img/s) | network alone (img/s) | end to end / network | peak memory (GiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['model']} | {r['dtype']} | {r['images_per_s']:.0f} | {r['network_per_s']:.0f} | "
              f"{r['images_per_s'] / r['network_per_s']:.2f} | {r['peak_gib']:.2f} |" for r in encoding]
    lines += [
        "",
        f"One fit on {args.labels} labels (embeddings cached: training only); unit: one forward and backward "
        "pass of the text tower over all C prompts at 77 tokens (median of 3).",
        "",
        "| model | classes | learner | epochs | fit (s) | unit (s) | fit / unit | peak memory (GiB) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['model']} | {r['classes']} | {r['arm']} | {r['epochs']} | {r['seconds']:.2f} | "
              f"{r['unit']:.3f} | {r['seconds'] / r['unit']:.1f} | {r['peak_gib']:.2f} |" for r in fits]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-L-14"])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--labels", type=int, default=80)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny model, few images, 2 epochs: checks the script (e.g. with --device cpu)")
    parser.add_argument("--out", default=None, help="markdown file (default: benchmarks/results/gpu.md; "
                                                    "none with --smoke)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: this check needs a GPU (--device cpu --smoke checks the script)")
    if args.smoke:
        args.models, args.images, args.batch_size, args.classes, args.labels = ["tiny-vit"], 24, 8, [3, 10], 12
    with tempfile.TemporaryDirectory(prefix="modal-vlm-gpu-") as folder:
        paths = distinct_copies(bundled_photos(), args.images, folder)
        encoding, fits = [], []
        for model in args.models:
            encoding += encoding_rows(model, paths, args, device)
            fits += fit_rows(model, args, device)
            clear_memory_cache()
    text = table(encoding, fits, args, device)
    out = args.out or (None if args.smoke else str(ROOT / "benchmarks" / "results" / "gpu.md"))
    if out:
        Path(out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
