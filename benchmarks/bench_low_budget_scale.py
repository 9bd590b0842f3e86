"""Query cost of the low-budget strategies on synthetic pools of 10^4 and 10^5 embeddings.

The synthetic pool of ``bench_query_scaling.py`` (normalised embeddings, d = 512, around
C = 100 class centres; probabilities from a softmax over scaled cosines to the centres), a
batch of b = 100 and a labeled set of 100 samples drawn the same way (so that the covering,
the kernel width and the uncertainty of each method are in play). Each (strategy, size) runs
in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is its own; the embedding
matrix itself (0.2 GB at 10^5) and the interpreter with torch (about 0.5 GB) count. An
``n x n`` float32 matrix would be 40 GB at 10^5: any row well under that was computed without
one. Uncertainty Herding runs with ``temperature=1.0`` (its calibration trains a copy of the
classifier, which this synthetic one has not).

    python benchmarks/bench_low_budget_scale.py [--sizes 10000 100000] [--strategies typiclust ...]

Prints a markdown table (timings are only comparable within one run on an otherwise idle
machine).
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time

import numpy as np

from bench_query_scaling import _centres, softmax_to_centres, synthetic_pool

STRATEGIES = ("typiclust", "probcover", "maxherding", "uherding", "dropquery")
BATCH, LABELED = 100, 100


class IndexedClassifier:
    """What a strategy needs from ClipPromptClassifier: ``X`` are row numbers into ``F``."""

    classes_ = np.arange(100)

    def __init__(self, F):
        self.F, self.centres = F, _centres(np.random.default_rng(0))

    def transform(self, X):
        return self.F[np.asarray(X)]

    def predict_proba_from_features(self, features):
        return softmax_to_centres(np.asarray(features, dtype=np.float32), self.centres)


def run_one(name, n):
    from modal_vlm.strategies import get_strategy

    F, _ = synthetic_pool(n + LABELED)
    clf = IndexedClassifier(F)
    learner = type("Learner", (), {"estimator": clf, "X_training": np.arange(n, n + LABELED),
                                   "y_training": np.zeros(LABELED, dtype=int)})()
    params = {"temperature": 1.0} if name == "uherding" else {}
    start = time.perf_counter()
    _, metrics = get_strategy(name)(learner, np.arange(n), BATCH, random_state=0, return_metrics=True, **params)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    note = {"probcover": lambda: f"delta {metrics['delta']:.3f}",
            "uherding": lambda: f"sigma {metrics['sigma']:.3f}",
            "dropquery": lambda: f"threshold {metrics['threshold']}"}.get(name, lambda: "")()
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "matrix_bytes": F[:n].nbytes, "note": note}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: strategy size
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]))
        return
    print("Command: `python benchmarks/bench_low_budget_scale.py " + shlex.join(sys.argv[1:]) + "`. Synthetic "
          f"pool (d = 512, C = 100), batch {BATCH}, {LABELED} labeled samples, one subprocess per row.\n")
    print("| strategy | pool | seconds | peak memory (GB) | pool matrix (GB) | n x n float32 (GB) | |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name in args.strategies:
        for n in args.sizes:
            out = subprocess.run([sys.executable, __file__, "--one", name, str(n)], capture_output=True, text=True)
            if out.returncode:
                print(f"| {name} | {n:,} | failed | | | | {out.stderr.strip().splitlines()[-1]} |", flush=True)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {name} | {n:,} | {row['seconds']:.1f} | {row['peak_bytes'] / 1e9:.2f} | "
                  f"{row['matrix_bytes'] / 1e9:.2f} | {4 * n * n / 1e9:.1f} | {row['note']} |", flush=True)


if __name__ == "__main__":
    main()
