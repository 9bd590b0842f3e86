"""How much head-room each offline model leaves labels: zero-shot accuracy against a logistic
regression on its image embeddings with 1, 8 and 100 labels per class.

The shared CIFAR-10 data at ``--image-size`` px: pool ``--pool-per-class`` and test
``--test-per-class`` images per class; the labeled images are a seeded random draw of ``k``
per class from the pool, one draw per seed; ``LogisticRegression(C=10)`` on the L2-normalised
embeddings.

    python benchmarks/bench_offline_models.py [--models ...] [--seeds 0 1 2]
        [--out benchmarks/results/offline_models.md]
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from _protocol import OFFLINE_MODEL, ROOT, protocol_data
from modal_vlm import ClipPromptClassifier

SHOTS = (1, 8, 100)


def evaluate(model, data, args):
    X_pool, y_pool, X_test, y_test, names = data
    clf = ClipPromptClassifier(names, model_name=model, image_size=args.image_size, verbose=0,
                               cache_dir=args.cache_dir)
    F_pool, F_test = clf.transform(X_pool), clf.transform(X_test)
    row = {"zero-shot": float(np.mean(clf.predict(X_test) == y_test))}
    for k in SHOTS:
        scores = []
        for seed in args.seeds:
            rng = np.random.RandomState(seed)
            idx = np.concatenate([rng.choice(np.flatnonzero(y_pool == c), k, replace=False)
                                  for c in range(len(names))])
            fitted = LogisticRegression(C=10.0, max_iter=5000).fit(F_pool[idx], y_pool[idx])
            scores.append(np.mean(fitted.predict(F_test) == y_test))
        row[k] = (float(np.mean(scores)), float(np.std(scores)))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[OFFLINE_MODEL, "conse-efficientnet-lite0-minilm"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pool-per-class", type=int, default=150)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "offline_models.md"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = protocol_data(args.pool_per_class, args.test_per_class)
    lines = [
        f"Offline models on the shared CIFAR-10 data ({args.image_size}px): pool {args.pool_per_class}/class, "
        f"test {args.test_per_class}/class; logistic regression (C=10) on the image embeddings with k "
        f"random labels per class, mean ± std over seeds {args.seeds}.",
        "",
        "Command: `python benchmarks/bench_offline_models.py " + shlex.join(sys.argv[1:]) + "`.",
        "",
        "| model | zero-shot | " + " | ".join(f"logistic regression, {k}/class" for k in SHOTS) + " |",
        "|---|---:|" + "---:|" * len(SHOTS),
    ]
    for model in args.models:
        row = evaluate(model, data, args)
        lines.append(f"| `{model}` | {row['zero-shot']:.3f} | "
                     + " | ".join(f"{row[k][0]:.3f} ± {row[k][1]:.3f}" for k in SHOTS) + " |")
        print(lines[-1], flush=True)
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
