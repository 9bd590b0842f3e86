"""What the labels bought, measured: calibration, the accuracy estimate, the stopping signal
and suspect labels (``modal_vlm.evaluation``), on the shared CIFAR-10 data.

Parts (each resumable; results in the JSON file beside ``--out``, the probabilities of every
round in the cache folder, which ``--table-only`` reads too):

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

The tables replay :class:`~modal_vlm.evaluation.LoopMonitor` (its defaults, the run's audit
share and seed) over the stored probabilities of every round: the numbers the runner's
``rounds.json`` would hold with this version of the code, whatever version collected the
runs (the picks and accuracies do not depend on the monitor's estimates). The alternatives in
the tables are computed from the same pairs.

OMP_NUM_THREADS=1; accuracy figures do not depend on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy import stats

from _protocol import OFFLINE_MODEL, ROOT, protocol_data
from modal_vlm import ClipPromptClassifier, get_strategy
from modal_vlm.evaluation import LoopMonitor
from modal_vlm.evaluation.suspects import DEFAULT_SUSPECT_RATIO
from modal_vlm.experiment import round_seed, run_active_learning
from modal_vlm.runner import oracle_labels
from modal_vlm.strategies import random_query
from modal_vlm.strategies._result import split_result

N_CLASSES = 10
#: Rounds shown in the calibration table (labels = 10 x round).
CALIBRATION_ROUNDS = (0, 1, 2, 4, 8)
#: The stopping table's kappa thresholds and windows.
THRESHOLDS, WINDOWS = (0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99), (2, 3, 5)
#: Accuracy given up that the hindsight rows of the stopping table allow.
HINDSIGHT_TOLERANCES = (0.01, 0.02)
#: Suspect-label rules compared: the probability of the given class below this share of the
#: predicted class's.
SUSPECT_RATIOS = (0.1, 0.2, 0.25, 0.3, 0.35, 0.45)
#: The noise seeds the default suspect rule was chosen on (the rest are held back).
SUSPECT_CHOICE_SEEDS = range(20)
#: The calibration decays compared.
DECAYS = (0.5, 0.7, 0.85, 1.0)


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


#: What the JSON keeps of a round record (the tables replay the rest from the cached probabilities).
KEPT = ("round", "n_labeled", "accuracy", "queried", "audit", "estimate", "stable", "kappa", "suspect_labels")


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


def refit_accuracy(records, data, seed, args, fixed=()):
    """Test accuracy of a refit on a run's labeled images with the oracle's labels, those in
    ``fixed`` replaced by the truth (every one: the true labels)."""
    X_pool, y_pool, X_test, y_test, names = data
    labeled = np.array([i for r in records for i in r["queried"]])
    y = oracle_labels(y_pool, 0.1, N_CLASSES, seed)[labeled]
    mend = np.isin(labeled, list(fixed))
    y[mend] = y_pool[labeled][mend]
    clf = classifier(names, args, random_state=seed).fit(X_pool[labeled], y)
    return float(clf.score(X_test, y_test))


def noise_refits(records, data, seed, args):
    """At the last round of a noisy run: out-of-fold suspicion (5 refits on the labeled images,
    the comparison the loop's free signal is measured against)."""
    from sklearn.model_selection import StratifiedKFold, KFold

    from modal_vlm.evaluation import TemperatureScaling, suspicion

    X_pool, y_pool, X_test, y_test, names = data
    labeled = np.array([i for r in records for i in r["queried"]])
    y_given = oracle_labels(y_pool, 0.1, N_CLASSES, seed)[labeled]
    oof = np.zeros((len(labeled), N_CLASSES))
    counts = np.bincount(y_given, minlength=N_CLASSES)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed) if counts[counts > 0].min() >= 5 \
        else KFold(5, shuffle=True, random_state=seed)
    for train, held in folds.split(labeled, y_given):
        clf = classifier(names, args, random_state=seed).fit(X_pool[labeled[train]], y_given[train])
        oof[held] = clf.predict_proba(X_pool[labeled[held]])
    oof = TemperatureScaling().fit(oof, y_given).transform(oof)
    return {"oof_suspicion": suspicion(oof, y_given).round(6).tolist()}


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


