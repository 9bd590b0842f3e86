"""What a strategy returns, for the installed modAL.

modAL 0.4.1's ``BaseLearner.query`` returns a strategy's tuple as-is (with a
DeprecationWarning) and otherwise pairs the indices with the selected rows. modAL 0.4.2 calls
``query_result, query_metrics = strategy(...)`` inside a bare ``try`` and, on any failure,
calls the strategy again; a strategy must therefore return exactly a 2-tuple there, or its
whole computation runs twice.

The metrics also carry the pseudo-label hook: a strategy that labels some of its picks itself
instead of sending them to the oracle (CB+SQ's selective querying) returns their pool
positions under :data:`PSEUDO_LABELED` and their labels under :data:`PSEUDO_LABELS`;
:func:`modal_vlm.experiment.run_active_learning` trains on them without spending budget.
"""
from __future__ import annotations

import functools
import importlib.metadata
import inspect
import re

import numpy as np

#: Metrics key of the pool positions a strategy pseudo-labels (disjoint from its indices).
PSEUDO_LABELED = "pseudo_labeled"
#: Metrics key of their labels (values of the classifier's ``classes_``), in the same order.
PSEUDO_LABELS = "pseudo_labels"


@functools.lru_cache(maxsize=None)
def modal_unpacks_metrics() -> bool:
    """Whether the installed modAL expects ``(indices, metrics)`` from strategies (>= 0.4.2)."""
    try:
        version = importlib.metadata.version("modAL-python")
    except importlib.metadata.PackageNotFoundError:
        # A source checkout without metadata: 0.4.2 is the release that added return_metrics.
        from modAL.models.base import BaseLearner

        return "return_metrics" in inspect.signature(BaseLearner.query).parameters
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3]) >= (0, 4, 2)


def query_result(indices, metrics: dict, return_metrics: bool = False):
    """Indices (int array) or ``(indices, metrics)``, as the installed modAL expects.

    ``return_metrics=True`` asks for the tuple whatever the modAL version (for direct calls).
    """
    indices = np.asarray(indices, dtype=np.intp)
    if return_metrics or modal_unpacks_metrics():
        return indices, metrics
    return indices


def split_result(result):
    """``(indices, metrics dict)`` from any strategy's return value (modAL's included)."""
    if isinstance(result, tuple):
        indices, extra = result[0], result[1] if len(result) > 1 else None
        return np.asarray(indices, dtype=np.intp).reshape(-1), extra if isinstance(extra, dict) else {}
    return np.asarray(result, dtype=np.intp).reshape(-1), {}


def pseudo_labels(metrics: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, labels)`` that ``metrics`` proposes for pseudo-labeling; empty without.

    Raises ``ValueError`` when only one of the two keys is present or their lengths differ.
    """
    if PSEUDO_LABELED not in metrics and PSEUDO_LABELS not in metrics:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.int64)
    if PSEUDO_LABELED not in metrics or PSEUDO_LABELS not in metrics:
        raise ValueError(f"a strategy's metrics must hold both {PSEUDO_LABELED!r} and {PSEUDO_LABELS!r}, "
                         f"or neither; got only one.")
    positions = np.asarray(metrics[PSEUDO_LABELED], dtype=np.intp).reshape(-1)
    labels = np.asarray(metrics[PSEUDO_LABELS]).reshape(-1)
    if len(positions) != len(labels):
        raise ValueError(f"{len(positions)} {PSEUDO_LABELED!r} positions but {len(labels)} {PSEUDO_LABELS!r}.")
    return positions, labels
