"""Realistic pools: images of none of the classes (near and far), long tails, and a clean pool.

Every run is :func:`modal_vlm.experiment.run_active_learning` (the runner's loop: modAL's
``ActiveLearner`` around ``ClipPromptClassifier`` with its **defaults** unless an arm says
otherwise; each round's query seeded by ``round_seed(seed, round)``), with the default offline
model at ``--image-size`` px, ``--rounds`` rounds x ``--budget`` picks, round 1 at random. The
simulated oracle answers :data:`modal_vlm.NONE` ("none of these classes") for a junk image:
the answer costs one pick of the budget and is taught like any label.

Pools (the shared CIFAR-10 data; the same pool for every seed unless said otherwise):

* ``clean``: the 10 classes, the first 150 training images of each; test: the first 100 test
  images of each.
* ``near``: 6 known classes (airplane, automobile, bird, cat, deer, dog), 150 images each, and
  the first 150 of each of the 4 others (frog, horse, ship, truck) as junk: 600 of 1500 (40 %).
  Test: the known classes' 600 test images and 400 of the others (out-of-distribution).
* ``digits``: the same 900 known images and 600 of scikit-learn's 8x8 digits upscaled to
  32x32 RGB (far OOD); test: 400 other digits as OOD.
* ``screenshots``: the same 900 and 600 synthetic screenshots (``_junk.py``); test: 400 more.
  A kind of junk the open-set weighting was **not** tuned on (its bandwidth and threshold
  were screened on ``near`` and ``digits`` only).
* ``long-tail``: the 10 classes, class counts decaying by a constant factor from 200 to 2
  (``modal_vlm.runner.pools.long_tailed``, imbalance 100; 496 images), the head class
  rotating with the seed (seed s: class s first); test: the balanced 100 per class, so
  accuracy is the balanced accuracy.

Arms: ``random``; ``cec (5d07f40)``: CEC as it was before this benchmark (no open-set
weighting) with the "none" answers not taught (the learner and the strategy never see them:
what the canonical loop did when "none" had no label); ``cec, open_set=False``: the "none"
answers taught, no weighting; ``cec``: the default (open-set weighting on); ``cec, UEO``:
``fit_mode="ueo"`` (prompt-only; the runner gives each round's fit the images not yet labeled
as ``X_unlabeled``); ``entropy``,
``entropy+open`` (the ``open_set`` wrapper), ``entropy+pcb`` (PCB), ``cb``.

    OMP_NUM_THREADS=1 python benchmarks/bench_open_set.py [--pools near digits ...] [--arms ...]
        [--seeds 0 1 2 3 4] [--out benchmarks/results/open_set.md] [--table-only]
    OMP_NUM_THREADS=1 python benchmarks/bench_open_set.py --scores [--seeds 0 1 2]

``--scores`` studies the in-distribution score itself (the issue's "why does UEO not raise
AUROC?"): on the ``near`` and ``digits`` pools, 5 labels per known class drawn with the seed,
four fits (zero-shot; labels only; semi-supervised UEO, prompt-only, the rest of the pool
unlabeled; the same with UEO's weight temperature at 0.01) and the AUROC of two scores of the
same fit: the maximum softmax probability (the UEO paper's) and the maximum cosine to a class
(``score_samples``'s default);
``--norm`` adds UEO with the image encoder's normalisation layers trained
(``train_visual_norm=True``), which is slow on a CPU.

Runs already in the JSON beside ``--out`` are kept (same pool, arm, seed and settings), so an
interrupted benchmark resumes; several processes may run different pools with their own
``--out`` and be merged with ``--merge``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

import numpy as np

import _junk
from _protocol import CIFAR10, OFFLINE_MODEL, ROOT, curve_area
from modal_vlm import NONE, ClipPromptClassifier, get_strategy
from modal_vlm.datasets import load_image_folder
from modal_vlm.experiment import run_active_learning
from modal_vlm.runner.pools import long_tailed, with_none_images

N_KNOWN = 6
JUNK_POOL, JUNK_TEST = 600, 400
IMBALANCE = 100
#: The data seed of the generated junk (digits drawn, screenshots drawn): one pool for all seeds.
DATA_SEED = 0

POOLS = ("clean", "near", "digits", "screenshots", "long-tail")

ARMS = {  # name -> (strategy name, strategy parameters, classifier parameters, "none" answers taught)
    "random": ("random", {}, {}, True),
    "cec (5d07f40)": ("cec", {"open_set": False}, {}, False),
    "cec, open_set=False": ("cec", {"open_set": False}, {}, True),
    "cec": ("cec", {}, {}, True),
    "cec, UEO": ("cec", {}, {"fit_mode": "ueo", "train_visual_norm": False}, True),
    "entropy": ("entropy", {}, {}, True),
    "entropy+open": ("entropy+open", {}, {}, True),
    "entropy+pcb": ("entropy+pcb", {}, {}, True),
    "cb": ("cb", {}, {}, True),
}
#: The arms each pool runs by default: the fewest runs that check the issue's targets (the other
#: arms on request, ``--arms``).
POOL_ARMS = {
    "near": ["random", "cec (5d07f40)", "cec, open_set=False", "cec"],
    "digits": ["random", "cec"],
    "screenshots": ["random", "cec"],
    "long-tail": ["random", "cec", "entropy+pcb", "cb"],
    "clean": ["cec, open_set=False", "cec", "entropy", "entropy+open"],
}


def blind_to_none(strategy):
    """``strategy`` seeing the labeled set without the images answered "none": the loop of
    5d07f40, where such answers could not be taught."""
    @functools.wraps(strategy)
    def query(learner, X_pool, n_instances=1, random_state=None, return_metrics=False):
        y = learner.y_training
        if y is not None and np.any(np.asarray(y) == NONE):
            keep = np.asarray(y) != NONE
            view = type("Learner", (), {})()
            view.estimator = learner.estimator
            view.X_training = learner.X_training[keep] if keep.any() else None
            view.y_training = np.asarray(y)[keep] if keep.any() else None
            learner = view
        return strategy(learner, X_pool, n_instances=n_instances, random_state=random_state,
                        return_metrics=return_metrics)
    return query


def load_pool(name, seed, args):
    """``(X_pool, y_pool, X_test, y_test, class_names)`` of pool ``name`` (labels: class indices,
    ``NONE`` for junk)."""
    X_train, y_train, names = load_image_folder(CIFAR10 / "train", max_per_class=200)
    X_test, y_test, _ = load_image_folder(CIFAR10 / "test", max_per_class=args.test_per_class)
    first = np.concatenate([np.flatnonzero(y_train == c)[:args.pool_per_class] for c in range(len(names))])
    if name == "clean":
        return X_train[first], y_train[first], X_test, y_test, list(names)
    if name == "long-tail":
        order = np.roll(np.arange(len(names)), -seed)
        keep = long_tailed(y_train, IMBALANCE, order=order)
        return X_train[keep], y_train[keep], X_test, y_test, list(names)
    known, other = first[y_train[first] < N_KNOWN], first[y_train[first] >= N_KNOWN]
    X_known_test, y_known_test = X_test[y_test < N_KNOWN], y_test[y_test < N_KNOWN]
    if name == "near":
        X_pool, y_pool = with_none_images(X_train[known], y_train[known], X_train[other])
        X_test_all, y_test_all = with_none_images(X_known_test, y_known_test, X_test[y_test >= N_KNOWN])
        return X_pool, y_pool, X_test_all, y_test_all, list(names[:N_KNOWN])
    # Generated junk, written as PNG files once (a junk folder, as a user's none_data would be).
    junk = _junk.junk_files(name, JUNK_POOL + JUNK_TEST, Path(args.cache_dir) / "junk", DATA_SEED)
    X_pool, y_pool = with_none_images(X_train[known], y_train[known], junk[:JUNK_POOL])
    X_test_all, y_test_all = with_none_images(X_known_test, y_known_test, junk[JUNK_POOL:])
    return X_pool, y_pool, X_test_all, y_test_all, list(names[:N_KNOWN])


def run(pool_name, arm, seed, args):
    X_pool, y_pool, X_test, y_test, names = load_pool(pool_name, seed, args)
    strategy_name, strategy_params, classifier_params, taught = ARMS[arm]
    strategy = get_strategy(strategy_name)
    if strategy_params:
        strategy = functools.partial(strategy, **strategy_params)
        strategy.__name__ = strategy_name
    if not taught:
        strategy = blind_to_none(strategy)
    clf = ClipPromptClassifier(names, model_name=args.model, image_size=args.image_size, verbose=0,
                               cache_dir=args.cache_dir, **classifier_params)
    records = run_active_learning(clf, strategy, X_pool, y_pool, X_test, y_test, rounds=args.rounds,
                                  budget=args.budget, random_state=seed)
    return {"pool": pool_name, "arm": arm, "seed": seed, "config": config(args),
            "accuracy": [r["accuracy"] for r in records],
            "balanced_accuracy": [r["mean_per_class_accuracy"] for r in records],
            "n_none": [r["n_none"] for r in records], "n_labeled": [r["n_labeled"] for r in records],
            "auroc": [r.get("auroc") for r in records], "fpr_at_95_tpr": [r.get("fpr_at_95_tpr") for r in records],
            "class_counts": records[-1]["class_counts"],
            "seconds": sum(r["seconds"]["query"] + r["seconds"]["train"] for r in records)}


SCORE_FITS = {
    "zero-shot": None,
    "labels only": {},
    "UEO (prompt only)": {"fit_mode": "ueo", "train_visual_norm": False},
    # UEO's sample weights at T = 0.01 (CLIP's logit scale) instead of the authors' 1, where
    # they are all close to 1 / C: does the weighting matter?
    "UEO (prompt only), T=0.01": {"fit_mode": "ueo", "train_visual_norm": False, "ueo_temperature": 0.01},
}
NORM_FITS = {  # the same number of epochs for both, so that only the norm layers differ
    "UEO (prompt only), 50 epochs": {"fit_mode": "ueo", "train_visual_norm": False, "max_epochs": 50},
    "UEO + visual norms, 50 epochs": {"fit_mode": "ueo", "train_visual_norm": True, "max_epochs": 50},
}


def score_study(pool_name, fit_name, params, seed, args):
    """AUROC of the two in-distribution scores after one fit on 5 labels per known class."""
    from modal_vlm.metrics import ood_metrics

    X_pool, y_pool, X_test, y_test, names = load_pool(pool_name, seed, args)
    rng = np.random.default_rng(seed)
    labeled = np.concatenate([rng.choice(np.flatnonzero(y_pool == c), 5, replace=False) for c in range(len(names))])
    clf = ClipPromptClassifier(names, model_name=args.model, image_size=args.image_size, verbose=0,
                               cache_dir=args.cache_dir, random_state=seed, **(params or {}))
    start = time.perf_counter()
    if params is not None:
        unlabeled = {"X_unlabeled": np.delete(X_pool, labeled)} if params.get("fit_mode") == "ueo" else {}
        clf.fit(X_pool[labeled], y_pool[labeled], **unlabeled)
    known = y_test != NONE
    proba = clf.predict_proba(X_test)
    cosine = clf.transform(X_test) @ clf.class_text_features().T
    return {"part": "scores", "pool": pool_name, "fit": fit_name, "seed": seed, "config": config(args),
            "accuracy": float(np.mean(proba[known].argmax(1) == y_test[known])),
            "max_probability": ood_metrics(proba.max(1), known), "max_cosine": ood_metrics(cosine.max(1), known),
            "seconds": time.perf_counter() - start}


def score_table(results):
    lines = ["## The in-distribution score: max probability vs max cosine", "",
             "Part `--scores`: one fit on 5 labels per known class (drawn with the seed), AUROC and FPR at 95 % "
             "TPR of known vs junk test images for two scores of the same fit; accuracy on the known classes.", "",
             "| pool | fit | seeds | accuracy | AUROC max probability | AUROC max cosine | "
             "FPR@95 max probability | FPR@95 max cosine |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for pool in dict.fromkeys(r["pool"] for r in results):
        for fit in dict.fromkeys(r["fit"] for r in results if r["pool"] == pool):
            mine = [r for r in results if (r["pool"], r["fit"]) == (pool, fit)]
            lines.append(f"| {pool} | {fit} | {len(mine)} | {_ms([r['accuracy'] for r in mine])} | "
                         + " | ".join(_ms([r[score][metric] for r in mine]) for metric in ("auroc", "fpr_at_95_tpr")
                                      for score in ("max_probability", "max_cosine")) + " |")
    return lines + [""]


def config(args):
    return {"model": args.model, "rounds": args.rounds, "budget": args.budget, "image_size": args.image_size,
            "pool_per_class": args.pool_per_class, "test_per_class": args.test_per_class}


def _ms(values, digits=3):
    values = np.asarray([v for v in values if v is not None], dtype=float)
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}" if len(values) else ""


def table(results, args):
    lines = [
        "# Realistic pools: images of none of the classes, long tails",
        "",
        f"Default offline model `{args.model}` ({args.image_size}px), `ClipPromptClassifier` defaults unless the arm "
        f"says otherwise, {args.rounds} rounds x {args.budget} picks (round 1 random), seeds as in the seeds column. "
        "Pools and arms: see `benchmarks/bench_open_set.py`'s docstring. Junk share: the share of all picks "
        "(rounds 1..R; round 1 is random) answered \"none of these classes\" (the pool's own share is "
        "random's expectation); r2+: rounds 2..R only, where the strategy chooses. Accuracy: on the known "
        "classes' test images; balanced: mean per-class accuracy. AUROC: known vs junk test images, from "
        "`score_samples`. Area: mean accuracy over rounds 1..R (trapezoids).",
        "",
    ]
    scores = [r for r in results if r.get("part") == "scores"]
    results = [r for r in results if r.get("part") != "scores"]
    # The commands that reproduce the runs in the JSON (not this process's own command line:
    # a resumed or --table-only run would name only its part).
    commands = []
    for part, ran in (([], results), (["--scores"], scores)):
        if ran:
            pools = [p for p in POOLS if any(r["pool"] == p for r in ran)]
            seeds = sorted({r["seed"] for r in ran})
            commands.append(" ".join(["OMP_NUM_THREADS=1 python benchmarks/bench_open_set.py", *part,
                                      "--pools", *pools, "--seeds", *map(str, seeds)]))
    lines += ["Commands: " + "; ".join(f"`{c}`" for c in commands)
              + " (2 shared CPU cores; accuracy does not depend on load; the JSON beside this file keeps "
              "every run, so a command resumes).", ""]
    for pool in POOLS:
        runs = [r for r in results if r["pool"] == pool]
        if not runs:
            continue
        y_share = {"near": 0.4, "digits": 0.4, "screenshots": 0.4}.get(pool, 0.0)
        lines += [f"## {pool}" + (f" (junk: {y_share:.0%} of the pool)" if y_share else ""), "",
                  "| arm | seeds | zero-shot | final accuracy | final balanced | area | junk share of picks | "
                  "junk share r2+ | final AUROC | zero-shot AUROC | vs random (final accuracy, seeds above) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        random_final = {r["seed"]: r["accuracy"][-1] for r in runs if r["arm"] == "random"}
        for arm in dict.fromkeys(r["arm"] for r in runs):
            mine = [r for r in runs if r["arm"] == arm]
            acc = np.array([r["accuracy"] for r in mine])
            share = [r["n_none"][-1] / r["n_labeled"][-1] for r in mine]
            later = [(r["n_none"][-1] - r["n_none"][1]) / (r["n_labeled"][-1] - r["n_labeled"][1]) for r in mine]
            paired = [r["accuracy"][-1] - random_final[r["seed"]] for r in mine if r["seed"] in random_final]
            vs = (f"{np.mean(paired):+.3f}, {sum(d > 0 for d in paired)}/{len(paired)}"
                  if paired and arm != "random" else "")
            lines.append(
                f"| {arm} | {len(mine)} | {acc[:, 0].mean():.3f} | {_ms(acc[:, -1])} | "
                f"{_ms([r['balanced_accuracy'][-1] for r in mine])} | {_ms([curve_area(a) for a in acc])} | "
                f"{_ms(share, 2)} | {_ms(later, 2)} | {_ms([r['auroc'][-1] for r in mine])} | "
                f"{_ms([r['auroc'][0] for r in mine])} | {vs} |")
        lines.append("")
        with_auroc = [r for r in runs if r["auroc"][0] is not None]
        if with_auroc:
            lines += [f"AUROC of `score_samples` per round ({pool}; r0 = zero-shot), mean ± std over seeds:", "",
                      "| arm | " + " | ".join(f"r{k}" for k in range(args.rounds + 1)) + " |",
                      "|---|" + "---:|" * (args.rounds + 1)]
            for arm in dict.fromkeys(r["arm"] for r in with_auroc):
                au = np.array([r["auroc"] for r in with_auroc if r["arm"] == arm], dtype=float)
                lines.append(f"| {arm} | " + " | ".join(_ms(au[:, k]) for k in range(au.shape[1])) + " |")
            lines.append("")
    if scores:
        lines += score_table(scores)
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", nargs="+", default=list(POOLS), choices=POOLS)
    parser.add_argument("--arms", nargs="+", default=None, choices=list(ARMS),
                        help="default: each pool's own list (POOL_ARMS)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--model", default=OFFLINE_MODEL)
    parser.add_argument("--pool-per-class", type=int, default=150)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "open_set.md"))
    parser.add_argument("--merge", nargs="*", default=[], help="JSON files of other processes to merge in")
    parser.add_argument("--table-only", action="store_true", help="run nothing: rewrite the table from the JSON")
    parser.add_argument("--scores", action="store_true", help="run the score study instead of the pools")
    parser.add_argument("--norm", action="store_true", help="with --scores: the visual-norm fits only")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    store = out.with_suffix(".json")
    results = json.loads(store.read_text()) if store.exists() else []
    for other in args.merge:
        def key(r):
            return r.get("part"), r["pool"], r.get("arm"), r.get("fit"), r["seed"]
        known = {key(r) for r in results}
        results += [r for r in json.loads(Path(other).read_text()) if key(r) not in known]
    results = [r for r in results if r["config"] == config(args)]
    if args.scores and not args.table_only:
        fits = NORM_FITS if args.norm else SCORE_FITS
        for seed in args.seeds:
            for pool in ("digits", "near") if args.pools == list(POOLS) else args.pools:
                for fit, params in fits.items():
                    key = ("scores", pool, fit, seed)
                    if any((r.get("part"), r["pool"], r.get("fit"), r["seed"]) == key for r in results):
                        continue
                    results.append(score_study(pool, fit, params, seed, args))
                    r = results[-1]
                    print(f"scores {pool} / {fit} / seed {seed}: "
                          f"AUROC probability {r['max_probability']['auroc']:.3f}, "
                          f"cosine {r['max_cosine']['auroc']:.3f} ({r['seconds']:.0f} s)", flush=True)
                    store.write_text(json.dumps(results, indent=1))
                    out.write_text(table(results, args))
    elif not args.table_only:
        # Seed-major: every (pool, arm) of seed 0, then of seed 1, ..., so that an interrupted
        # benchmark leaves the same seeds for every arm.
        for seed in args.seeds:
            for pool in args.pools:
                for arm in args.arms or POOL_ARMS[pool]:
                    if any((r["pool"], r.get("arm"), r["seed"]) == (pool, arm, seed) for r in results):
                        continue
                    start = time.perf_counter()
                    results.append(run(pool, arm, seed, args))
                    r = results[-1]
                    print(f"{pool} / {arm} / seed {seed}: final {r['accuracy'][-1]:.3f}, none {r['n_none'][-1]}"
                          f"/{r['n_labeled'][-1]} ({time.perf_counter() - start:.0f} s)", flush=True)
                    store.write_text(json.dumps(results, indent=1))
                    out.write_text(table(results, args))
    store.write_text(json.dumps(results, indent=1))
    out.write_text(table(results, args))
    print(table(results, args))


if __name__ == "__main__":
    main()
