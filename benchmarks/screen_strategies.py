"""A fast screen of query strategies: ``bench_strategies.py``'s loop with a linear head for a learner.

The full benchmark prompt-tunes the offline model every round (about 90 s per run on one
core); this screen keeps its protocol (pool, test set, 8 rounds x 10 labels, round 1 random,
each round's query seeded by ``round_seed(seed, round)``) and its arms, but the learner is
the library's linear head, :class:`modal_vlm.ClipLinearProbe`, with the screen's own recipe
(:data:`SCREEN_HEAD`: class weights ``W`` from the zero-shot text features, cross-entropy plus
KgCoOp's ``lambda * mean_c (1 - cos(w_c, t_c))`` with lambda 8, Adam at a constant 0.01, 200
full-batch steps). A run takes seconds, so a candidate gets 40 seeds before it gets the full
benchmark. It is a screen, not a result: the tables of ``results/strategies.md`` are the
measurement.

    python benchmarks/screen_strategies.py [--seeds 40] [--strategies random cec badge ...] \
        > benchmarks/results/strategies_screen.md

Prints, per arm: final accuracy and area under the curve (mean ± std over seeds), and the
per-seed paired difference of the final accuracy against random (mean, seeds above).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

import numpy as np
from modAL.models import ActiveLearner

from _protocol import OFFLINE_MODEL, ROOT, curve_area, protocol_data
from bench_strategies import ARMS, strategy_of
from modal_vlm import ClipLinearProbe
from modal_vlm.experiment import round_seed
from modal_vlm.strategies import random_query
from modal_vlm.strategies._result import split_result

#: The screen's learner: ``ClipLinearProbe`` at a constant learning rate (no cosine), as the
#: screen's tables were made.
SCREEN_HEAD = {"max_epochs": 200, "lr": 0.01, "lambda_kg": 8.0, "callbacks__lr_scheduler": None}


def run(strategy, seed, data, rounds, budget, args):
    """Accuracy after rounds 0..``rounds`` of one screened run."""
    X_pool, y_pool, X_test, y_test, names = data
    head = ClipLinearProbe(names, model_name=args.model, image_size=args.image_size, cache_dir=args.cache_dir,
                           verbose=0, random_state=seed, **SCREEN_HEAD)
    learner = ActiveLearner(estimator=head, query_strategy=strategy)
    curve = [learner.score(X_test, y_test)]
    labeled = np.zeros(0, dtype=np.intp)
    for round_ in range(1, rounds + 1):
        unlabeled = np.setdiff1d(np.arange(len(y_pool)), labeled)
        query = random_query if round_ == 1 else strategy
        picks = np.asarray(split_result(query(learner, X_pool[unlabeled], n_instances=budget,
                                              random_state=round_seed(seed, round_)))[0])
        labeled = np.concatenate([labeled, unlabeled[picks]])
        learner.teach(X_pool[unlabeled[picks]], y_pool[unlabeled[picks]])
        curve.append(learner.score(X_test, y_test))
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["random", "cec", "badge"], choices=list(ARMS))
    parser.add_argument("--seeds", type=int, default=40, help="seeds 0 .. N-1")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--model", default=OFFLINE_MODEL)
    parser.add_argument("--pool-per-class", type=int, default=150)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    unknown = [name for name in args.strategies if ARMS[name][2]]
    if unknown:
        parser.error(f"arms {unknown} change the learner, which the screen replaces by a linear head.")
    data = protocol_data(args.pool_per_class, args.test_per_class)
    names = ["random"] + [name for name in args.strategies if name != "random"]
    finals = {}
    print(f"Screen (not the benchmark): `{args.model}` ({args.image_size}px) embeddings, CIFAR-10 pool "
          f"{args.pool_per_class}/class, test {args.test_per_class}/class, {args.rounds} rounds x 10 labels (round 1 "
          f"random), a linear KgCoOp-regularised head for the learner, seeds 0-{args.seeds - 1}.\n\n"
          "Command: `python benchmarks/screen_strategies.py " + shlex.join(sys.argv[1:]) + "`. "
          "Area under curve: mean accuracy over rounds 1..8 (trapezoids); \"vs random\": per-seed paired "
          "difference of the final accuracy (mean, and the seeds where it is > 0).\n")
    print("| strategy | seeds | final accuracy | area under curve | final vs random | seeds > random |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        curves = np.array([run(strategy_of(name), seed, data, args.rounds, len(data[4]), args)
                           for seed in range(args.seeds)])
        finals[name] = curves[:, -1]
        area = np.array([curve_area(c) for c in curves])
        paired = finals[name] - finals["random"]
        vs_random = "| " if name == "random" else f"{paired.mean():+.3f} | {(paired > 0).sum()}/{len(paired)}"
        print(f"| {name} | {args.seeds} | {finals[name].mean():.3f} ± {finals[name].std():.3f} | "
              f"{area.mean():.3f} ± {area.std():.3f} | {vs_random} |", flush=True)


if __name__ == "__main__":
    main()
