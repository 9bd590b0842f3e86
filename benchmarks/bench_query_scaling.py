"""CEC query cost on synthetic pools of 10^4 to 10^7 embeddings, in memory and on disk.

Synthetic, normalised embeddings (d = 512) around C = 100 class centres, probabilities from a
softmax over scaled cosines to the centres, batch b = 100. Each size runs in a fresh
subprocess, so its peak resident memory (``ru_maxrss``) is its own; the data themselves count
(the embedding matrix is 2 GB at 10^6), and so does the interpreter with torch loaded (about
0.5 GB). Beside it, a naive reference where it fits: scikit-learn
``NearestNeighbors(algorithm="brute")`` for the kNN plus ``KMeans(sample_weight=U)`` on the
full pool. For modal-vlm the table also gives, on 300 random samples, the recall@k of its
neighbour search against exact search and the mean similarity of the neighbours it found over
that of the exact ones (both 1.0 where the search is exact, up to 10^4 samples).

``--disk-sizes`` adds rows for a pool handed over as a memory-mapped float16 ``.npy``
(:class:`~modal_vlm.embeddings.EmbeddingPool`), written beforehand by another process into ``--disk-dir``
(10 GB at 10^7; deleted after the row) and never loaded whole: probabilities come from the
classifier's ``predict_proba_from_features`` block by block (softmax over scaled cosines to
the centres, as for the in-memory pools). Its peak memory is compared with the float32
matrix the pool would take in memory. ``--real`` adds the recall of the same neighbour search
on real embeddings: the shared CIFAR-10 images (13,000) encoded by the offline model
``conse-efficientnet-lite0-minilm`` (cached in ``--cache-dir``).

Torch uses every core by default; on a machine shared with other jobs, its spinning OpenMP
threads contend with them and ``OMP_NUM_THREADS=1`` can be faster.

    python benchmarks/bench_query_scaling.py [--sizes 10000 100000 1000000] [--naive-max 100000]
        [--disk-sizes 10000000 --disk-dir DIR] [--real]

Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _protocol import CIFAR10, ROOT

D, C, BATCH, K = 512, 100, 100, 10


def _centres(rng):
    centres = rng.normal(size=(C, D)).astype(np.float32)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def softmax_to_centres(block, centres):
    """The synthetic classifier: softmax over 30 x the cosines to the class centres."""
    logits = 30.0 * block @ centres.T
    logits -= logits.max(1, keepdims=True)
    np.exp(logits, out=logits)
    return logits / logits.sum(1, keepdims=True)


def synthetic_blocks(n, seed=0, block_rows=100_000):
    """``(centres, iterator of embedding blocks)`` of the synthetic pool, in order."""
    rng = np.random.default_rng(seed)
    centres = _centres(rng)

    def blocks():
        for start in range(0, n, block_rows):
            m = min(block_rows, n - start)
            # float32 draws: a float64 block would dominate the peak memory of small pools.
            block = centres[rng.integers(0, C, m)] + 0.08 * rng.standard_normal((m, D), dtype=np.float32)
            yield block / np.linalg.norm(block, axis=1, keepdims=True)

    return centres, blocks()


def synthetic_pool(n, seed=0):
    centres, blocks = synthetic_blocks(n, seed)
    F = np.empty((n, D), dtype=np.float32)
    P = np.empty((n, C), dtype=np.float32)
    start = 0
    for block in blocks:
        F[start:start + len(block)] = block
        P[start:start + len(block)] = softmax_to_centres(block, centres)
        start += len(block)
    return F, P


def disk_pool_path(disk_dir, n) -> Path:
    return Path(disk_dir) / f"pool-{n}-float16.npy"


def write_disk_pool(n, path):
    """The synthetic pool as a float16 ``.npy``, written with plain file writes (no mapping)."""
    _, blocks = synthetic_blocks(n)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f2", "fortran_order": False, "shape": (n, D)})
        for block in blocks:
            f.write(block.astype(np.float16).tobytes())


class SyntheticClassifier:
    """Probabilities from embeddings, as ClipPromptClassifier.predict_proba_from_features."""

    def __init__(self):
        self.centres = _centres(np.random.default_rng(0))

    def transform(self, X):
        raise AssertionError("an EmbeddingPool is never transformed")

    def predict_proba_from_features(self, features):
        return softmax_to_centres(np.asarray(features, dtype=np.float32), self.centres)


class PrecomputedClassifier:
    """What a strategy needs from ClipPromptClassifier, over precomputed arrays."""

    def __init__(self, F, P):
        self.F, self.P = F, P

    def transform(self, X):
        return self.F

    def predict_proba_from_features(self, features):
        return self.P


def knn_quality(F, found, found_sim, n_queries=300):
    """Recall@k of the neighbours ``found`` and their mean similarity over the exact ones' mean.

    On sampled rows, against exact search.
    """
    import torch

    from modal_vlm.strategies._knn import exact_knn

    rows = torch.as_tensor(np.random.default_rng(1).choice(len(F), min(n_queries, len(F)), replace=False))
    exact, exact_sim = exact_knn(F if not isinstance(F, np.ndarray) else torch.from_numpy(F), found.shape[1], rows)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / found.shape[1]
                      for a, b in zip(found[rows], exact)])
    return float(recall), float(found_sim[rows].mean() / exact_sim.mean())


def run_one(n, method):
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances_argmin
    from sklearn.neighbors import NearestNeighbors

    from modal_vlm.embeddings import EmbeddingPool
    from modal_vlm.strategies import cec, cec_query
    from modal_vlm.strategies.cec import calibrated_entropy

    if method == "disk":
        pool = EmbeddingPool(str(disk_pool_path(os.environ["BENCH_DISK_DIR"], n)))
        F, matrix_bytes = pool.features(), n * D * 4  # float32 in-memory equivalent
    else:
        F, P = synthetic_pool(n)
        matrix_bytes = F.nbytes
    found, search = {}, cec.nearest_neighbours

    def recorded_knn(*args, **kwargs):  # keeps CEC's neighbours for the recall, costs nothing
        found["index"], found["sim"] = search(*args, **kwargs)
        return found["index"], found["sim"]

    cec.nearest_neighbours = recorded_knn
    start = time.perf_counter()  # after imports and data: the query alone
    if method == "modal-vlm":
        cec_query(PrecomputedClassifier(F, P), np.arange(n), BATCH, random_state=0)
    elif method == "disk":
        cec_query(SyntheticClassifier(), pool, BATCH, random_state=0)
    else:
        H, _ = calibrated_entropy(P)
        dist, index = NearestNeighbors(n_neighbors=K + 1, algorithm="brute", metric="cosine").fit(F).kneighbors(F)
        w = np.maximum(1.0 - dist[:, 1:], 0) + 1e-8
        U = 0.5 * H + 0.5 * (w * H[index[:, 1:]]).sum(1) / w.sum(1)
        centres = KMeans(BATCH, n_init=1, random_state=0).fit(F, sample_weight=U).cluster_centers_
        pairwise_distances_argmin(centres, F)  # the sample nearest each centroid
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    quality = knn_quality(F, found["index"], found["sim"]) if found else None
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "matrix_bytes": matrix_bytes,
                      "knn": quality}))


def real_recall(cache_dir):
    """Recall@10 of the approximate search against exact search on CIFAR-10 embeddings."""
    import torch

    from modal_vlm import ClipPromptClassifier
    from modal_vlm.datasets import load_image_folder
    from modal_vlm.strategies import _knn

    paths = np.concatenate([load_image_folder(CIFAR10 / split)[0] for split in ("train", "test")])
    clf = ClipPromptClassifier(["x", "y"], model_name="conse-efficientnet-lite0-minilm", cache_dir=cache_dir,
                               verbose=0)
    F = torch.from_numpy(clf.transform(paths))
    start = time.perf_counter()
    found, found_sim = _knn.approximate_knn(F, K, np.random.RandomState(0))
    seconds = time.perf_counter() - start
    exact, exact_sim = _knn.exact_knn(F, K)
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found.tolist(), exact.tolist())])
    return len(F), F.shape[1], seconds, float(recall), float(found_sim.mean() / exact_sim.mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--naive-max", type=int, default=100_000, help="largest pool for the naive reference")
    parser.add_argument("--disk-sizes", type=int, nargs="*", default=[],
                        help="pools handed over as a memory-mapped float16 .npy (10^7: 10 GB in --disk-dir)")
    parser.add_argument("--disk-dir", default=str(ROOT / "benchmarks" / ".cache-disk"),
                        help="where the disk pools are written (and deleted after their row)")
    parser.add_argument("--real", action="store_true", help="recall on CIFAR-10 embeddings of the offline model")
    parser.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache"),
                        help="embedding cache of the CIFAR-10 images")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--make-disk-pool", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_one(int(args.child[0]), args.child[1])
    if args.make_disk_pool:
        return write_disk_pool(args.make_disk_pool, disk_pool_path(args.disk_dir, args.make_disk_pool))
    print(f"CEC, d={D}, C={C}, batch={BATCH}, k={K}; one fresh process per cell\n")
    print("| pool | method | seconds | peak memory (GB) | peak / embedding matrix | kNN recall@10 "
          "| neighbour similarity, found / exact |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        for method in ("modal-vlm", "naive sklearn"):
            if method != "modal-vlm" and n > args.naive_max:
                print(f"| {n:,} | {method} | not run (> --naive-max) | | | | |")
                continue
            out = subprocess.run([sys.executable, __file__, "--child", str(n), method],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            knn = " | " if r["knn"] is None else "{:.2f} | {:.3f}".format(*r["knn"])
            print(f"| {n:,} | {method} | {r['seconds']:.1f} | {r['peak_bytes'] / 1e9:.2f} | "
                  f"{r['peak_bytes'] / r['matrix_bytes']:.1f}x | {knn} |", flush=True)
    for n in args.disk_sizes:
        Path(args.disk_dir).mkdir(parents=True, exist_ok=True)
        path = disk_pool_path(args.disk_dir, n)
        try:
            subprocess.run([sys.executable, __file__, "--make-disk-pool", str(n), "--disk-dir", args.disk_dir],
                           check=True)
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "disk"], capture_output=True,
                                 text=True, check=True, env={**os.environ, "BENCH_DISK_DIR": args.disk_dir}).stdout
        finally:
            path.unlink(missing_ok=True)
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {n:,} | modal-vlm, float16 memory-mapped EmbeddingPool | {r['seconds']:.1f} | "
              f"{r['peak_bytes'] / 1e9:.2f} | {r['peak_bytes'] / r['matrix_bytes']:.2f}x of float32 | "
              "{:.2f} | {:.3f} |".format(*r["knn"]), flush=True)
    if args.real:
        n, d, seconds, recall, ratio = real_recall(args.cache_dir)
        print(f"\nReal embeddings: CIFAR-10 (shared subset, {n:,} images), offline model, d = {d}: "
              f"approximate kNN in {seconds:.1f} s, recall@10 {recall:.3f} over all samples, "
              f"neighbour similarity found / exact {ratio:.4f}.")


if __name__ == "__main__":
    main()
