"""Encode-once vs. the reference harness's re-encoding, over 5 active-learning rounds.

Each round adds labels, fits a fresh prompt and predicts a test set. ``modal-vlm`` encodes
every image once (the embedding cache); the reference harness (PCB/CoOp's) runs the frozen
image encoder on every training image in every epoch and on the test set at every round.
Both sides run the same prompt module, optimiser and epochs; only the image encoding differs.

    python benchmarks/bench_encode_once.py [--epochs 5] [--per-round 10] [--test 100]

Prints a markdown table of wall times and the speed-up ratio.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from _protocol import CIFAR10
from modal_vlm import ClipPromptClassifier
from modal_vlm.embeddings import clear_memory_cache
from modal_vlm.datasets import load_digits_images, load_image_folder
from modal_vlm.embeddings.inputs import as_image_items



def load_data(n_pool, n_test):
    if (CIFAR10 / "train").is_dir():
        X, y, names = load_image_folder(CIFAR10 / "train", max_per_class=n_pool // 10 + 1, random_state=0)
        X_test, y_test, _ = load_image_folder(CIFAR10 / "test", max_per_class=n_test // 10)
        return X, y, X_test, y_test, names, "shared CIFAR-10"
    X, y, names = load_digits_images(size=32)
    return X[n_test:], y[n_test:], X[:n_test], y[:n_test], list(names), "scikit-learn digits"


def reference_round(clf, X, y, X_test, epochs):
    """One fit + predict, encoding images in every epoch as the reference harness does."""
    clf.initialize()
    module, backbone = clf.module_, clf.backbone_
    module.prompt_trained.fill_(True)
    optimizer = torch.optim.SGD(module.prompt_learner.parameters(), lr=clf.lr, momentum=0.9, weight_decay=5e-4)
    items, items_test = as_image_items(X), as_image_items(X_test)
    labels = torch.as_tensor(y)
    generator = torch.Generator().manual_seed(0)

    def encode(batch_items):
        with torch.no_grad():
            pixels = torch.stack([item.to_tensor(backbone.preprocess) for item in batch_items])
            return torch.nn.functional.normalize(backbone.visual(pixels), dim=-1)

    for _ in range(epochs):
        module.train()
        for batch in torch.randperm(len(items), generator=generator).split(clf.batch_size):
            loss = torch.nn.functional.cross_entropy(module(encode([items[i] for i in batch])), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    module.eval()
    with torch.no_grad():
        return torch.cat([module(encode(items_test[i:i + 64])) for i in range(0, len(items_test), 64)]).argmax(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="conse-efficientnet-lite0-minilm")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    X, y, X_test, y_test, names, source = load_data(args.rounds * args.per_round, args.test)
    order = np.random.RandomState(0).permutation(len(y))[:args.rounds * args.per_round]
    X, y = [X[i] for i in order], y[order]
    X_test = list(X_test)
    def make():
        return ClipPromptClassifier(names, model_name=args.model, image_size=args.image_size, n_ctx=4,
                                    max_epochs=args.epochs, batch_size=8, verbose=0, random_state=0)
    make().backbone_  # load the model outside the timings
    timings = {}
    for name, run_round in (("modal-vlm (encode once)", lambda clf, n: clf.fit(X[:n], y[:n]).predict(X_test)),
                            ("reference (re-encode every epoch)",
                             lambda clf, n: reference_round(clf, X[:n], y[:n], X_test, args.epochs))):
        clear_memory_cache()
        start = time.perf_counter()
        for round_ in range(1, args.rounds + 1):
            run_round(make(), round_ * args.per_round)
        timings[name] = time.perf_counter() - start
    encodes_cached = len(X) + len(X_test)
    encodes_reference = (sum(r * args.per_round for r in range(1, args.rounds + 1)) * args.epochs
                         + args.rounds * len(X_test))
    print(f"\n{args.rounds} rounds x {args.per_round} labels, {args.epochs} epochs, {len(X_test)} test images, "
          f"{args.model} at {args.image_size}px, data: {source}, torch threads: {torch.get_num_threads()}\n")
    print("| harness | image encodings | wall time (s) |")
    print("|---|---:|---:|")
    for (name, seconds), encodes in zip(timings.items(), (encodes_cached, encodes_reference)):
        print(f"| {name} | {encodes} | {seconds:.1f} |")
    cached, reference = timings.values()
    print(f"\nspeed-up (reference / encode once): {reference / cached:.1f}x")


if __name__ == "__main__":
    main()
