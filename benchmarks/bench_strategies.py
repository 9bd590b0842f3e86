"""Strategy comparison on the shared CIFAR-10 data with the offline reference model.

The protocol of ``shared/specs/protocol.md``: 8 rounds x C = 10 labels, round 1 random for
every method, a fresh CoOp prompt (16 class-specific context vectors, N(0, 0.02)) every round,
SGD lr 0.002 / momentum 0.9 / weight decay 5e-4, batch 32, 1 warm-up epoch then cosine; on a
CPU the epochs are lowered (``--epochs``, default 20 instead of 200). Pool: the first
``--pool-per-class`` training images per class; test: the first ``--test-per-class`` test
images per class; ConSE at ``--image-size`` px. Accuracy after every round; the area under
the learning curve is the mean accuracy over rounds 1..8 (trapezoids over equal steps).

    python benchmarks/bench_strategies.py [--seeds 0 1 2] [--strategies cec entropy ...]
        [--out benchmarks/results/strategies.md] [--resume]

Writes a markdown table (mean ± std over seeds) and a JSON file of every run beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from modAL.models import ActiveLearner

from _protocol import CIFAR10, ROOT, add_protocol_arguments, curve_area
from modal_vlm import ClipPromptClassifier, get_strategy
from modal_vlm.datasets import load_image_folder

STRATEGIES = {  # in the order they run: the main comparison first
    "random": ("random", {}),
    "entropy": ("entropy", {}),
    "cec": ("cec", {}),
    "margin": ("margin", {}),
    "coreset": ("coreset", {}),
    "badge": ("badge", {}),
    "entropy+pcb": ("entropy+pcb", {}),
    # The CEC ablation: entropy only (= entropy), + calibration, + neighbours, + clustering (= cec).
    "cec: + calibration": ("cec", {"alpha": 0.0, "clustering": False}),
    "cec: + neighbours": ("cec", {"clustering": False}),
    "random+pcb": ("random+pcb", {}),
    "margin+pcb": ("margin+pcb", {}),
    "coreset+pcb": ("coreset+pcb", {}),
    "badge+pcb": ("badge+pcb", {}),
    # CoOp's random context vs. one initialised from "a photo of a" (the zero-shot prompt):
    # does a prompt that starts at zero-shot keep the early rounds above it?
    "cec, ctx 'a photo of a'": ("cec", {}, {"ctx_init": "a photo of a"}),
    "random, ctx 'a photo of a'": ("random", {}, {"ctx_init": "a photo of a"}),
}


def run(name, seed, data, args):
    X_pool, y_pool, X_test, y_test, names = data
    strategy_name, params, classifier_params = (*STRATEGIES[name], {})[:3]
    strategy = get_strategy(strategy_name)
    clf = ClipPromptClassifier(names, model_name="conse-efficientnet-lite0-minilm", image_size=args.image_size,
                               max_epochs=args.epochs, random_state=seed, verbose=0, cache_dir=args.cache_dir,
                               **classifier_params)
    learner = ActiveLearner(estimator=clf, query_strategy=strategy)
    rng = np.random.RandomState(seed)
    pool = np.arange(len(y_pool))
    accuracies = [float(np.mean(learner.predict(X_test) == y_test))]  # round 0: zero-shot
    seconds = {"query": 0.0, "train": 0.0}
    for round_ in range(1, args.rounds + 1):
        start = time.perf_counter()
        if round_ == 1:
            idx = rng.choice(len(pool), len(names), replace=False)
        else:
            idx = strategy(learner, X_pool[pool], len(names), random_state=rng, return_metrics=True, **params)[0]
        seconds["query"] += time.perf_counter() - start
        start = time.perf_counter()
        learner.teach(X_pool[pool[idx]], y_pool[pool[idx]])
        seconds["train"] += time.perf_counter() - start
        pool = np.delete(pool, idx)
        accuracies.append(float(np.mean(learner.predict(X_test) == y_test)))
    labeled = np.bincount(learner.y_training, minlength=len(names))
    return {"strategy": name, "seed": seed, "accuracy": accuracies, "class_counts": labeled.tolist(),
            "seconds": seconds}


def table(results, args):
    lines = [
        f"Offline reference model (ConSE, {args.image_size}px), CIFAR-10 pool {args.pool_per_class}/class, "
        f"test {args.test_per_class}/class, {args.rounds} rounds x 10 labels (round 1 random), "
        f"CoOp 16 class-specific contexts, {args.epochs} epochs per round, seeds {args.seeds}.",
        "",
        "Command: `python benchmarks/bench_strategies.py " + shlex.join(sys.argv[1:]) + "` (2-core CPU). "
        "Area under curve: mean accuracy over rounds 1..8 (trapezoids). \"min over rounds - zero-shot\": "
        "the lowest accuracy of rounds 1..8 minus zero-shot, averaged over seeds (negative: the run "
        "falls below zero-shot at some budget).",
        "",
        "| strategy | zero-shot | final accuracy | area under curve | min over rounds - zero-shot | classes labeled |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(r["strategy"] for r in results):
        runs = [r for r in results if r["strategy"] == name]
        acc = np.array([r["accuracy"] for r in runs])
        final, area = acc[:, -1], np.array([curve_area(a) for a in acc])
        dip = (acc[:, 1:].min(1) - acc[:, 0])
        classes = np.mean([np.count_nonzero(r["class_counts"]) for r in runs])
        lines.append(f"| {name} | {acc[:, 0].mean():.3f} | {final.mean():.3f} ± {final.std():.3f} | "
                     f"{area.mean():.3f} ± {area.std():.3f} | {dip.mean():+.3f} | {classes:.1f} |")
    rounds = range(args.rounds + 1)
    lines += ["", "Mean accuracy per round (round 0: zero-shot; labels = 10 x round):", "",
              "| strategy | " + " | ".join(str(r) for r in rounds) + " |",
              "|---|" + "---:|" * len(rounds)]
    for name in dict.fromkeys(r["strategy"] for r in results):
        acc = np.array([r["accuracy"] for r in results if r["strategy"] == name]).mean(0)
        lines.append(f"| {name} | " + " | ".join(f"{a:.3f}" for a in acc) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    add_protocol_arguments(parser, cache_dir=".cache")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in the JSON file beside --out and run only the others")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "strategies.md"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    X_pool, y_pool, names = load_image_folder(CIFAR10 / "train", max_per_class=args.pool_per_class)
    X_test, y_test, _ = load_image_folder(CIFAR10 / "test", max_per_class=args.test_per_class)
    data = (X_pool, y_pool, X_test, y_test, names)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.with_suffix(".json").read_text()) if args.resume and out.with_suffix(".json").exists() else []
    done = {(r["strategy"], r["seed"]) for r in results}
    for name in args.strategies:
        for seed in args.seeds:
            if (name, seed) in done:
                continue
            start = time.perf_counter()
            results.append(run(name, seed, data, args))
            print(f"{name} seed {seed}: final {results[-1]['accuracy'][-1]:.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            out.with_suffix(".json").write_text(json.dumps(results, indent=1))
            out.write_text(table(results, args))
    out.write_text(table(results, args))
    print(table(results, args))


if __name__ == "__main__":
    main()