class Replayed:
    """A classifier that answers ``predict_proba`` (and, given the zero-shot model's,
    ``zero_shot_proba``) from stored probabilities (X: row numbers)."""

    def __init__(self, proba, zero_shot=None):
        self.proba = np.asarray(proba)
        self.classes_ = np.arange(self.proba.shape[1])
        if zero_shot is not None:
            self.zero_shot_proba = Replayed(zero_shot).predict_proba

    def predict_proba(self, X):
        return self.proba[np.asarray(X, dtype=int)]


def raw_path(run, args):
    return (Path(args.cache_dir) / "trust"
            / f"{run['strategy']}-seed{run['seed']}-audit{run['audit']}-noise{run['noise']}.npz")


def _log(proba):
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-30, None))


class UnscaledMonitor(LoopMonitor):
    """The monitor as it was before the margin scale: every model's scale taken as 1, so the
    temperature is fitted on the probabilities as each model gave them."""

    def _look(self, estimator):
        return super()._look(estimator)[0], 1.0


def _confidence_variance(confidence):
    """``c (1 - c)``: the variance of right-or-wrong around a calibrated confidence ``c``."""
    return confidence * (1 - confidence)


def platt_floor_ece(proba, y):
    """Calibration error of the top-label confidence mapped by a logistic regression on its log-odds,
    fitted on the test set itself: what a two-parameter calibration could do with 1,000 labels."""
    from scipy.special import expit, logsumexp
    from sklearn.linear_model import LogisticRegression

    ordered = np.sort(_log(proba), axis=1)
    log_odds = (ordered[:, -1] - logsumexp(ordered[:, :-1], axis=1))[:, None]
    correct = np.asarray(proba).argmax(1) == y
    fit = LogisticRegression(C=1e6).fit(log_odds, correct)
    confidence = expit(fit.decision_function(log_odds))
    bins = np.clip((confidence * 15).astype(int), 0, 14)
    return float(sum((bins == b).sum() * abs(correct[bins == b].mean() - confidence[bins == b].mean())
                     for b in np.unique(bins)) / len(y))


def replay(run, args, monitor_class=LoopMonitor, **monitor_params):
    """The monitor's output round by round, on the stored probabilities, with the alternatives."""
    from modal_vlm.evaluation import (HeldOutPairs, TemperatureScaling, assess, audit_accuracy,
                                      expected_calibration_error)

    raw = np.load(raw_path(run, args))
    P, T, y_given, y_test = raw["pool"], raw["test"], raw["y_oracle"], raw["y_test"]
    rows = np.arange(len(y_given))
    monitor = monitor_class(run["audit"], random_state=run["seed"], **monitor_params).start(Replayed(P[0]), rows)
    labeled, out = [], []
    for r, record in enumerate(run["records"]):
        queried = np.asarray(record["queried"], dtype=int)
        if r:
            monitor.observe(Replayed(P[r - 1]), queried, y_given[queried], ids=queried,
                            audit=np.isin(queried, record["audit"]))
        labeled += queried.tolist()
        unlabeled = np.setdiff1d(rows, labeled)
        report = monitor.update(Replayed(P[r], zero_shot=P[0]), unlabeled)
        pairs = monitor.pairs_
        entry = {"round": r, "truth": float((T[r].argmax(1) == y_test).mean()), **report,
                 "ece": expected_calibration_error(y_test, monitor.calibrate(T[r])),
                 "ece_raw": expected_calibration_error(y_test, T[r]),
                 "ece_floor": expected_calibration_error(y_test,
                                                         TemperatureScaling().fit(T[r], y_test).transform(T[r])),
                 "ece_platt_floor": platt_floor_ece(T[r], y_test),
                 "rectifier_variance_floor": float(np.mean(_confidence_variance(
                     TemperatureScaling().fit(T[r], y_test).transform(T[r]).max(1)))),
                 "temperature": monitor.calibrator_.temperature_}
        if len(pairs):
            one = TemperatureScaling().fit(pairs.proba, pairs.labels)
            entry["ece_one_temperature"] = expected_calibration_error(y_test, one.transform(T[r]))
            every = HeldOutPairs(pairs.proba, pairs.labels, audit=np.ones(len(pairs), bool),
                                 temperature=pairs.temperature, rounds=pairs.rounds,
                                 model_labels=pairs.model_labels, scale=pairs.scale)
            est = assess(every, P[r][unlabeled], scale=monitor.scale_).estimate
            entry["estimate_all_pairs"] = None if est is None else est.as_dict()
            est = audit_accuracy(pairs.correct[pairs.audit])
            entry["estimate_audit_only"] = None if est is None else est.as_dict()
        out.append(entry)
    return out, monitor, y_given, raw["y_pool"]


