"""Semi-supervised UEO vs. labels only inside the active-learning loop.

A modAL ``ActiveLearner`` around ``ClipPromptClassifier`` with the default offline model
(``--model``) at ``--image-size`` px (160), shared CIFAR-10 (pool: the first
``--pool-per-class`` = 150 training images of every class; test: the first
``--test-per-class`` = 100 test images of every class), ``--rounds`` = 8 rounds, round 1 at
random, rounds 2.. queried by CEC (``get_strategy("cec")``, its defaults, ``random_state`` =
the run's RandomState), a fresh prompt every round with the classifier's defaults (context from
the zero-shot template, KgCoOp, the CoOp authors' shot schedule; ``--epochs`` overrides the
schedule). Round 0 is zero-shot ("a photo of a {}.").

Arms (identical except for the fit mode):

* ``supervised``: ``fit_mode="supervised"`` on the labeled set.
* ``ueo``: ``fit_mode="ueo"``, ``lambda_ueo=1``, ``ueo_temperature=1`` (defaults),
  ``unlabeled_batch_size=64``, **prompt-only** (``train_visual_norm=False``): the loss is
  ``CE(labeled batch) + L_ueo(unlabeled batch)``; the unlabeled data is the whole remaining pool
  of the round, passed as ``learner.teach(X, y, X_unlabeled=X_remaining_pool)``. An epoch is one
  pass over the labeled samples, so UEO gets as many optimizer steps as the supervised arm.
* ``ueo-norm`` (extra): the same with ``train_visual_norm=True`` (the spec's full UEO: the
  image encoder's norm affines are trained too). Very slow on a CPU.
* ``ueo-T0.01`` (extra): ``ueo`` with ``ueo_temperature=0.01`` (sharper, more varied sample
  weights than the authors' T = 1).

Settings:

* ``closed``: the 10 CIFAR-10 classes; budget 10 labels per round.
* ``open``: ``make_open_set(..., known=6 first classes, setting="open")``: known = airplane,
  automobile, bird, cat, deer, dog (the classifier's ``class_names``), unknown = frog, horse,
  ship, truck. The pool holds 150 images of each of the 10 classes (900 known + 600 unknown);
  the budget is 6 labels per round (= number of known classes). A queried unknown-class image is
  labeled "unknown" by the oracle: it leaves the pool but is not added to the training set
  (counted as a wasted label). If a round's queries are all unknown, the learner is not refit
  (its model stays as in the previous round). The UEO arm's unlabeled data is the whole
  remaining pool (known + unknown images). Test: 600 known + 400 unknown test images; accuracy
  over the known-class test images, AUROC (and FPR at 95 % TPR) of known (positive) vs unknown
  test images from ``score_samples`` (max softmax probability, higher = known).

Reported per round (0 = zero-shot, 1..8): accuracy mean ± std over seeds (open: AUROC too,
and wasted labels); final accuracy, area under the curve (mean accuracy over rounds 1..8,
trapezoids, bench_strategies' ``curve_area``), min over rounds 1..8 minus zero-shot (mean over
seeds and the worst seed), and how many (seed, round) points fall below zero-shot.

    python benchmarks/bench_semi_supervised.py [--seeds 0 1 2] [--epochs N]
        [--settings closed open] [--arms supervised ueo] [--out benchmarks/results/semi_supervised.md]

Writes the markdown tables and a JSON file of every run beside it after every finished run;
runs already in the JSON (same setting, arm, seed and configuration) are skipped, so an
interrupted benchmark resumes where it stopped (``--fresh`` ignores the JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from modAL.models import ActiveLearner

from _protocol import OFFLINE_MODEL, ROOT, add_protocol_arguments, curve_area, protocol_data
from modal_vlm import ClipPromptClassifier, get_strategy
from modal_vlm.datasets import make_open_set
from modal_vlm.metrics import ood_metrics

ARMS = {
    "supervised": {"fit_mode": "supervised"},
    "ueo": {"fit_mode": "ueo", "train_visual_norm": False},
    "ueo-norm": {"fit_mode": "ueo", "train_visual_norm": True},
    # UEO's sample-weight temperature T = 0.01 (the usual logit scale) instead of the authors' 1.
    "ueo-T0.01": {"fit_mode": "ueo", "train_visual_norm": False, "ueo_temperature": 0.01},
}
N_KNOWN = 6


def load(args):
    X_train, y_train, X_test, y_test, names = protocol_data(args.pool_per_class, args.test_per_class)
    data = {"closed": (X_train, y_train, X_test, y_test, list(names), [])}
    split = make_open_set((X_train, y_train), (X_test, y_test), names, known=N_KNOWN, setting="open")
    data["open"] = (split.X_pool, split.y_pool, split.X_test, split.y_test, list(split.known_classes),
                    list(split.unknown_classes))
    return data


def config(args):
    return {"model": args.model, "epochs": args.epochs, "rounds": args.rounds, "pool_per_class": args.pool_per_class,
            "test_per_class": args.test_per_class, "image_size": args.image_size}


def run(setting, arm, seed, data, args):
    X_pool, y_pool, X_test, y_test, names, unknown = data[setting]
    strategy = get_strategy("cec")
    epochs = {} if args.epochs is None else {"max_epochs": args.epochs}
    clf = ClipPromptClassifier(names, model_name=args.model, image_size=args.image_size, random_state=seed,
                               verbose=0, cache_dir=args.cache_dir, **epochs, **ARMS[arm])
    learner = ActiveLearner(estimator=clf, query_strategy=strategy)
    rng = np.random.RandomState(seed)
    budget = len(names)
    known_test = y_test >= 0

    def evaluate():
        proba = learner.predict_proba(X_test)
        result = {"accuracy": float(np.mean(proba[known_test].argmax(1) == y_test[known_test]))}
        if not known_test.all():
            result.update(ood_metrics(proba.max(1), known_test))
        return result

    pool = np.arange(len(y_pool))
    rounds = [{**evaluate(), "wasted": 0, "seconds": 0.0}]
    print(f"  {setting}/{arm}/seed {seed} round 0: acc {rounds[0]['accuracy']:.3f}"
          + (f" auroc {rounds[0]['auroc']:.3f}" if "auroc" in rounds[0] else ""), flush=True)
    for round_ in range(1, args.rounds + 1):
        start = time.perf_counter()
        if round_ == 1:
            idx = rng.choice(len(pool), budget, replace=False)
        else:
            idx = strategy(learner, X_pool[pool], budget, random_state=rng, return_metrics=True)[0]
        query_s = time.perf_counter() - start
        chosen = pool[idx]
        pool = np.delete(pool, idx)
        known = chosen[y_pool[chosen] >= 0]  # the oracle answers "unknown" for the others
        start = time.perf_counter()
        if len(known):
            fit_kwargs = {"X_unlabeled": X_pool[pool]} if ARMS[arm]["fit_mode"] != "supervised" else {}
            learner.teach(X_pool[known], y_pool[known], **fit_kwargs)
        train_s = time.perf_counter() - start
        rounds.append({**evaluate(), "wasted": int(len(chosen) - len(known)), "query_seconds": query_s,
                       "train_seconds": train_s, "seconds": query_s + train_s})
        r = rounds[-1]
        print(f"  {setting}/{arm}/seed {seed} round {round_}: acc {r['accuracy']:.3f}"
              + (f" auroc {r['auroc']:.3f} wasted {r['wasted']}" if "auroc" in r else "")
              + f" (query {query_s:.1f} s, train+eval {time.perf_counter() - start:.1f} s)", flush=True)
    labeled = np.bincount(learner.y_training, minlength=len(names)) if learner.y_training is not None \
        else np.zeros(len(names), int)
    return {"setting": setting, "arm": arm, "seed": seed, "config": config(args), "class_names": names,
            "unknown_classes": unknown, "accuracy": [r["accuracy"] for r in rounds],
            "auroc": [r.get("auroc") for r in rounds], "fpr_at_95_tpr": [r.get("fpr_at_95_tpr") for r in rounds],
            "wasted": [r["wasted"] for r in rounds], "class_counts": labeled.tolist(),
            "seconds": [r["seconds"] for r in rounds]}


def _ms(values, digits=3):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def _per_round(runs_by_arm, key, title, digits=3):
    n = max(len(r[key]) for runs in runs_by_arm.values() for r in runs)
    lines = [title, "", "| arm | seeds | " + " | ".join(f"r{i}" for i in range(n)) + " |",
             "|---|---:|" + "---:|" * n]
    for arm, runs in runs_by_arm.items():
        values = np.array([r[key] for r in runs], dtype=float)
        cells = [f"{values[:, i].mean():.{digits}f} ± {values[:, i].std():.{digits}f}" for i in range(n)]
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines + [""]


def table(results, header):
    lines = header + [""]
    for setting in ("closed", "open"):
        by_arm = {}
        for r in results:
            if r["setting"] == setting:
                by_arm.setdefault(r["arm"], []).append(r)
        if not by_arm:
            continue
        any_run = next(iter(by_arm.values()))[0]
        known = ", ".join(any_run["class_names"])
        lines += [f"## {setting.capitalize()} set ({len(any_run['class_names'])} known classes: {known}"
                  + (f"; unknown in pool and test: {', '.join(any_run['unknown_classes'])}"
                     if any_run["unknown_classes"] else "") + ")", ""]
        lines += ["| arm | seeds | zero-shot | final accuracy | area under curve | min over rounds - zero-shot "
                  "(mean / worst seed) | (seed, round) points below zero-shot | "
                  "mean s/round (query + train, shared CPU) |"
                  + (" final AUROC | zero-shot AUROC | wasted labels (total of 8 rounds) |"
                     if setting == "open" else ""),
                  "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if setting == "open" else "")]
        for arm, runs in by_arm.items():
            acc = np.array([r["accuracy"] for r in runs])
            dip = acc[:, 1:].min(1) - acc[:, 0]
            below = int((acc[:, 1:] < acc[:, [0]] - 1e-12).sum())
            row = (f"| {arm} | {len(runs)} | {acc[:, 0].mean():.3f} | {_ms(acc[:, -1])} | "
                   f"{_ms([curve_area(a) for a in acc])} | {dip.mean():+.3f} / {dip.min():+.3f} | "
                   f"{below} of {acc[:, 1:].size} | {np.mean([np.mean(r['seconds'][1:]) for r in runs]):.1f} |")
            if setting == "open":
                auroc = np.array([r["auroc"] for r in runs], dtype=float)
                wasted = np.array([sum(r["wasted"]) for r in runs])
                row += f" {_ms(auroc[:, -1])} | {auroc[:, 0].mean():.3f} | {_ms(wasted, 1)} |"
            lines.append(row)
        lines.append("")
        lines += _per_round(by_arm, "accuracy",
                            f"Accuracy per round ({'known-class test images' if setting == 'open' else 'test set'}; "
                            "r0 = zero-shot), mean ± std over seeds:")
        if setting == "open":
            lines += _per_round(by_arm, "auroc", "AUROC known vs unknown test images per round "
                                "(score_samples = max softmax probability), mean ± std over seeds:")
            lines += _per_round(by_arm, "fpr_at_95_tpr", "FPR at 95 % TPR per round, mean ± std over seeds:")
            lines += _per_round(by_arm, "wasted", "Labels spent on unknown-class images per round (of 6), "
                                "mean ± std over seeds:", digits=1)
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["closed", "open"], choices=["closed", "open"])
    parser.add_argument("--arms", nargs="+", default=["supervised", "ueo"], choices=list(ARMS))
    add_protocol_arguments(parser, cache_dir=".cache")
    parser.add_argument("--model", default=OFFLINE_MODEL)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "semi_supervised.md"))
    parser.add_argument("--note", default="", help="free text added to the results header")
    parser.add_argument("--fresh", action="store_true", help="ignore runs already in the JSON")
    parser.add_argument("--import-json", nargs="*", default=[], metavar="JSON",
                        help="add the runs of these JSON files (written by this script) to the results")
    parser.add_argument("--table-only", action="store_true", help="run nothing: rewrite the tables (and JSON)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    results = [] if args.fresh or not json_path.exists() else json.loads(json_path.read_text())
    data = load(args)
    argv = sys.argv[1:]
    if "--note" in argv:  # the note is printed on its own
        i = argv.index("--note")
        argv = argv[:i] + argv[i + 2:]
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + argv)

    def header():
        configs = sorted({json.dumps(r["config"], sort_keys=True) for r in results})
        return [
            "# Semi-supervised UEO vs. labels only in the active-learning loop",
            "",
            f"What ran: `{args.model}` ({args.image_size}px), CIFAR-10 "
            f"pool = first {args.pool_per_class} train images/class, test = first {args.test_per_class} test "
            f"images/class, {args.rounds} rounds x C labels (C = 10 closed set, 6 open set), round 1 random, "
            "then CEC; a fresh prompt every round with `ClipPromptClassifier`'s defaults (context from the "
            "zero-shot template, KgCoOp, the shot schedule"
            + (f"; {args.epochs} epochs per round" if args.epochs is not None else "") + "). Arms: "
            "`supervised` = fit_mode='supervised'; `ueo` = "
            "fit_mode='ueo', lambda_ueo=1, ueo_temperature=1, unlabeled batch 64, prompt-only "
            "(train_visual_norm=False: the image encoder's norm layers are NOT adapted), unlabeled data = the "
            "whole remaining pool each round; `ueo-norm` = the same with train_visual_norm=True; `ueo-T0.01` = "
            "`ueo` with ueo_temperature=0.01. Open set: "
            "known = the first 6 classes, 4 unknown classes in the pool (900 known + 600 unknown images) and "
            "in the test set; queried unknowns are wasted labels (not trained on); accuracy on known test "
            "images, AUROC known vs unknown from the max softmax probability. Configurations in the JSON: "
            + "; ".join(configs) + ".",
            "",
            f"{'Tables rewritten from the JSON by' if args.table_only else 'Command:'} `{command}` "
            "(resumes from the JSON; runs in it are listed below, mean ± std over the "
            "seeds given in the `seeds` column). Machine: 2 shared CPU cores. Area under curve: mean accuracy "
            "over rounds 1..8 (trapezoids). Min over rounds - zero-shot: lowest accuracy of rounds 1..8 minus "
            "zero-shot (mean over seeds / worst seed)." + (f" {args.note}" if args.note else ""),
        ]

    def write():
        json_path.write_text(json.dumps(results, indent=1))
        out.write_text(table(results, header()))

    done = {(r["setting"], r["arm"], r["seed"], json.dumps(r["config"], sort_keys=True)) for r in results}
    for path in args.import_json:  # runs made by another process (e.g. extra arms run alongside)
        for r in json.loads(Path(path).read_text()):
            key = (r["setting"], r["arm"], r["seed"], json.dumps(r["config"], sort_keys=True))
            if key not in done:
                results.append(r)
                done.add(key)
                print(f"imported {r['setting']}/{r['arm']}/seed {r['seed']} from {path}", flush=True)
    for seed in [] if args.table_only else args.seeds:  # seed-major: every setting and arm of seed 0 first
        for setting in args.settings:
            for arm in args.arms:
                key = (setting, arm, seed, json.dumps(config(args), sort_keys=True))
                if key in done:
                    print(f"{setting}/{arm}/seed {seed}: already in {json_path.name}, skipped", flush=True)
                    continue
                start = time.perf_counter()
                results.append(run(setting, arm, seed, data, args))
                r = results[-1]
                print(f"{setting}/{arm}/seed {seed}: final acc {r['accuracy'][-1]:.3f}"
                      + (f" auroc {r['auroc'][-1]:.3f}" if r["auroc"][-1] is not None else "")
                      + f" ({time.perf_counter() - start:.0f} s)", flush=True)
                write()
    if results:
        write()
        print(table(results, header()))


if __name__ == "__main__":
    main()
