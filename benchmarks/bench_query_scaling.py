"""CEC query cost on synthetic pools of 10^4, 10^5 and 10^6 embeddings.

Synthetic, normalised embeddings (d = 512) around C = 100 class centres, probabilities from a
softmax over scaled cosines to the centres, batch b = 100. Each size runs in a fresh
subprocess, so its peak resident memory (``ru_maxrss``) is its own; the data themselves count
(the embedding matrix is 2 GB at 10^6), and so does the interpreter with torch loaded (about
0.5 GB). Beside it, a naive reference where it fits: scikit-learn
``NearestNeighbors(algorithm="brute")`` for the kNN plus ``KMeans(sample_weight=U)`` on the
full pool. For modal-vlm the table also gives, on 300 random samples, the recall@k of its
neighbour search against exact search and the mean similarity of the neighbours it found over
that of the exact ones (both 1.0 where the search is exact, up to 10^4 samples).

Torch uses every core by default; on a machine shared with other jobs, its spinning OpenMP
threads contend with them and ``OMP_NUM_THREADS=1`` can be faster.

    python benchmarks/bench_query_scaling.py [--sizes 10000 100000 1000000] [--naive-max 100000]

Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

D, C, BATCH, K = 512, 100, 100, 10


def synthetic_pool(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, D)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    F = np.empty((n, D), dtype=np.float32)
    P = np.empty((n, C), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        # float32 draws: a float64 block would dominate the peak memory of small pools.
        block = centres[rng.integers(0, C, m)] + 0.08 * rng.standard_normal((m, D), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        logits = 30.0 * block @ centres.T
        logits -= logits.max(1, keepdims=True)
        np.exp(logits, out=logits)
        F[start:start + m] = block
        P[start:start + m] = logits / logits.sum(1, keepdims=True)
    return F, P


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
    exact, exact_sim = exact_knn(torch.from_numpy(F), found.shape[1], rows)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / found.shape[1]
                      for a, b in zip(found[rows], exact)])
    return float(recall), float(found_sim[rows].mean() / exact_sim.mean())


def run_one(n, method):
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances_argmin
    from sklearn.neighbors import NearestNeighbors

    from modal_vlm.strategies import cec, cec_query
    from modal_vlm.strategies.cec import calibrated_entropy

    F, P = synthetic_pool(n)
    found, search = {}, cec.nearest_neighbours

    def recorded_knn(*args, **kwargs):  # keeps CEC's neighbours for the recall, costs nothing
        found["index"], found["sim"] = search(*args, **kwargs)
        return found["index"], found["sim"]

    cec.nearest_neighbours = recorded_knn
    start = time.perf_counter()  # after imports and data: the query alone
    if method == "modal-vlm":
        cec_query(PrecomputedClassifier(F, P), np.arange(n), BATCH, random_state=0)
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
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "matrix_bytes": F.nbytes,
                      "knn": quality}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--naive-max", type=int, default=100_000, help="largest pool for the naive reference")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_one(int(args.child[0]), args.child[1])
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


if __name__ == "__main__":
    main()
