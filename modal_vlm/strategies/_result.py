"""What a strategy returns, for the installed modAL.

modAL 0.4.1's ``BaseLearner.query`` returns a strategy's tuple as-is (with a
DeprecationWarning) and otherwise pairs the indices with the selected rows. modAL 0.4.2 calls
``query_result, query_metrics = strategy(...)`` inside a bare ``try`` and, on any failure,
calls the strategy again; a strategy must therefore return exactly a 2-tuple there, or its
whole computation runs twice.
"""
from __future__ import annotations

import functools
import importlib.metadata
import inspect
import re

import numpy as np


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
