"""The ``modal-vlm`` command line."""
from __future__ import annotations

import argparse
import os
import sys


def _format_row(record) -> str:
    return (f"{record['round']:>5}  {record['n_labeled']:>9}  {record['accuracy']:>8.3f}  "
            f"{record['mean_per_class_accuracy']:>13.3f}  {record['seconds']['train']:>7.1f}")


def demo(args) -> int:
    """Active learning with the offline reference model on scikit-learn's digits."""
    import numpy as np
    from modAL.uncertainty import uncertainty_sampling

    from .classifier import ClipPromptClassifier
    from .datasets import load_digits_images
    from .experiment import run_active_learning

    X, y, names = load_digits_images(size=32)
    rng = np.random.RandomState(args.seed)
    order = rng.permutation(len(y))
    test, pool = order[:args.test_size], order[args.test_size:args.test_size + args.pool_size]
    estimator = ClipPromptClassifier(
        list(names), model_name="conse-efficientnet-lite0-minilm", image_size=96,
        template="a photo of the number {}.", ctx_init="a photo of the number",
        max_epochs=args.epochs, verbose=1 if not args.quiet else 0,
    )
    print(f"modal-vlm demo: {len(pool)} unlabeled digits, {len(test)} test digits, "
          f"{args.rounds} rounds x {len(names)} labels, entropy sampling, offline ConSE model")
    print("round  n_labeled  accuracy  mean_per_class  train_s")
    history = run_active_learning(
        estimator, uncertainty_sampling, X[pool], y[pool], X[test], y[test],
        rounds=args.rounds, random_state=args.seed, on_round=lambda r: print(_format_row(r), flush=True),
    )
    final, zero_shot = history[-1]["accuracy"], history[0]["accuracy"]
    print(f"zero-shot accuracy {zero_shot:.3f} -> {final:.3f} after {history[-1]['n_labeled']} labels")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modal-vlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="offline active-learning run on scikit-learn's digits")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--pool-size", type=int, default=600)
    p.add_argument("--test-size", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=demo)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