def _mean_std(values, digits=3):
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}" if len(values) else "–"


def _interval_stats(entries, key="estimate"):
    """Coverage of the truth, mean |estimate - truth| and mean width, over rounds with an estimate."""
    made = [(e[key], e["truth"]) for e in entries if e.get(key)]
    if not made:
        return "–", "–", "–", 0
    cover = np.mean([est["low"] <= truth <= est["high"] for est, truth in made])
    error = np.mean([abs(est["accuracy"] - truth) for est, truth in made])
    width = np.mean([est["high"] - est["low"] for est, truth in made])
    return f"{cover:.0%}", f"{error:.3f}", f"{width:.3f}", len(made)


def calibration_table(replays, unscaled):
    lines = ["## Calibration: expected calibration error of the confidence on the test set", "",
             "Mean ± std over runs (CEC and random, seeds as above). Raw: `predict_proba` as it is. One temperature: "
             "temperature scaling on every test-then-train pair. Shown (the default): temperature scaling on the "
             "pairs of trained models, each round back weighing 0.7 times as much. Floor: a temperature fitted on the "
             "test set itself (what temperature scaling could do with 1,000 labels of the current model). "
             "Each model's log-probabilities are first divided by its margin scale (the mean gap between its top "
             "two log-probabilities on the stop set); without the margin scale: the previous default. "
             "Two-parameter floor: a logistic map of the top class's log-odds fitted on the test set itself.", "",
             "| confidence | " + " | ".join(f"{10 * r} labels" for r in CALIBRATION_ROUNDS) + " |",
             "|---|" + "---:|" * len(CALIBRATION_ROUNDS)]
    for name, key, source in [("raw `predict_proba`", "ece_raw", replays),
                              ("one temperature, every pair", "ece_one_temperature", replays),
                              ("shown (default)", "ece", replays),
                              ("shown, without the margin scale", "ece", unscaled),
                              ("floor: temperature fitted on the test set", "ece_floor", replays),
                              ("two-parameter floor: fitted on the test set", "ece_platt_floor", replays)]:
        cells = [_mean_std([run[r].get(key) for run in source]) for r in CALIBRATION_ROUNDS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    temps = [_mean_std([run[r]["temperature"] for run in replays], 2) for r in CALIBRATION_ROUNDS]
    lines.append("| (the default's temperature) | " + " | ".join(temps) + " |")
    return lines


def decay_table(main_runs, args):
    """The calibration's weight per round of age, the default's choice, replayed."""
    lines = ["## The calibration's decay", "",
             "Each round back, a pair weighs `decay` times less in the temperature (the zero-shot model's pairs "
             "left out once trained models scored ten): the calibration error of the shown confidence at 40 and 80 "
             "labels, and the estimate's coverage over every round, the same runs replayed.", "",
             "| decay | ECE at 40 labels | ECE at 80 labels | coverage | width at 80 labels |",
             "|---:|---:|---:|---:|---:|"]
    for decay in DECAYS:
        replays = [replay(run, args, calibration_decay=decay)[0] for run in main_runs]
        cover, _, _, _ = _interval_stats([e for entries in replays for e in entries[1:]])
        _, _, width, _ = _interval_stats([entries[-1] for entries in replays])
        lines.append(f"| {decay} | {np.mean([e[4]['ece'] for e in replays]):.3f} | "
                     f"{np.mean([e[8]['ece'] for e in replays]):.3f} | {cover} | {width} |")
    return lines


def estimate_table(replays, strategies):
    lines = ["## Accuracy estimate without a test set", "",
             "The 90 % interval of `rounds.json`'s `estimate` against the test accuracy of the same round, over "
             "the rounds that have an estimate (from three audit picks scored with a calibrated confidence, "
             "by at least two models, on). Default: the pool's mean calibrated confidence plus the error of the shown "
             "confidences on the audit picks (prediction-powered inference), the temperature's uncertainty "
             "added. Every pair: the same rectifier over every labeled image (the strategy's picks too). Audit "
             "only: the share of audit picks the model of their round got right (Wilson interval), no model.", "",
             "| round (labels) | rounds with an estimate | coverage | mean abs. error | mean width |",
             "|---|---:|---:|---:|---:|"]
    for r in range(1, len(replays[0])):
        cover, error, width, n = _interval_stats([run[r] for run in replays])
        lines.append(f"| {r} ({10 * r}) | {n} of {len(replays)} | {cover} | {error} | {width} |")
    lines += ["", "| estimator | strategy | rounds | coverage (all rounds) | abs. error at 80 labels | "
                  "width at 80 labels |", "|---|---|---:|---:|---:|---:|"]
    for name, key in [("default", "estimate"), ("every pair as rectifier", "estimate_all_pairs"),
                      ("audit picks only", "estimate_audit_only")]:
        for strategy in strategies + ["all"]:
            runs = [run for run, s in zip(replays, replays.strategies) if strategy in ("all", s)]
            cover, _, _, n = _interval_stats([e for run in runs for e in run[1:]], key)
            _, error, width, _ = _interval_stats([run[-1] for run in runs], key)
            lines.append(f"| {name} | {strategy} | {n} | {cover} | {error} | {width} |")
    variance = np.mean([run[-1]["rectifier_variance_floor"] for run in replays])
    audited = np.mean([run[-1]["estimate"]["n"] for run, strategy in zip(replays, replays.strategies)
                       if run[-1]["estimate"] and strategy == "cec"])
    labels = 10 * (len(replays[0]) - 1)
    floor = {n: 2 * stats.t.ppf(0.95, n - 1) * np.sqrt(variance / n) for n in (audited, labels)}
    # An unbiased estimate with standard error se is off by sqrt(2 / pi) * se on average (normal).
    error_floor = {n: np.sqrt(2 / np.pi) * np.sqrt(variance / n) for n in (audited, labels)}
    lines += ["", f"The narrowest valid 90 % interval at {labels} labels for an estimate that rests on labeled "
              "pairs and a calibrated confidence: with the test-set temperature (perfect calibration) the "
              f"rectifier's variance is the mean of `c (1 - c)`, {variance:.3f}, so the width is at least "
              f"{floor[audited]:.3f} with CEC's {audited:.0f} audit pairs and {floor[labels]:.3f} if every one of "
              f"the {labels} labels were an audit pick. The same variance sets the mean absolute error of such an "
              "estimate, unbiased and normal, at sqrt(2 / pi) times its standard error: "
              f"{error_floor[audited]:.3f} with CEC's audit pairs, {error_floor[labels]:.3f} with {labels}."]
    return lines


class Replays(list):
    """Replayed runs, with their strategies."""

    def __init__(self, items, strategies):
        super().__init__(items)
        self.strategies = strategies


def audit_cost_table(results, args):
    final = {(r["audit"], r["seed"]): r["records"][-1]["accuracy"] for r in results["runs"]
             if r["strategy"] == "cec" and not r["noise"]}
    audited, plain = ({seed: acc for (audit, seed), acc in final.items() if audit == share}
                      for share in (args.audit, 0.0))
    seeds = sorted(set(plain) & set(audited))
    diff = [audited[s] - plain[s] for s in seeds]
    lines = ["## The cost of auditing", "",
             f"CEC's final accuracy (80 labels) with an audit share of {args.audit} against CEC without audit "
             "picks, the same loop, seeds and defaults, both run by this benchmark.", "",
             "| seed | without audit picks | with audit picks | difference |", "|---:|---:|---:|---:|"]
    lines += [f"| {s} | {plain[s]:.3f} | {audited[s]:.3f} | {audited[s] - plain[s]:+.3f} |" for s in seeds]
    lines.append(f"| mean | {np.mean([plain[s] for s in seeds]):.3f} | {np.mean([audited[s] for s in seeds]):.3f} | "
                 f"{np.mean(diff):+.3f} ± {np.std(diff):.3f} |")
    return lines


def stopping_table(results, replays):
    from modal_vlm.evaluation import is_stable

    runs = results.get("stopping", [])
    if not runs:
        return []
    rounds = len(runs[0]["curve"]) - 1
    final = np.mean([run["curve"][-1]["accuracy"] for run in runs])
    lines = ["## Stopping: labels saved against accuracy given up", "",
             f"Proxy learner (the linear KgCoOp head of `screen_strategies.py` on the cached embeddings), "
             f"{rounds} rounds x 10 labels, round 1 random, audit share as above, CEC and random, {len(runs)} runs; "
             f"accuracy after {10 * rounds} labels: {final:.3f}. Stop at the first round where the mean kappa of the "
             "last `window` rounds (between each model and the one before, on the stop set) reaches the "
             "threshold; runs that never stop count as 0 labels saved, 0 accuracy given up.", "",
             "| window | threshold | labels saved | accuracy given up (mean) | (worst run) | runs never stable |",
             "|---:|---:|---:|---:|---:|---:|"]
    for window in WINDOWS:
        for threshold in THRESHOLDS:
            saved, lost, never = [], [], 0
            for run in runs:
                curve, kappas = run["curve"], [p["kappa"] for p in run["curve"]]
                stop = next((r for r in range(1, rounds + 1) if is_stable(kappas[:r + 1], threshold, window)), None)
                never += stop is None
                stop = rounds if stop is None else stop
                saved.append(1 - stop / rounds)
                lost.append(curve[-1]["accuracy"] - curve[stop]["accuracy"])
            lines.append(f"| {window} | {threshold:.2f} | {np.mean(saved):.0%} | {np.mean(lost):+.3f} | "
                         f"{np.max(lost):+.3f} | {never} of {len(runs)} |")
    lines += ["", "Hindsight, the bound no stopping signal can beat: each run stopped at the first round whose "
              "accuracy is within `tolerance` of its own final accuracy (knowing the future).", "",
              "| tolerance | labels saved | accuracy given up (mean) | (worst run) |", "|---:|---:|---:|---:|"]
    for tolerance in HINDSIGHT_TOLERANCES:
        stops = [next(r for r, point in enumerate(run["curve"])
                      if point["accuracy"] >= run["curve"][-1]["accuracy"] - tolerance) for run in runs]
        lost = [run["curve"][-1]["accuracy"] - run["curve"][stop]["accuracy"] for run, stop in zip(runs, stops)]
        lines.append(f"| {tolerance:.2f} | {np.mean([1 - stop / rounds for stop in stops]):.0%} | "
                     f"{np.mean(lost):+.3f} | {np.max(lost):+.3f} |")
    kappa = [[e["kappa"] for e in run[1:]] for run in replays]
    lines += ["", "The default learner's kappa between successive models in the 8-round runs (mean over runs): "
              + ", ".join(f"round {r + 1}: {np.mean([k[r] for k in kappa]):.3f}" for r in range(len(kappa[0]))) + "."]
    return lines


def suspects_table(results, args):
    from modal_vlm.evaluation import assess
    from modal_vlm.evaluation.calibration import margin_scale

    runs = [r for r in results["runs"] if r["noise"]]
    if not runs:
        return []
    seeds = sorted({run["seed"] for run in runs})
    lines = ["## Suspect labels", "",
             f"CEC with 10 % of the oracle's answers flipped (seeded, the same for every strategy of a seed), audit "
             f"share {runs[0]['audit']}, 80 labels, seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} runs). Flags: the "
             "labels whose calibrated probability is below `ratio` times that of the predicted class. Held out: "
             "the probabilities the model gave each image before it learned it, calibrated as they were then "
             "(free: the loop's pairs); + current: the geometric mean with the current model's ratio "
             "(calibrated now; free too: the model has learned the label, and one it still rejects is suspect); "
             "+ zero-shot: and the zero-shot model's (no label shaped it), each on its own margin scale; 5-fold: "
             "out-of-fold probabilities of five refits on the 80 labels (five extra trainings). "
             "Accuracy: refits on the 80 labeled images with the oracle's labels, with the default's flagged ones "
             "fixed, and with the true labels.", "",
             "| signal | ratio | flips | flagged | precision | recall |", "|---|---:|---:|---:|---:|---:|"]
    rows = {}
    for run in runs:
        replayed, monitor, y_given, y_true = replay(run, args)
        pairs, ids = monitor.pairs_, np.asarray(monitor._columns["ids"])
        flipped = set(ids[y_given[ids] != y_true[ids]].tolist())
        empty = np.zeros((0, pairs.proba.shape[1]))
        held_out = assess(pairs, empty).suspicion
        P = np.load(raw_path(run, args))["pool"]
        current = [(P[-1][ids], monitor.scale_)]
        zero_shot = [(P[0][ids], margin_scale(P[0][monitor.stop_set_]))]
        both = assess(pairs, empty, scale=monitor.scale_, opinions=current).suspicion
        found = assess(pairs, empty, scale=monitor.scale_, opinions=current + zero_shot)
        three = found.suspicion
        assert ids[found.suspects].tolist() == replayed[-1]["suspect_labels"], "the monitor's flags"
        oof_score = np.asarray(run["refits"]["oof_suspicion"])
        for ratio in SUSPECT_RATIOS:
            for signal, score in [("held out", held_out), ("held out + current", both),
                                  ("held out + current + zero-shot" + (" (default)" if ratio == DEFAULT_SUSPECT_RATIO
                                                                       else ""), three),
                                  ("5-fold refits", oof_score)]:
                flagged = set(ids[score > 1 - ratio].tolist())
                hit = len(flagged & flipped)
                rows.setdefault((signal, ratio), []).append((len(flipped), len(flagged), hit))
    for (signal, ratio), counts in rows.items():
        flips, flagged, hits = (np.sum([c[k] for c in counts]) for k in range(3))
        lines.append(f"| {signal} | {ratio} | {flips} | {flagged} | {hits / max(flagged, 1):.2f} | "
                     f"{hits / max(flips, 1):.2f} |")
    default = [c for (signal, _), counts in rows.items() if "(default)" in signal for c in counts]
    chosen = [run["seed"] in SUSPECT_CHOICE_SEEDS for run in runs]
    lines += ["", f"The default rule and threshold were chosen on seeds {SUSPECT_CHOICE_SEEDS.start}-"
              f"{SUSPECT_CHOICE_SEEDS.stop - 1} (the threshold of the grid whose precision and recall have the "
              "larger minimum); the other seeds were run after the choice and are held back:", "",
              "| seeds | runs | flips | flagged | precision | recall |", "|---|---:|---:|---:|---:|---:|"]
    for name, keep in [("chosen on", True), ("held back", False)]:
        counts = [c for c, own in zip(default, chosen) if own == keep]
        if counts:
            flips, flagged, hits = (np.sum([c[k] for c in counts]) for k in range(3))
            lines.append(f"| {name} | {len(counts)} | {flips} | {flagged} | {hits / max(flagged, 1):.2f} | "
                         f"{hits / max(flips, 1):.2f} |")
    noisy = [r["records"][-1]["accuracy"] for r in runs]
    clean = [r["refits"]["clean"] for r in runs]
    fixed = [r["refits"]["fixed"] for r in runs]
    cost, regained = np.subtract(clean, noisy), np.subtract(fixed, noisy)
    lines += ["", "| accuracy at 80 labels | mean over seeds |", "|---|---:|",
              f"| oracle's labels (10 % flipped) | {np.mean(noisy):.3f} |",
              f"| flagged labels fixed | {np.mean(fixed):.3f} |",
              f"| true labels | {np.mean(clean):.3f} |",
              f"| share of the noise's cost regained | {np.sum(regained) / np.sum(cost):.0%} "
              f"(cost {np.mean(cost):+.3f}, regained {np.mean(regained):+.3f}) |"]
    return lines


def write_figure(main_runs, replays, path):
    """The runner's learning-curve plot of the main runs, with this version's estimates."""
    from modal_vlm.runner.curves import plot_learning_curves

    records = [{"strategy": run["strategy"], "seed": run["seed"], **record, "estimate": entry["estimate"]}
               for run, entries in zip(main_runs, replays) for record, entry in zip(run["records"], entries)]
    plot_learning_curves(records, path, title="CIFAR-10, default offline model: test accuracy and the estimate")


def write_tables(results, args):
    main_runs = [r for r in results["runs"] if r["audit"] == args.audit and not r["noise"]]
    replays = Replays([replay(run, args)[0] for run in main_runs], [r["strategy"] for r in main_runs])
    write_figure(main_runs, replays, args.figure)
    seeds = sorted({r["seed"] for r in main_runs})
    noise_seeds = sorted({r["seed"] for r in results["runs"] if r["noise"]})
    lines = ["# What the labels bought: calibration, estimate, stopping, suspect labels", "",
             f"Default offline model `{args.model}` ({args.image_size}px), CIFAR-10 pool {args.pool_per_class}/class, "
             f"test {args.test_per_class}/class, {args.rounds} rounds x 10 labels (round 1 random), "
             f"`ClipPromptClassifier` defaults, `LoopMonitor` defaults with an audit share of {args.audit}; "
             f"{', '.join(sorted(set(replays.strategies)))}, seeds {seeds}.", "",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_trust.py --audit {args.audit} --seeds "
             f"{' '.join(map(str, seeds))}`, the suspect-label runs with `--parts noise --seeds "
             f"{' '.join(map(str, noise_seeds))}`; `--table-only` rewrites the tables from the stored runs "
             "(2-core CPU shared with other jobs; no timing here).", ""]
    unscaled = [replay(run, args, UnscaledMonitor)[0] for run in main_runs]
    lines += calibration_table(replays, unscaled) + [""] + decay_table(main_runs, args) + [""]
    lines += estimate_table(replays, sorted(set(replays.strategies))) + [""]
    lines += audit_cost_table(results, args) + [""] + stopping_table(results, replays) + [""]
    lines += suspects_table(results, args)
    Path(args.out).write_text("\n".join(lines) + "\n")


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
    parser.add_argument("--figure", default=str(ROOT / "docs" / "_static" / "trust-estimate.png"),
                        help="the learning-curve plot with the estimate's band")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    store = Path(args.out).with_suffix(".json")
    results = json.loads(store.read_text()) if store.exists() else {"runs": []}
    if args.table_only:
        write_tables(results, args)
        return
    data = protocol_data(args.pool_per_class, args.test_per_class)
    jobs = []
    if "runs" in args.parts:
        jobs += [(s, seed, args.audit, 0.0) for seed in args.seeds for s in args.strategies]
        # CEC without audit picks, for the cost of auditing.
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
                                "records": [{key: r[key] for key in KEPT} for r in records]})
        if job[3]:
            results["runs"][-1]["refits"] = noise_refits(records, data, job[1], args)
        store.write_text(json.dumps(results))
        print(f"{job}: final {records[-1]['accuracy']:.3f}, estimate {records[-1]['estimate']} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    results.setdefault("stopping", [])
    done = {(r["strategy"], r["seed"]) for r in results["stopping"]}
    todo = [(strategy, seed) for seed in range(args.long_seeds) for strategy in args.strategies
            if "stopping" in args.parts and (strategy, seed) not in done]
    if todo:
        from screen_strategies import embeddings

        proxy = embeddings(argparse.Namespace(pool_per_class=args.pool_per_class, test_per_class=args.test_per_class,
                                              model=args.model, image_size=args.image_size, cache_dir=args.cache_dir))
    for strategy, seed in todo:
        start = time.perf_counter()
        curve = stopping_run(strategy, seed, proxy, args)
        results["stopping"].append({"strategy": strategy, "seed": seed, "curve": curve})
        store.write_text(json.dumps(results))
        print(f"stopping {strategy} seed {seed}: {curve[-1]['accuracy']:.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    for run in results["runs"]:   # refits with the flags of this version's monitor fixed
        if not run["noise"]:
            continue
        flags = replay(run, args)[0][-1]["suspect_labels"]
        refits = run["refits"]
        if refits.get("fixed_flags") != flags:
            refits.setdefault("clean", refit_accuracy(run["records"], data, run["seed"], args,
                                                      fixed=range(len(data[1]))))
            refits.update(fixed=refit_accuracy(run["records"], data, run["seed"], args, fixed=flags), fixed_flags=flags)
            store.write_text(json.dumps(results))
    if any(not run["noise"] for run in results["runs"]):
        write_tables(results, args)


if __name__ == "__main__":
    main()
