"""Images per second of one encoding pass, stage by stage and end to end, before vs. after.

*Before* is modal-vlm's encoding loop until issue 15 (kept below as ``encode_before``): each
batch decoded and preprocessed serially in the calling thread, then the image encoder in
contiguous float32 under ``no_grad``. *After* is :func:`modal_vlm.embeddings.encoding.encode_images`:
decoding threads ahead of the encoder, reduced-size JPEG decoding, channels-last batches
under ``inference_mode``, optionally bfloat16 autocast. Both run in one process, side by
side, on

* CIFAR-size files: the shared CIFAR-10 test images (32 x 32 JPEG);
* 12-megapixel JPEG photos generated from CIFAR-10 images (``_images.py`` says how), as
  distinct files of a few photos.

Stages (one thread, no overlap): read + fingerprint, decode, preprocess, network. The
network-alone ceiling runs the encoder on batches already in memory. End to end is what
``ClipPromptClassifier.transform`` does on an empty cache: fingerprints, decoding,
preprocessing, the encoder and the cache. The alternative to decoding threads, a torch
``DataLoader`` with worker processes, runs the same after-pipeline for comparison.
Every configuration runs ``--repeats`` times, interleaved; the best is reported.

    python benchmarks/bench_encode_throughput.py [--model linear-conse-efficientnet-lite0-minilm]
        [--pretrained random] [--image-size 160] [--n-small 512] [--n-large 128] [--device cpu]
        [--out benchmarks/results/encode_throughput.md]

Prints a markdown table and writes it to ``--out``. Run it alone: on a 2-core machine other
jobs change every timing.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import resource
import shlex
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _images import cifar_files, distinct_copies, write_large_photos
from _protocol import OFFLINE_MODEL, ROOT
from modal_vlm.embeddings import clear_memory_cache
from modal_vlm.backbones import create_backbone
from modal_vlm.embeddings import inputs
from modal_vlm.embeddings.cache import EmbeddingCache
from modal_vlm.embeddings.encoding import default_workers, draft_size, encode_images
from modal_vlm.embeddings.inputs import as_image_items


def encode_before(backbone, visual, items, batch_size, cache):
    """modal-vlm's encoding loop before issue 15 (``visual`` in contiguous memory format)."""
    keys = [item.fingerprint() for item in items]
    device = next(visual.parameters()).device
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            batch = torch.stack([item.to_tensor(backbone.preprocess) for item in items[start:start + batch_size]])
            features = torch.nn.functional.normalize(visual(batch.to(device)).float(), dim=-1)
            cache.add(keys[start:start + batch_size], features.cpu().numpy())


class DecodedImages(torch.utils.data.Dataset):
    """The images as a map-style dataset, for the ``DataLoader`` alternative."""

    def __init__(self, items, preprocess, decode_size):
        self.items, self.preprocess, self.decode_size = items, preprocess, decode_size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index].to_tensor(self.preprocess, decode_size=self.decode_size)


