"""What the labels bought, measured: calibration, the accuracy estimate, the stopping signal
and suspect labels (``modal_vlm.evaluation``), on the shared CIFAR-10 data.

Parts (each resumable; results in the JSON file beside ``--out``, raw probabilities in the
cache folder):

``runs``
    The runner's loop (:func:`modal_vlm.experiment.run_active_learning` with the runner's
    :class:`~modal_vlm.evaluation.LoopMonitor`), the default offline model and
    ``ClipPromptClassifier``'s defaults: 8 rounds x 10 labels, round 1 random, CEC and
    random, seeds 0-4, audit share ``--audit`` (and CEC without audit picks, for the cost of
    auditing); the pool's and test set's probabilities after every round are kept.
``noise``
    The same with 10 % of the oracle's labels flipped (CEC, audit share ``--audit``): the
    suspect flags at 80 labels against the flips, and two refits on the 80 labeled images,
    with the true labels and with the flagged labels fixed.
``stopping``
    A long budget (``--long-rounds`` x 10 labels) with a proxy learner, the linear
    KgCoOp-regularised head of ``screen_strategies.py`` on the cached embeddings (the prompt
    learner takes minutes per round at 300 labels on 2 cores): kappa between successive
    models on the stop set, and the round each threshold would stop at.

    python benchmarks/bench_trust.py [--parts runs noise stopping] [--table-only]

OMP_NUM_THREADS=1; accuracy figures do not depend on the machine's load.
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

from _protocol import OFFLINE_MODEL, ROOT, protocol_data
from modal_vlm import ClipPromptClassifier
from modal_vlm.evaluation import LoopMonitor
from modal_vlm.experiment import run_active_learning
from modal_vlm.runner import oracle_labels

N_CLASSES = 10


class RecordingMonitor(LoopMonitor):
    """The runner's monitor, keeping the whole pool's and the test set's probabilities after
    every round (what the tables' alternatives are computed from)."""

    def start(self, estimator, X_pool, history=()):
        self.X_all_, self.pool_proba_, self.test_proba_ = X_pool, [], []
        return super().start(estimator, X_pool, history)

    def update(self, estimator, X_unlabeled):
        self.pool_proba_.append(np.asarray(estimator.predict_proba(self.X_all_), dtype=np.float32))
        return super().update(estimator, X_unlabeled)

    def test_calibration(self, estimator, X_test, y_test):
        self.test_proba_.append(np.asarray(estimator.predict_proba(X_test), dtype=np.float32))
        return super().test_calibration(estimator, X_test, y_test)


def classifier(names, args, **params):
    return ClipPromptClassifier(names, model_name=args.model, image_size=args.image_size, verbose=0,
                                cache_dir=args.cache_dir, **params)


def loop_run(strategy, seed, audit, noise, data, args):
    """One run of the runner's loop; returns its records and stores the raw probabilities."""
    X_pool, y_pool, X_test, y_test, names = data
    y_oracle = oracle_labels(y_pool, noise, N_CLASSES, seed)
    monitor = RecordingMonitor(audit, random_state=seed)
    records = run_active_learning(classifier(names, args), strategy, X_pool, y_oracle, X_test, y_test,
                                  rounds=args.rounds, budget=N_CLASSES, random_state=seed, monitor=monitor)
    raw = Path(args.cache_dir) / "trust" / f"{strategy}-seed{seed}-audit{audit}-noise{noise}.npz"
    raw.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(raw, pool=np.stack(monitor.pool_proba_), test=np.stack(monitor.test_proba_),
                        y_pool=y_pool, y_oracle=y_oracle, y_test=y_test)
    return records, y_oracle


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["runs", "noise", "stopping"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--strategies", nargs="+", default=["cec", "random"])
    parser.add_argument("--audit", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--model", default=OFFLINE_MODEL)
    parser.add_argument("--pool-per-class", type=int, default=150)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "trust.md"))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    store = Path(args.out).with_suffix(".json")
    results = json.loads(store.read_text()) if store.exists() else {"runs": []}
    data = protocol_data(args.pool_per_class, args.test_per_class)
    jobs = []
    if "runs" in args.parts:
        jobs += [(s, seed, args.audit, 0.0) for seed in args.seeds for s in args.strategies]
        jobs += [("cec", seed, 0.0, 0.0) for seed in args.seeds]
    if "noise" in args.parts:
        jobs += [("cec", seed, args.audit, 0.1) for seed in args.seeds]
    done = {(r["strategy"], r["seed"], r["audit"], r["noise"]) for r in results["runs"]}
    for job in jobs:
        if job in done:
            continue
        start = time.perf_counter()
        records, _ = loop_run(*job, data, args)
        results["runs"].append({"strategy": job[0], "seed": job[1], "audit": job[2], "noise": job[3],
                                "records": records})
        store.write_text(json.dumps(results))
        print(f"{job}: final {records[-1]['accuracy']:.3f}, estimate {records[-1]['estimate']} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
