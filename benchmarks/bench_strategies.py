"""Strategy comparison on the shared CIFAR-10 data with the default offline model.

The protocol of PCB's harness (``docs/algorithms.rst``, "The evaluation protocol"): 8 rounds
x C = 10 labels, round 1 random for every method, a fresh prompt every round. Each run is
:func:`modal_vlm.experiment.run_active_learning` (each round's query seeded by
``round_seed(seed, round)``), with ``ClipPromptClassifier``'s **defaults** unless an arm says
otherwise; the "CoOp protocol learner" arms use ``modal_vlm.model.COOP_PROTOCOL`` (16 class-specific
contexts from N(0, 0.02), SGD 0.002, batch 32, 200 epochs). Pool: the first
``--pool-per-class`` training images per class; test: the first ``--test-per-class`` test
images per class; the default offline model at ``--image-size`` px. Accuracy after every
round; the area under the learning curve is the mean accuracy over rounds 1..8 (trapezoids
over equal steps). CB+SQ's pseudo-labels come on top of the oracle budget (see
docs/strategies.rst).

    python benchmarks/bench_strategies.py [--seeds 0 1 2 3 4] [--strategies cec random ...]
        [--out benchmarks/results/strategies.md] [--resume] [--table-only]
        [--first-round strategy --rounds 1]

Writes a markdown table (mean ± std over seeds, and the per-seed paired difference against
random with a sign test of its seeds; with CEC among the arms, the same against CEC for
final accuracy and area) and a JSON file of every run beside it. Extra seeds for a few arms
go to another ``--out`` (``results/strategies_20_seeds.md``: five seeds cannot separate a
lead of 0.02 from a per-seed spread of the same size). ``--first-round strategy --rounds 1``
is the cold start (``results/strategies_cold_start.md``): the first labels chosen by each
strategy from the zero-shot model instead of at random. The low-budget methods (issue 28) in the
full protocol, beside CEC's and random's runs of the same seeds: ``results/strategies_low_budget.md``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from _protocol import OFFLINE_MODEL, ROOT, curve_area, protocol_data
from modal_vlm import ClipPromptClassifier, get_strategy
from modal_vlm.model import COOP_PROTOCOL
from modal_vlm.experiment import run_active_learning

#: CEC's defaults before this benchmark chose the covering (``K = n_instances``, the cluster's most
#: uncertain member): the arms that vary one parameter of it pin the rest, so their rows stay
#: what was run.
PREVIOUS_CEC = {"avoid_labeled": False, "selection": "most_uncertain"}

ARMS = {  # name -> (strategy name, strategy parameters, classifier parameters); in run order
    "random": ("random", {}, {}),
    # The default: K = n_instances + 2 L clusters, the centroid member of the heaviest without a label.
    "cec": ("cec", {}, {}),
    "entropy": ("entropy", {}, {}),
    "margin": ("margin", {}, {}),
    "coreset": ("coreset", {}, {}),
    "badge": ("badge", {}, {}),
    "cb": ("cb", {}, {}),
    "cbsq": ("cbsq", {}, {}),
    "entropy+pcb": ("entropy+pcb", {}, {}),
    "margin+pcb": ("margin+pcb", {}, {}),
    "coreset+pcb": ("coreset+pcb", {}, {}),
    "badge+pcb": ("badge+pcb", {}, {}),
    "random+pcb": ("random+pcb", {}, {}),
    # The low-budget methods (issue 28), with their authors' defaults.
    "typiclust": ("typiclust", {}, {}),
    "probcover": ("probcover", {}, {}),
    "maxherding": ("maxherding", {}, {}),
    "uherding": ("uherding", {}, {}),
    "dropquery": ("dropquery", {}, {}),
    # The CEC ablation: entropy only (= entropy), + calibration, + neighbours, + clustering.
    "cec: + calibration": ("cec", {"alpha": 0.0, "clustering": False}, {}),
    "cec: + neighbours": ("cec", {"clustering": False}, {}),
    # The spec's clustering (K = n_instances, whatever the labels) and its within-cluster rules.
    "cec, K = b, centroid member (spec)": ("cec", {**PREVIOUS_CEC, "selection": "centroid"}, {}),
    "cec, K = b, most uncertain member (previous default)": ("cec", PREVIOUS_CEC, {}),
    "cec, K = b, candidates 10 per pick": ("cec", {**PREVIOUS_CEC, "selection": "candidates",
                                                   "candidates_per_query": 10}, {}),
    "cec, K = b, candidates 3 per pick": ("cec", {**PREVIOUS_CEC, "selection": "candidates",
                                                  "candidates_per_query": 3}, {}),
    # Clusters that hold a labeled sample skipped (TypiClust's covering), one cluster per label.
    "cec, K = b + L, most uncertain member": ("cec", {"clusters_per_label": 1, "selection": "most_uncertain"}, {}),
    "cec, K = b + L, centroid member": ("cec", {"clusters_per_label": 1}, {}),
    # The k-means weights U ** weight_power (default 1, the spec; 0: unweighted clusters).
    "cec, K = b, weights U^0 (unweighted clusters)": ("cec", {**PREVIOUS_CEC, "weight_power": 0.0}, {}),
    "cec, K = b, weights U^3": ("cec", {**PREVIOUS_CEC, "weight_power": 3.0}, {}),
    # The neighbourhood term's weight (default 0.5).
    "cec, K = b, alpha 0": ("cec", {**PREVIOUS_CEC, "alpha": 0.0}, {}),
    "cec, K = b, alpha 1": ("cec", {**PREVIOUS_CEC, "alpha": 1.0}, {}),
    # The field's reference learner in the same loop.
    "cec, K = b, CoOp protocol learner": ("cec", PREVIOUS_CEC, COOP_PROTOCOL),
    "random, CoOp protocol learner": ("random", {}, COOP_PROTOCOL),
}


def strategy_of(name):
    strategy_name, params, _ = ARMS[name]
    strategy = get_strategy(strategy_name)
    return functools.partial(strategy, **params) if params else strategy


def run(name, seed, data, args):
    X_pool, y_pool, X_test, y_test, names = data
    clf = ClipPromptClassifier(names, **{"model_name": args.model, "image_size": args.image_size,
                                         "verbose": 0, "cache_dir": args.cache_dir, **ARMS[name][2],
                                         **args.estimator_params})
    records = run_active_learning(clf, strategy_of(name), X_pool, y_pool, X_test, y_test,
                                  rounds=args.rounds, budget=len(names), first_round=args.first_round,
                                  random_state=seed)
    return {"strategy": name, "seed": seed, "first_round": args.first_round,
            "estimator_params": args.estimator_params, "accuracy": [r["accuracy"] for r in records],
            "class_counts": records[-1]["class_counts"],
            "pseudo_labeled": sum(len(r.get("pseudo_labeled", [])) for r in records),
            "pseudo_correct": sum(r.get("pseudo_correct", 0) for r in records),
            "seconds": {phase: sum(r["seconds"][phase] for r in records)
                        for phase in ("encode", "query", "train", "evaluate")}}


def _mean_std(values):
    values = np.asarray(values)
    return f"{values.mean():.3f} ± {values.std():.3f}"


def _sign_test(paired):
    """One-sided sign test of ``paired > 0`` (ties carry no sign), as text."""
    above, below = sum(d > 0 for d in paired), sum(d < 0 for d in paired)
    return f"{binomtest(above, above + below, alternative='greater').pvalue:.3f}" if above + below else ""


def _against_cec(results, names, by_seed):
    """Per arm, the per-seed paired difference of CEC's final accuracy and area minus the arm's."""
    lines = ["", "Paired against CEC, per seed (\"CEC higher\": the seeds where CEC's value is larger; \"p\": "
             "one-sided sign test of those seeds, ties dropped):", "",
             "| strategy | seeds | final: CEC - strategy | CEC higher | p | area: CEC - strategy | CEC higher | p |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        runs = [r for r in results if r["strategy"] == name and ("cec", r["seed"]) in by_seed]
        if name == "cec" or not runs:
            continue
        cells = []
        for value in (lambda r: r["accuracy"][-1], lambda r: curve_area(r["accuracy"])):
            paired = [value(by_seed[("cec", r["seed"])]) - value(r) for r in runs]
            cells.append(f"{np.mean(paired):+.3f} | {sum(d > 0 for d in paired)}/{len(paired)} | {_sign_test(paired)}")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def table(results, args):
    names = list(dict.fromkeys(r["strategy"] for r in results))
    by_seed = {(r["strategy"], r["seed"]): r for r in results}
    first = ("round 1 random" if args.first_round == "random"
             else "round 1 chosen by the strategy from the zero-shot model")
    lines = [
        f"Default offline model `{args.model}` ({args.image_size}px), CIFAR-10 pool {args.pool_per_class}/class, "
        f"test {args.test_per_class}/class, {args.rounds} rounds x 10 labels ({first}), "
        f"`ClipPromptClassifier` defaults unless the arm says otherwise, seeds {args.seeds} "
        "(the first ones where the seeds column says fewer).",
        "",
        "Command: `python benchmarks/bench_strategies.py " + shlex.join(sys.argv[1:]) + "` (2-core CPU). "
        "Area under curve: mean accuracy over rounds 1..8 (trapezoids). \"min - zero-shot\": the lowest "
        "accuracy of rounds 1..8 minus zero-shot, averaged over seeds (negative: the run falls below "
        "zero-shot at some budget). \"vs random\": per-seed paired difference of the final accuracy "
        "(mean, and the seeds where it is > 0); \"p\": one-sided sign test of those seeds against a coin "
        "(ties dropped: the chance of at least that many seeds above random if the strategy were no better). "
        "Seconds per phase are in the JSON (not a timing "
        "benchmark: see cost.md).",
        "",
        "| strategy | seeds | zero-shot | final accuracy | area under curve | min - zero-shot | final vs random "
        "| seeds > random | p | classes labeled | pseudo-labels (correct) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        runs = [r for r in results if r["strategy"] == name]
        acc = np.array([r["accuracy"] for r in runs])
        area = [curve_area(a) for a in acc]
        dip = acc[:, 1:].min(1) - acc[:, 0]
        paired = [r["accuracy"][-1] - by_seed[("random", r["seed"])]["accuracy"][-1]
                  for r in runs if ("random", r["seed"]) in by_seed]
        vs_random = f"{np.mean(paired):+.3f} | {sum(d > 0 for d in paired)}/{len(paired)} | {_sign_test(paired)}" \
            if paired and name != "random" else "| | "
        classes = np.mean([np.count_nonzero(r["class_counts"]) for r in runs])
        pseudo = sum(r["pseudo_labeled"] for r in runs)
        pseudo_text = f"{pseudo / len(runs):.0f} ({sum(r['pseudo_correct'] for r in runs) / max(pseudo, 1):.0%})" \
            if pseudo else ""
        lines.append(f"| {name} | {len(runs)} | {acc[:, 0].mean():.3f} | {_mean_std(acc[:, -1])} | {_mean_std(area)} | "
                     f"{dip.mean():+.3f} | {vs_random} | {classes:.1f} | {pseudo_text} |")
    if "cec" in names and len(names) > 1:
        lines += _against_cec(results, names, by_seed)
    rounds = range(args.rounds + 1)
    lines += ["", "Mean accuracy per round (round 0: zero-shot; oracle labels = 10 x round):", "",
              "| strategy | " + " | ".join(str(r) for r in rounds) + " |",
              "|---|" + "---:|" * len(rounds)]
    for name in names:
        acc = np.array([r["accuracy"] for r in results if r["strategy"] == name]).mean(0)
        lines.append(f"| {name} | " + " | ".join(f"{a:.3f}" for a in acc) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--first-round", choices=["random", "strategy"], default="random",
                        help="round 1 at random (the protocol) or by the strategy (the cold start)")
    parser.add_argument("--model", default=OFFLINE_MODEL)
    parser.add_argument("--estimator-params", type=json.loads, default={},
                        help="JSON of ClipPromptClassifier parameters over every arm's, e.g. "
                             "'{\"n_iter_no_change\": null}' to extend runs made before early stopping")
    parser.add_argument("--pool-per-class", type=int, default=150)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache"),
                        help="image embeddings kept on disk between runs")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in the JSON file beside --out and run only the others")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: rewrite the table from the JSON file beside --out")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "strategies.md"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = out.with_suffix(".json")
    results = json.loads(store.read_text()) if (args.resume or args.table_only) and store.exists() else []
    if args.table_only:
        args.seeds = sorted({r["seed"] for r in results})
        if results:  # the stored runs say how they ran
            args.rounds = len(results[0]["accuracy"]) - 1
            args.first_round = results[0].get("first_round", "random")
        out.write_text(table(results, args))
        return
    data = protocol_data(args.pool_per_class, args.test_per_class)
    done = {(r["strategy"], r["seed"]) for r in results}
    for name in args.strategies:
        for seed in args.seeds:
            if (name, seed) in done:
                continue
            start = time.perf_counter()
            results.append(run(name, seed, data, args))
            print(f"{name} seed {seed}: final {results[-1]['accuracy'][-1]:.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            store.write_text(json.dumps(results, indent=1))
            out.write_text(table(results, args))
    out.write_text(table(results, args))
    print(table(results, args))


if __name__ == "__main__":
    main()
