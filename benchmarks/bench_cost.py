"""Cost of one full active-learning run, phase by phase, against the encoding floor.

One CEC run of the protocol (8 rounds x 10 labels, round 1 random, a fresh prompt per round)
with ``ClipPromptClassifier``'s defaults (``max_epochs="auto"``: 50 / 100 / 200 epochs by
labels per class, stopped once the training loss is flat; or a fixed ``--epochs N``, every
epoch run, as CoOp's protocol does), and with ``ClipLinearProbe``'s defaults (``--learners
linear``: the demo's and the labeling app's learner), on the shared CIFAR-10 with the default
offline model, from an empty embedding cache, timed by
:func:`modal_vlm.experiment.run_active_learning`'s per-phase records:

* encoding: the pool and the test set, once (round 0);
* training: prompt tuning in every round (the text tower runs forward and backward at every
  step: CoOp's own cost, independent of the pool size);
* query: the strategy on the remaining pool;
* evaluation: test-set predictions after every round, from cached embeddings.

The **floor** is one encoding pass over pool + test set: no run that looks at every image can
cost less. The **reference harness** (PCB/CoOp's) runs the frozen image encoder on every
training image in every epoch, on the remaining pool at every query and on the test set at
every round; its time is estimated as this run's non-encoding time plus its image encodings
at the per-image encoding time measured here, and the estimate is checked against one
measured round of that harness (``bench_encode_once.reference_round``: the last round, with
the most labels).

    python benchmarks/bench_cost.py [--pool-per-class 150 1000] [--epochs auto 200]
        [--learners prompt linear] [--encode-dtype bfloat16] [--out benchmarks/results/cost.md]

Run it alone: on a 2-core machine other jobs change every timing by 2-3x.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from _protocol import CIFAR10, OFFLINE_MODEL, ROOT
from bench_encode_once import reference_round
from modal_vlm import ClipPromptClassifier
from modal_vlm.embeddings import clear_memory_cache
from modal_vlm.model.schedule import shot_schedule_epochs
from modal_vlm.datasets import load_image_folder
from modal_vlm.embeddings.encoding import ENCODE_DTYPES, default_workers
from modal_vlm.model.estimators import get_estimator
from modal_vlm.experiment import run_active_learning


PHASES = ("encode", "train", "query", "evaluate")


def epochs_of(epochs, n_labeled, n_classes):
    """The epochs one fit on ``n_labeled`` labels runs: ``epochs``, or the schedule's for "auto"."""
    return shot_schedule_epochs(n_labeled, n_classes) if epochs == "auto" else epochs


def reference_encodings(history, n_pool, n_test, epochs, n_classes):
    """Image encodings of the reference harness over the rounds of ``history``."""
    rounds = history[1:]
    training = sum(r["n_labeled"] * epochs_of(epochs, r["n_labeled"], n_classes) for r in rounds)
    queries = sum(n_pool - (r["n_labeled"] - len(r["queried"])) for r in rounds[1:])  # round 1 is random
    return training + queries + len(rounds) * n_test


def measure(pool_per_class, learner, epochs, check, args, names, X_test, y_test):
    """One run with ``learner`` ("prompt" with ``epochs``: "auto" or a number, every epoch run;
    "linear" with its own defaults, ``epochs`` None)."""
    X_pool, y_pool, _ = load_image_folder(CIFAR10 / "train", max_per_class=pool_per_class)
    schedule = {} if epochs is None else {"max_epochs": epochs} if epochs == "auto" else \
        {"max_epochs": epochs, "n_iter_no_change": None}
    make = lambda: get_estimator(learner)(names, model_name=args.model, image_size=args.image_size,  # noqa: E731
                                          encode_dtype=args.encode_dtype, verbose=0, random_state=0, **schedule)
    clear_memory_cache()
    start = time.perf_counter()
    history = run_active_learning(make(), "cec", X_pool, y_pool, X_test, y_test, rounds=args.rounds,
                                  random_state=0)
    wall = time.perf_counter() - start
    seconds = {phase: sum(r["seconds"][phase] for r in history) for phase in PHASES}
    n_images = len(y_pool) + len(y_test)
    per_image = seconds["encode"] / n_images
    # the reference harness trains the prompt through the encoder for the whole schedule
    n_reference = reference_encodings(history, len(y_pool), len(y_test), epochs or "auto", len(names))
    reference = wall - seconds["encode"] + n_reference * per_image
    row = {"n_pool": len(y_pool), "n_test": len(y_test), "epochs": "linear head" if epochs is None else epochs,
           "wall": wall, "seconds": seconds,
           "per_image": per_image, "n_reference": n_reference, "reference": reference,
           "final_accuracy": history[-1]["accuracy"]}
    if check:  # the estimate against the reference harness's most expensive round, measured
        last = history[-1]
        labeled = [i for r in history for i in r["queried"]]
        last_epochs = epochs_of(epochs or "auto", len(labeled), len(names))
        start = time.perf_counter()
        reference_round(make(), X_pool[labeled], y_pool[labeled], X_test, last_epochs)
        row["check"] = (time.perf_counter() - start,
                        last["seconds"]["train"] + last["seconds"]["evaluate"]
                        + (len(labeled) * last_epochs + len(y_test)) * per_image, len(labeled))
    return row


