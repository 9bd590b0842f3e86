"""Query by committee from a cold start: members that differ in seed vs. in prompt template.

Before any label a ClipPromptClassifier predicts zero-shot from its ``template``, so a modAL
``Committee`` of members that differ only in ``random_state`` votes unanimously in round 0,
and vote entropy returns the pool's first indices. :func:`modal_vlm.committee.prompt_committee` gives
every member its own template (CLIP's prompt-ensemble templates). This benchmark measures
what that changes, with modAL's own ``Committee`` and ``vote_entropy_sampling``:

* ``seeds``: 5 members, template "a photo of a {}.", seeds differ; vote entropy from round 1;
* ``templates``: ``prompt_committee`` with the first 5 of ``CLIP_TEMPLATES``; vote entropy;
* ``templates, random``: the same committee, queries drawn at random (the baseline).

Offline reference model (ConSE) at ``--image-size`` px, shared CIFAR-10 (pool: the first
``--pool-per-class`` training images of every class, in class order as
``load_image_folder`` returns them; test: the first ``--test-per-class`` test images), no
random first round (the cold start is the point), ``--rounds`` rounds of 10 labels, CoOp
training of every member for ``--epochs`` epochs per round (20 on a CPU; the protocol's
200). Reported: the fraction of the pool on which the members' votes differ at zero-shot,
the classes covered by the first batch, and the committee's accuracy (modAL's consensus
prediction) per round, mean ± std over seeds.

    python benchmarks/bench_committee.py [--seeds 0 1 2] [--rounds 4] [--epochs 20]
        [--out benchmarks/results/committee.md]
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
from modAL.disagreement import vote_entropy_sampling
from modAL.models import ActiveLearner, Committee
from sklearn.base import clone

from _protocol import ROOT, add_protocol_arguments, protocol_data
from modal_vlm import ClipPromptClassifier
from modal_vlm.committee import prompt_committee
from modal_vlm.committee import CLIP_TEMPLATES

ARMS = ("seeds", "templates", "templates, random")
MEMBERS = 5


def committee_for(arm, names, seed, args):
    clf = ClipPromptClassifier(names, model_name="conse-efficientnet-lite0-minilm", image_size=args.image_size,
                               max_epochs=args.epochs, random_state=seed, verbose=0, cache_dir=args.cache_dir)
    if arm == "seeds":
        return Committee([ActiveLearner(estimator=clone(clf).set_params(random_state=1000 * seed + i))
                          for i in range(MEMBERS)], query_strategy=vote_entropy_sampling)
    return prompt_committee(clf, templates=CLIP_TEMPLATES[:MEMBERS], query_strategy=vote_entropy_sampling)


def run(arm, seed, data, args):
    X_pool, y_pool, X_test, y_test, names = data
    committee = committee_for(arm, names, seed, args)
    rng = np.random.RandomState(seed)
    votes = committee.vote(X_pool)
    disagreement = float(np.mean(votes.min(axis=1) != votes.max(axis=1)))
    pool = np.arange(len(y_pool))
    accuracies = [float(np.mean(committee.predict(X_test) == y_test))]
    first_classes = None
    start = time.perf_counter()
    for _ in range(args.rounds):
        if arm.endswith("random"):
            idx = rng.choice(len(pool), len(names), replace=False)
        else:
            idx = np.asarray(committee.query(X_pool[pool], n_instances=len(names))[0])
        if first_classes is None:
            first_classes = len(set(y_pool[pool[idx]].tolist()))
        committee.teach(X_pool[pool[idx]], y_pool[pool[idx]])
        pool = np.delete(pool, idx)
        accuracies.append(float(np.mean(committee.predict(X_test) == y_test)))
    return {"arm": arm, "seed": seed, "disagreement": disagreement, "first_batch_classes": first_classes,
            "accuracy": accuracies, "seconds": time.perf_counter() - start}


def table(results, args):
    def mean_std(values):
        values = np.asarray(values, dtype=float)
        return f"{values.mean():.3f} ± {values.std():.3f}"

    lines = [
        f"modAL `Committee` of {MEMBERS} ClipPromptClassifiers, `vote_entropy_sampling` from round 1 (no random "
        f"first round), offline reference model (ConSE, {args.image_size}px), CIFAR-10 pool "
        f"{args.pool_per_class}/class (class order), test {args.test_per_class}/class, {args.rounds} rounds x 10 "
        f"labels, CoOp 16 class-specific contexts, {args.epochs} epochs per round, seeds {args.seeds}.",
        "",
        "Command: `" + shlex.join(["python", "benchmarks/bench_committee.py", *sys.argv[1:]]) + "` (2-core CPU). "
        "Zero-shot disagreement: fraction of the pool on which the members' zero-shot votes differ. "
        "Accuracy: modAL's consensus prediction (`Committee.predict`).",
        "",
        "| committee | zero-shot disagreement | classes in the first batch | zero-shot accuracy | "
        "final accuracy | mean accuracy, rounds 1.. |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for arm in dict.fromkeys(r["arm"] for r in results):
        runs = [r for r in results if r["arm"] == arm]
        acc = np.array([r["accuracy"] for r in runs])
        lines.append(f"| {arm} | {mean_std([r['disagreement'] for r in runs])} | "
                     f"{np.mean([r['first_batch_classes'] for r in runs]):.1f} | {acc[:, 0].mean():.3f} | "
                     f"{mean_std(acc[:, -1])} | {mean_std(acc[:, 1:].mean(1))} |")
    rounds = range(args.rounds + 1)
    lines += ["", "Mean accuracy per round (round 0: zero-shot; labels = 10 x round):", "",
              "| committee | " + " | ".join(str(r) for r in rounds) + " |", "|---|" + "---:|" * len(rounds)]
    for arm in dict.fromkeys(r["arm"] for r in results):
        acc = np.array([r["accuracy"] for r in results if r["arm"] == arm]).mean(0)
        lines.append(f"| {arm} | " + " | ".join(f"{a:.3f}" for a in acc) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    add_protocol_arguments(parser, cache_dir=".cache")
    parser.set_defaults(rounds=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "committee.md"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    *arrays, names = protocol_data(args.pool_per_class, args.test_per_class)
    data = (*map(np.asarray, arrays), names)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for arm in args.arms:
        for seed in args.seeds:
            results.append(run(arm, seed, data, args))
            print(f"{arm} seed {seed}: disagreement {results[-1]['disagreement']:.3f}, first batch "
                  f"{results[-1]['first_batch_classes']} classes, final {results[-1]['accuracy'][-1]:.3f} "
                  f"({results[-1]['seconds']:.0f} s)", flush=True)
            out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    text = table(results, args)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
