"""Encoding throughput: in-process vs. a local Ray with 2 workers, and the projection for N.

The first ``--n-images`` images of the shared CIFAR-10 train split, the offline reference
model ``conse-efficientnet-lite0-minilm`` at its own resolution, each run into a fresh cache
folder (nothing cached beforehand), through :func:`modal_vlm.distributed.encode_to_cache`.
Wall time includes model loading (and, with Ray, starting the workers); the per-worker
throughput is the images each worker encoded per second of its own shard time (reading,
preprocessing, the forward pass, writing the shard). The N-worker projection is that
per-worker throughput times N: a projection (ideal scaling, no shared bottleneck), not a
measurement. One torch thread per worker.

    python benchmarks/bench_encode_scale.py [--n-images 2000] [--workers 2] [--project 8 32 128]

Prints a markdown table.
"""
from __future__ import annotations

import argparse
import tempfile

from _protocol import CIFAR10

MODEL = "conse-efficientnet-lite0-minilm"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--project", type=int, nargs="+", default=[8, 32, 128])
    args = parser.parse_args()

    import ray
    import torch

    from modal_vlm.distributed import encode_to_cache, image_files

    torch.set_num_threads(1)
    paths = image_files(CIFAR10 / "train")[:args.n_images]
    rows = []
    with tempfile.TemporaryDirectory() as local, tempfile.TemporaryDirectory() as distributed:
        rows.append(("in-process", encode_to_cache(paths, MODEL, local, shard_size=args.shard_size,
                                                   progress=False)))
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        try:
            rows.append((f"Ray local, {args.workers} workers",
                         encode_to_cache(paths, MODEL, distributed, ray_address="auto", num_workers=args.workers,
                                         shard_size=args.shard_size, progress=False)))
        finally:
            ray.shutdown()
    print(f"Encoding {len(paths)} CIFAR-10 images, {MODEL}, shards of {args.shard_size}\n")
    print("| executor | workers | wall seconds | images/s (wall) | images/s per worker | vs. in-process (wall) |")
    print("|---|---:|---:|---:|---:|---:|")
    base = rows[0][1].images_per_second
    for name, r in rows:
        per_worker = r.n_encoded / r.encode_seconds
        print(f"| {name} | {r.workers} | {r.seconds:.1f} | {r.images_per_second:.1f} | {per_worker:.1f} | "
              f"{r.images_per_second / base:.2f}x |")
    per_worker = rows[-1][1].n_encoded / rows[-1][1].encode_seconds
    print("\nProjection (measured Ray per-worker throughput x N, ideal scaling): "
          + ", ".join(f"{n} workers ~ {n * per_worker:,.0f} images/s" for n in args.project)
          + f"; 10^7 images on {args.project[-1]} workers ~ {1e7 / (args.project[-1] * per_worker) / 60:.0f} min.")


if __name__ == "__main__":
    main()