def table(rows, args):
    lines = [
        f"One CEC run: {args.rounds} rounds x 10 labels, the prompt learner's defaults with the epochs per round "
        f"given (auto: 50 / 100 / 200 by labels per class, stopped when the training loss is flat; a number: "
        f"every epoch, as CoOp's protocol's 200), or the linear head (ClipLinearProbe's defaults), "
        f"offline model `{args.model}` at {args.image_size}px, CIFAR-10 test {args.test_per_class}/class, "
        f"empty embedding cache, torch threads {torch.get_num_threads()}, image encoder "
        f"{args.encode_dtype or 'float32'} with {default_workers()} decoding threads.",
        "",
        "Command: `python benchmarks/bench_cost.py " + shlex.join(sys.argv[1:]) + "` (2-core CPU, run alone). "
        f"Load average (1 min) {args.load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| pool | epochs | encoding (s) | training (s) | query (s) | evaluation (s) | total (s) | total / floor "
        "| reference harness (s, est.) | reference / total | final accuracy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["seconds"]
        lines.append(f"| {r['n_pool']} | {r['epochs']} | {s['encode']:.1f} | {s['train']:.1f} | {s['query']:.1f} | "
                     f"{s['evaluate']:.1f} | {r['wall']:.1f} | {r['wall'] / s['encode']:.2f}x | "
                     f"{r['reference']:.0f} | {r['reference'] / r['wall']:.1f}x | {r['final_accuracy']:.3f} |")
    per_image = ", ".join(f"{1000 * r['per_image']:.1f} ms" for r in rows)
    checks = [r for r in rows if "check" in r]
    lines += ["", "Floor = the encoding column: one pass over pool + test set "
              f"({per_image} per image). "
              "The reference harness's image encodings: "
              f"{', '.join(str(r['n_reference']) for r in rows)} (vs. "
              f"{', '.join(str(r['n_pool'] + r['n_test']) for r in rows)} here). "
              "Check of that estimate on its last round, measured vs. estimated: "
              + ", ".join(f"{c[0]:.1f} s vs. {c[1]:.1f} s (pool {r['n_pool']}, {c[2]} labels, {r['epochs']} epochs)"
                          for r in checks for c in [r["check"]]) + "."]
    return "\n".join(lines) + "\n"


def _epochs(text):
    return text if text == "auto" else int(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool-per-class", type=int, nargs="+", default=[150, 1000])
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=_epochs, nargs="+", default=["auto", 200],
                        help='prompt learner epochs per round: "auto" (the default schedule) or a number')
    parser.add_argument("--learners", nargs="+", default=["prompt", "linear"], choices=["prompt", "linear"])
    parser.add_argument("--model", default=OFFLINE_MODEL)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--encode-dtype", default=None, choices=list(ENCODE_DTYPES))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost.md"))
    args = parser.parse_args()
    args.load_before = os.getloadavg()[0]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    X_test, y_test, names = load_image_folder(CIFAR10 / "test", max_per_class=args.test_per_class)
    ClipPromptClassifier(names, model_name=args.model, image_size=args.image_size).backbone_  # load untimed
    rows = []
    for pool_per_class in args.pool_per_class:
        arms = [("prompt", epochs) for epochs in args.epochs if "prompt" in args.learners]
        arms += [("linear", None)] if "linear" in args.learners else []
        for learner, epochs in arms:  # the estimate is checked at the first setting only
            check = (learner, epochs) == arms[0] and learner == "prompt"
            rows.append(measure(pool_per_class, learner, epochs, check, args, names, X_test, y_test))
        Path(args.out).write_text(table(rows, args))
        print(table(rows, args), flush=True)


if __name__ == "__main__":
    main()
