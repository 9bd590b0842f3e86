"""What the benchmark scripts share: the data location, the protocol's command-line options
and the area under the learning curve. Imported by the scripts beside it (run them as
``python benchmarks/bench_*.py``: their folder is then on ``sys.path``)."""
from __future__ import annotations

import os
from pathlib import Path

from modal_vlm.runner.curves import area_under_curve

ROOT = Path(__file__).resolve().parents[1]
#: The model every benchmark runs by default: the default offline reference model.
OFFLINE_MODEL = "linear-conse-efficientnet-lite0-minilm"
#: The shared CIFAR-10 subset (``MODAL_VLM_CIFAR10`` points elsewhere).
CIFAR10 = Path(os.environ.get("MODAL_VLM_CIFAR10", ROOT / ".." / "shared" / "data" / "cifar10"))


def add_protocol_arguments(parser, cache_dir: str) -> None:
    """The options of the active-learning protocol every strategy benchmark runs."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per round (default: the classifier's, max_epochs='auto')")
    parser.add_argument("--pool-per-class", type=int, default=150)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / cache_dir),
                        help="image embeddings kept on disk between runs")


def protocol_data(pool_per_class: int, test_per_class: int) -> tuple:
    """``(X_pool, y_pool, X_test, y_test, class_names)``: the first ``pool_per_class`` training
    and ``test_per_class`` test images of every class of the shared CIFAR-10 subset."""
    from modal_vlm.datasets import load_image_folder

    X_pool, y_pool, names = load_image_folder(CIFAR10 / "train", max_per_class=pool_per_class)
    X_test, y_test, _ = load_image_folder(CIFAR10 / "test", max_per_class=test_per_class)
    return X_pool, y_pool, X_test, y_test, names


def curve_area(accuracies) -> float:
    """Area under the learning curve of equal rounds: mean accuracy over rounds 1..R
    (trapezoids), round 0 (zero-shot) left out, unlike the runner's ``summary.json``."""
    return area_under_curve(range(1, len(accuracies)), accuracies[1:])
