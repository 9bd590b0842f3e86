"""The cost of one fit in units of the text tower's own step, on the real ViT-B-32 architecture.

Training sets the pace of every active-learning round. Its cost is measured here in one
process, as a ratio that holds across machines and loads: seconds of one ``fit`` on 80 labels
(embeddings cached: training only) divided by the seconds of one **full-length step**, a
forward and backward pass of the same text tower over all C class prompts at open_clip's
full 77-token context. The estimator cuts the prompts after the longest end-of-text token,
so one of its epochs costs a fraction of that unit; the schedule decides how many it runs.

open_clip's ``ViT-B-32`` with ``pretrained="random"`` (the speed does not depend on the
weights; no download), 10 and 100 classes (CIFAR-100 names), 80 random 224 px images
labeled round-robin, one fit per learner and class count, the unit measured as the median
of 3 steps right before each fit. Arms: the estimator's defaults, the same with every epoch
run (their most: ``max_epochs="auto"``, 3 / 50 / 80 epochs by labels per class), the full shot
schedule (the defaults before issue 27: CoOp's 50 / 100 / 200 epochs at lr 0.005, every epoch
run), and ``ClipLinearProbe``.

With random weights there is nothing to learn from random images: the training loss is flat
from the start, so the defaults' early stopping ends the fit after a few epochs. The column
"units / epoch" (the cost of one epoch, which does not depend on the weights) times the
epochs the defaults train on a real model (``learners.md``) estimates a real fit.

    python benchmarks/bench_fit_steps.py [--classes 10 100] [--labels 80] [--threads N]
        [--out benchmarks/results/fit_steps.md]

Targets (issue 27): one fit with the defaults at 10 classes <= 12 units (35.0 before), at
100 classes <= 3.5 (7.1 before). Ratios are meaningful under load; seconds are not.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _protocol import ROOT
from bench_learners import previous
from modal_vlm import ClipLinearProbe, ClipPromptClassifier

CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()

#: name -> (estimator class, parameters over its defaults).
ARMS = {
    "defaults": (ClipPromptClassifier, {}),
    "defaults, every epoch (n_iter_no_change=None)": (ClipPromptClassifier, {"n_iter_no_change": None}),
    "full shot schedule (n_iter_no_change=None)": previous(n_iter_no_change=None),
    "ClipLinearProbe defaults": (ClipLinearProbe, {}),
}


def full_length_step(clf) -> float:
    """Seconds of one forward and backward pass of the text tower over all C prompts at 77 tokens."""
    text = clf.backbone_.text
    ids = text.tokenizer([f"a photo of a {name.replace('_', ' ')}." for name in clf.class_names])
    embeddings = text.embed_tokens(ids).detach().requires_grad_(True)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        text.encode_embeddings(embeddings, ids, torch.ones_like(ids)).sum().backward()
        times.append(time.perf_counter() - start)
        embeddings.grad = None
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--labels", type=int, default=80)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fit_steps.md"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    X = np.random.default_rng(0).integers(0, 256, (args.labels, 224, 224, 3), dtype=np.uint8)
    rows = []
    for n_classes in args.classes:
        names = CIFAR100[:n_classes]
        y = np.arange(args.labels) % n_classes
        for arm in args.arms:
            estimator, params = ARMS[arm]
            clf = estimator(names, model_name=args.model, pretrained="random", verbose=0, random_state=0, **params)
            clf.transform(X)   # encoded once, before the clock: a fit's cost is its training
            unit = full_length_step(clf)
            start = time.perf_counter()
            clf.fit(X, y)
            seconds = time.perf_counter() - start
            rows.append((n_classes, arm, len(clf.history_), seconds, unit))
            print(f"{n_classes} classes, {arm}: {len(clf.history_)} epochs, {seconds:.1f} s, "
                  f"unit {unit:.2f} s, {seconds / unit:.1f} units", flush=True)
    load = os.getloadavg()[0]
    lines = [
        f"# One fit in full-length text steps: `{args.model}` (random weights), {args.labels} labels",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/bench_fit_steps.py', *sys.argv[1:]])}`; torch threads "
        f"{torch.get_num_threads()}, load average (1 min) {load:.1f} at the end on {os.cpu_count()} cores. "
        "Unit: one forward and backward pass of the text tower over all C prompts at 77 tokens, median of 3, "
        "measured right before each fit. Embeddings cached before the fit (training only). Targets: defaults "
        "<= 12 units at 10 classes, <= 3.5 at 100 classes.",
        "",
        "| classes | learner | epochs | fit (s) | unit (s) | fit / unit | units / epoch |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {c} | {arm} | {epochs} | {seconds:.1f} | {unit:.2f} | {seconds / unit:.1f} | "
              f"{seconds / unit / epochs:.3f} |" for c, arm, epochs, seconds, unit in rows]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