def encode_dataloader(backbone, items, batch_size, workers, cache):
    """The after-pipeline with a torch ``DataLoader`` and worker processes instead of threads."""
    keys = [item.fingerprint() for item in items]
    device = next(backbone.visual.parameters()).device
    loader = torch.utils.data.DataLoader(DecodedImages(items, backbone.preprocess, draft_size(backbone)),
                                         batch_size=batch_size, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    start = 0
    with torch.inference_mode():
        for batch in loader:
            batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            features = torch.nn.functional.normalize(backbone.visual(batch).float(), dim=-1)
            cache.add(keys[start:start + len(batch)], features.cpu().numpy())
            start += len(batch)


def fresh_cache():
    """An empty cache, and no remembered file digests: every run fingerprints and encodes."""
    clear_memory_cache()
    inputs._PATH_DIGESTS.clear()
    return EmbeddingCache(f"bench-{uuid.uuid4().hex}")


class Stopwatch:
    """Wall and CPU seconds (this process and its finished children) of the timed blocks."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    @staticmethod
    def cpu_seconds():
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    @contextlib.contextmanager
    def running(self):
        wall, cpu = time.perf_counter(), self.cpu_seconds()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += self.cpu_seconds() - cpu


def timed(run):
    """A timer of ``run()``: returns its :class:`Stopwatch`."""
    def timer():
        watch = Stopwatch()
        with watch.running():
            run()
        return watch
    return timer


def stage_timers(backbone, before_visual, paths, batch_size, device):
    """One-thread timers of each stage: row -> (before, after), each returning a Stopwatch."""
    decode_size = draft_size(backbone)
    watches, tensors = {}, {}  # decode and preprocess timed in one pass, one image in memory at a time

    def decode_and_preprocess(size):
        watches[size] = decode, preprocess = Stopwatch(), Stopwatch()
        tensors[size] = []
        for path in paths:
            with decode.running():
                image = inputs._open_image(path, size).convert("RGB")
            with preprocess.running():
                tensors[size].append(backbone.preprocess(image))
        return decode

    def network(visual, layout, *contexts):
        def timer():
            watch, batches = Stopwatch(), tensors[decode_size]
            with contextlib.ExitStack() as stack:
                for context in contexts:
                    stack.enter_context(context())
                for start in range(0, len(batches), batch_size):
                    batch = torch.stack(batches[start:start + batch_size]).to(device).contiguous(memory_format=layout)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    with watch.running():
                        visual(batch).float().cpu()
            return watch
        return timer

    def fingerprint():
        inputs._PATH_DIGESTS.clear()
        return timed(lambda: [item.fingerprint() for item in as_image_items(paths)])()

    bfloat16 = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    return {
        "read + fingerprint": (fingerprint, fingerprint),
        "decode": (lambda: decode_and_preprocess(None), lambda: decode_and_preprocess(decode_size)),
        "preprocess": (lambda: watches[None][1], lambda: watches[decode_size][1]),
        "network float32 (ceiling)": (network(before_visual, torch.contiguous_format, torch.no_grad),
                                      network(backbone.visual, torch.channels_last, torch.inference_mode)),
        "network bfloat16 (ceiling)": (None, network(backbone.visual, torch.channels_last, torch.inference_mode,
                                                     bfloat16)),
    }


def threads(n):
    return "decoding in the calling thread" if n == 0 else f"{n} decoding thread{'s' * (n > 1)}"


def measure(backbone, before_visual, paths, args, device):
    """Best (images/s, CPU ms/image) of every stage and pipeline on ``paths``: row -> (before, after)."""
    items = as_image_items(paths)
    workers = default_workers()
    encode = lambda **kw: timed(lambda: encode_images(  # noqa: E731
        backbone, paths, cache=fresh_cache(), batch_size=args.batch_size, verbose=0, **kw))
    timers = {
        **stage_timers(backbone, before_visual, paths, args.batch_size, device),
        f"end to end float32 (after: {threads(workers)})": (
            timed(lambda: encode_before(backbone, before_visual, items, args.batch_size, fresh_cache())),
            encode()),
        "end to end bfloat16": (None, encode(encode_dtype="bfloat16")),
        **{f"end to end float32, {threads(w)}": (None, encode(num_workers=w))
           for w in sorted({0, 1, 2 * workers} - {workers})},
        f"end to end float32, DataLoader with {workers} worker processes": (
            None, timed(lambda: encode_dataloader(backbone, items, args.batch_size, workers, fresh_cache()))),
    }
    wall, cpu = {}, {}
    for _ in range(args.repeats):  # interleaved: a load spike hits one repeat, not one row
        for name, pair in timers.items():
            for side, timer in enumerate(pair):
                if timer is not None:
                    watch = timer()
                    wall[name, side] = min(wall.get((name, side), np.inf), watch.wall)
                    cpu[name, side] = min(cpu.get((name, side), np.inf), watch.cpu)
    n = len(paths)
    return {name: tuple((n / wall[name, side], 1000 * cpu[name, side] / n) if (name, side) in wall else None
                        for side in (0, 1)) for name in timers}


def table(results, args, loads, n_small, n_large, backbone):
    small, large = results
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()

    def cell(value):
        if value is None:
            return "—"
        rate, cpu_ms = value
        cpu = f"{cpu_ms:.2f}" if cpu_ms < 1 else f"{cpu_ms:.1f}" if cpu_ms < 100 else f"{cpu_ms:.0f}"
        return f"{rate:.0f} · {cpu}" if rate >= 10 else f"{rate:.1f} · {cpu}"

    lines = [
        f"Encoding throughput, {args.model} at {backbone.resize_size} px, batches of {args.batch_size}, "
        f"{args.device}, {cores} cores, torch threads {torch.get_num_threads()}, "
        f"native bfloat16 on this CPU: {'yes' if bf16 else 'no'}. "
        f"{n_small} CIFAR-10 test files (32 x 32 JPEG) and {n_large} 12-megapixel JPEG files (4000 x 3000, "
        f"quality 90; distinct copies of {args.n_photos} generated photos); best of {args.repeats} interleaved runs. "
        f"Load average (1 min) before / after: {loads[0]:.1f} / {loads[1]:.1f}.",
        "",
        "Command: `" + shlex.join(["python", "benchmarks/bench_encode_throughput.py", *sys.argv[1:]]) + "`",
        "",
        "Each cell: images per second · CPU milliseconds per image (all threads and worker processes; "
        "CPU time depends less on other jobs than wall time does).",
        "",
        "| stage | CIFAR-size: before | after | 12 MP JPEG: before | after |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in small:
        lines.append(f"| {name} | {cell(small[name][0])} | {cell(small[name][1])} | "
                     f"{cell(large[name][0])} | {cell(large[name][1])} |")
    ceiling = "network float32 (ceiling)"
    e2e = next(name for name in small if name.startswith("end to end float32 (after"))
    ratio = lambda rows, side: rows[e2e][side][0] / rows[ceiling][1][0]  # noqa: E731
    lines += [
        "",
        f"End to end float32 / channels-last float32 network alone, CIFAR-size: {ratio(small, 0):.2f}x before, "
        f"{ratio(small, 1):.2f}x after (target >= 0.8x). 12 MP JPEG end to end: {large[e2e][0][0]:.1f} img/s "
        f"before, {large[e2e][1][0]:.1f} img/s after (target >= 30).",
        "",
        "Stages run one at a time in one thread (decode: before at full size, after reduced-size JPEG "
        "decoding; network: before contiguous float32 under no_grad, after channels-last under "
        "inference_mode, on batches in memory); end to end is `encode_images` on an empty cache "
        "(fingerprints, decoding, preprocessing, the encoder, the cache).",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=OFFLINE_MODEL)
    parser.add_argument("--pretrained", default=None, help='e.g. "random" for an open_clip architecture offline')
    parser.add_argument("--image-size", type=int, default=None, help="default: 160 for ConSE, else the model's own")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-small", type=int, default=512, help="CIFAR-size files")
    parser.add_argument("--n-large", type=int, default=128, help="12-megapixel JPEG files")
    parser.add_argument("--n-photos", type=int, default=16, help="distinct generated photos among them")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "encode_throughput.md"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.image_size is None and "conse" in args.model:
        args.image_size = 160
    device = torch.device(args.device)
    backbone = create_backbone(args.model, args.pretrained, device=args.device, image_size=args.image_size)
    before_visual = copy.deepcopy(backbone.visual).to(memory_format=torch.contiguous_format)
    small_paths = cifar_files(args.n_small)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="modal-vlm-bench-") as folder:
        print(f"generating {args.n_photos} 12-megapixel JPEG photos in {folder} ...", flush=True)
        photos = write_large_photos(cifar_files(args.n_photos, split="train"), os.path.join(folder, "photos"))
        large_paths = distinct_copies(photos, args.n_large, os.path.join(folder, "files"))
        with Image.open(large_paths[-1]) as image:
            image.verify()
        results = [measure(backbone, before_visual, paths, args, device) for paths in (small_paths, large_paths)]
    loads.append(os.getloadavg()[0])
    text = table(results, args, loads, len(small_paths), len(large_paths), backbone)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
