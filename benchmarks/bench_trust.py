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
from modal_vlm import ClipPromptClassifier, get_strategy
from modal_vlm.evaluation import LoopMonitor
from modal_vlm.experiment import round_seed, run_active_learning
from modal_vlm.runner import oracle_labels
from modal_vlm.strategies import random_query
from modal_vlm.strategies._result import split_result

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


def noise_refits(records, data, seed, args):
    """At the last round of a noisy run: out-of-fold suspicion (5 refits, the comparison the
    loop's free signal is measured against) and two refits on the labeled images, with the
    true labels and with the monitor's flagged labels fixed."""
    from sklearn.model_selection import StratifiedKFold, KFold

    from modal_vlm.evaluation import TemperatureScaling, suspicion

    X_pool, y_pool, X_test, y_test, names = data
    y_oracle = oracle_labels(y_pool, 0.1, N_CLASSES, seed)
    labeled = np.array([i for r in records for i in r["queried"]])
    y_given = y_oracle[labeled]
    flagged = np.array(records[-1]["suspect_labels"], dtype=int)

    def accuracy(y):
        clf = classifier(names, args, random_state=seed).fit(X_pool[labeled], y)
        return float(clf.score(X_test, y_test))

    fixed = y_given.copy()
    fixed[np.isin(labeled, flagged)] = y_pool[labeled][np.isin(labeled, flagged)]
    oof = np.zeros((len(labeled), N_CLASSES))
    counts = np.bincount(y_given, minlength=N_CLASSES)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed) if counts[counts > 0].min() >= 5 \
        else KFold(5, shuffle=True, random_state=seed)
    for train, held in folds.split(labeled, y_given):
        clf = classifier(names, args, random_state=seed).fit(X_pool[labeled[train]], y_given[train])
        oof[held] = clf.predict_proba(X_pool[labeled[held]])
    oof = TemperatureScaling().fit(oof, y_given).transform(oof)
    return {"clean": accuracy(y_pool[labeled]), "fixed": accuracy(fixed),
            "oof_suspicion": suspicion(oof, y_given).round(6).tolist()}


def stopping_run(strategy, seed, data, args):
    """A long budget with the screen's linear head: accuracy and kappa after every round.

    A hand-written modAL-style loop (the way a user would wire :class:`LoopMonitor`): round 1
    random, then the strategy with the audit share, 10 labels per round.
    """
    import torch
    from screen_strategies import LinearHead, _Learner

    pool, y_pool, test, y_test, text, scale = data
    classes = np.unique(y_pool)
    rows = np.arange(len(y_pool))

    def fitted(labeled):
        head = LinearHead(pool, text, scale, classes)
        if len(labeled):
            torch.manual_seed(seed)
            head.fit(labeled, y_pool[labeled])
        return head

    def point(head, report):
        accuracy = float((classes[(test @ head.weights_.T).argmax(1).numpy()] == y_test).mean())
        return {"accuracy": accuracy, "kappa": report["kappa"], "estimate": report["estimate"]}

    head, labeled = fitted([]), np.zeros(0, dtype=np.intp)
    monitor = LoopMonitor(args.audit, random_state=seed).start(head, rows)
    curve = [point(head, monitor.update(head, rows))]
    for round_ in range(1, args.long_rounds + 1):
        unlabeled = np.setdiff1d(rows, labeled)
        query = random_query if round_ == 1 else get_strategy(strategy)
        audit = np.zeros(0, dtype=np.intp) if round_ == 1 else \
            unlabeled[monitor.audit_positions(round_, len(unlabeled), N_CLASSES)]
        rest = np.setdiff1d(unlabeled, audit)
        learner = _Learner(head, labeled if len(labeled) else None, y_pool[labeled] if len(labeled) else None)
        picked = rest[np.asarray(split_result(query(learner, rest, n_instances=N_CLASSES - len(audit),
                                                    random_state=round_seed(seed, round_)))[0])]
        new = np.concatenate([picked, audit])
        monitor.observe(head, new, y_pool[new], ids=new, audit=np.isin(new, audit) | (round_ == 1))
        labeled = np.concatenate([labeled, new])
        head = fitted(labeled)
        curve.append(point(head, monitor.update(head, np.setdiff1d(rows, labeled))))
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["runs", "noise", "stopping"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--strategies", nargs="+", default=["cec", "random"])
    parser.add_argument("--audit", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--long-rounds", type=int, default=30)
    parser.add_argument("--long-seeds", type=int, default=10, help="stopping: seeds 0 .. N-1")
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
        # CEC without audit picks: strategies.json holds it (the same loop, seeds and defaults);
        # the first seed runs again here to check that it reproduces.
        jobs += [("cec", seed, 0.0, 0.0) for seed in args.seeds[:1]]
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
        if job[3]:
            results["runs"][-1]["refits"] = noise_refits(records, data, job[1], args)
        store.write_text(json.dumps(results))
        print(f"{job}: final {records[-1]['accuracy']:.3f}, estimate {records[-1]['estimate']} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    if "stopping" in args.parts:
        from screen_strategies import embeddings

        proxy = embeddings(argparse.Namespace(pool_per_class=args.pool_per_class, test_per_class=args.test_per_class,
                                              model=args.model, image_size=args.image_size, cache_dir=args.cache_dir))
        results.setdefault("stopping", [])
        done = {(r["strategy"], r["seed"]) for r in results["stopping"]}
        for seed in range(args.long_seeds):
            for strategy in args.strategies:
                if (strategy, seed) in done:
                    continue
                start = time.perf_counter()
                curve = stopping_run(strategy, seed, proxy, args)
                results["stopping"].append({"strategy": strategy, "seed": seed, "curve": curve})
                store.write_text(json.dumps(results))
                print(f"stopping {strategy} seed {seed}: {curve[-1]['accuracy']:.3f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
