"""A fast screen of query strategies: ``bench_strategies.py``'s loop with a linear head for a learner.

The full benchmark prompt-tunes the offline model every round (about 90 s per run on one
core); this screen keeps its protocol (pool, test set, 8 rounds x 10 labels, round 1 random,
each round's query seeded by ``round_seed(seed, round)``) and its arms, but the learner is a
linear head on the cached image embeddings: class weights ``W`` from the zero-shot text
features, trained with cross-entropy plus KgCoOp's ``lambda * mean_c (1 - cos(w_c, t_c))``
(the default learner's regulariser, lambda 8), Adam, full batch. A run takes about a second,
so a candidate gets 40 seeds before it gets the full benchmark. It is a screen, not a result:
the tables of ``results/strategies.md`` are the measurement.

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
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from _protocol import OFFLINE_MODEL, ROOT, curve_area, protocol_data
from bench_strategies import ARMS, strategy_of
from modal_vlm import ClipPromptClassifier
from modal_vlm.experiment import round_seed
from modal_vlm.strategies import random_query
from modal_vlm.strategies._result import split_result


class LinearHead(BaseEstimator):
    """The screen's learner: cosine classifier ``softmax(scale * f W^T)``, ``W`` pulled to ``T0``.

    It offers what the strategies read from a ``ClipPromptClassifier``: ``transform`` (the
    pool is a vector of row numbers into the cached embeddings), ``predict_proba``,
    ``predict_proba_from_features``, ``class_text_features`` and ``classes_``; and
    ``clone`` copies it (Uncertainty Herding calibrates on a copy).
    """

    def __init__(self, embeddings, text_features, scale, classes, lambda_kg=8.0, steps=200, lr=0.01):
        self.embeddings, self.text_features = embeddings, text_features
        self.scale, self.classes = scale, classes
        self.classes_ = classes
        self.lambda_kg, self.steps, self.lr = lambda_kg, steps, lr
        self.weights_ = text_features

    def fit(self, rows, y):
        W = self.text_features.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([W], lr=self.lr)
        X = self.embeddings[torch.as_tensor(rows)]
        target = torch.as_tensor(np.searchsorted(self.classes_, y))
        for _ in range(self.steps):
            Wn = F.normalize(W, dim=1)
            drift = (1 - (Wn * self.text_features).sum(1)).mean()
            loss = F.cross_entropy(self.scale * X @ Wn.T, target) + self.lambda_kg * drift
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.weights_ = F.normalize(W.detach(), dim=1)
        return self

    def transform(self, rows):
        return self.embeddings[torch.as_tensor(np.asarray(rows))].numpy()

    def predict_proba_from_features(self, features):
        features = F.normalize(torch.as_tensor(features), dim=1)
        return torch.softmax(self.scale * features @ self.weights_.T, 1).numpy()

    def predict_proba(self, rows):
        return self.predict_proba_from_features(self.transform(rows))

    def class_text_features(self):
        return self.weights_.numpy()


class _Learner:
    """What a modAL learner shows a strategy: the estimator and the labeled set."""

    def __init__(self, estimator, X_training, y_training):
        self.estimator, self.X_training, self.y_training = estimator, X_training, y_training


def embeddings(args):
    """Pool and test embeddings, zero-shot text features and logit scale of the offline model."""
    X_pool, y_pool, X_test, y_test, names = protocol_data(args.pool_per_class, args.test_per_class)
    clf = ClipPromptClassifier(names, model_name=args.model, image_size=args.image_size, verbose=0,
                               cache_dir=args.cache_dir).initialize()
    pool, test = (F.normalize(torch.as_tensor(clf.transform(X)), dim=1) for X in (X_pool, X_test))
    text = torch.as_tensor(clf.class_text_features())
    return pool, np.asarray(y_pool), test, np.asarray(y_test), text, float(clf.module_.logit_scale)


def run(strategy, seed, data, rounds, budget):
    """Accuracy after rounds 0..``rounds`` of one screened run."""
    pool, y_pool, test, y_test, text, scale = data
    classes = np.unique(y_pool)

    def fitted(rows):
        head = LinearHead(pool, text, scale, classes)
        if len(rows):
            torch.manual_seed(seed)
            head.fit(rows, y_pool[rows])
        accuracy = float((classes[(test @ head.weights_.T).argmax(1).numpy()] == y_test).mean())
        return head, accuracy

    labeled = np.zeros(0, dtype=np.intp)
    head, accuracy = fitted(labeled)
    curve = [accuracy]
    for round_ in range(1, rounds + 1):
        unlabeled = np.setdiff1d(np.arange(len(y_pool)), labeled)
        query = random_query if round_ == 1 else strategy
        learner = _Learner(head, labeled if len(labeled) else None, y_pool[labeled] if len(labeled) else None)
        picks = np.asarray(split_result(query(learner, unlabeled, n_instances=budget,
                                              random_state=round_seed(seed, round_)))[0])
        labeled = np.concatenate([labeled, unlabeled[picks]])
        head, accuracy = fitted(labeled)
        curve.append(accuracy)
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
    data = embeddings(args)
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
        curves = np.array([run(strategy_of(name), seed, data, args.rounds, len(np.unique(data[1])))
                           for seed in range(args.seeds)])
        finals[name] = curves[:, -1]
        area = np.array([curve_area(c) for c in curves])
        paired = finals[name] - finals["random"]
        vs_random = "| " if name == "random" else f"{paired.mean():+.3f} | {(paired > 0).sum()}/{len(paired)}"
        print(f"| {name} | {args.seeds} | {finals[name].mean():.3f} ± {finals[name].std():.3f} | "
              f"{area.mean():.3f} ± {area.std():.3f} | {vs_random} |", flush=True)


if __name__ == "__main__":
    main()
