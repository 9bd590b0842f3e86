"""When more labels stop helping: stabilizing predictions (Bloodgood & Vijay-Shanker, CoNLL 2009).

After every round the new model's predictions on a fixed *stop set* of unlabeled images are
compared with the previous model's by Cohen's kappa. The embeddings are cached, so this costs
one matrix product per round and no label. When the predictions have stopped moving (the mean
kappa of the last ``window`` rounds reaches ``threshold``), further labels of the same kind
are unlikely to change the model much: the loop is *stable*. The default threshold is chosen
from the trade-off of labels saved against accuracy given up in ``benchmarks/results/trust.md``.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score

#: Mean kappa over the last ``window`` rounds at or above which predictions count as stable.
#: Bloodgood & Vijay-Shanker's 0.99 (over 3 rounds) never fired in the benchmark's runs; 0.95
#: over 5 rounds is the knee of the trade-off between labels saved and accuracy given up
#: (``benchmarks/results/trust.md``, "Stopping", a proxy learner).
DEFAULT_KAPPA_THRESHOLD = 0.95
#: Rounds the kappa is averaged over (KappaAverage uses 3; 5 waits out a lucky pair of rounds).
DEFAULT_KAPPA_WINDOW = 5


def prediction_agreement(previous, current) -> dict:
    """How much two models' predictions on the same images agree.

    Parameters
    ----------
    previous, current : array-like of shape (n_samples,)
        Predicted classes of the earlier and the later model on the same images.

    Returns
    -------
    dict
        ``kappa`` (Cohen's kappa: 1 for identical predictions, 0 for agreement no better than
        chance; 1 when both predict one single class everywhere), ``changed`` (the fraction
        of images whose prediction changed) and ``n`` (images compared).

    Examples
    --------
    >>> prediction_agreement([0, 1, 2, 2], [0, 1, 2, 1])
    {'kappa': 0.636364, 'changed': 0.25, 'n': 4}
    """
    previous, current = np.asarray(previous), np.asarray(current)
    if previous.shape != current.shape or previous.ndim != 1:
        raise ValueError(f"previous and current must be 1-d of the same length, got shapes "
                         f"{previous.shape} and {current.shape}.")
    changed = float(np.mean(previous != current)) if len(current) else 0.0
    if changed == 0.0:
        kappa = 1.0   # identical (cohen_kappa_score is 0/0 when both predict one class)
    else:
        kappa = float(cohen_kappa_score(previous, current))
    return {"kappa": round(kappa, 6), "changed": round(changed, 6), "n": len(current)}


def is_stable(kappas, threshold=DEFAULT_KAPPA_THRESHOLD, window=DEFAULT_KAPPA_WINDOW) -> bool:
    """Whether the mean of the last ``window`` kappas (None: not measured) reaches ``threshold``.

    Parameters
    ----------
    kappas : sequence of float or None
        Kappa between successive models, one per round, oldest first; None where there was
        no previous model (round 0).
    threshold : float, default=DEFAULT_KAPPA_THRESHOLD
        Mean kappa that counts as stable.
    window : int, default=DEFAULT_KAPPA_WINDOW
        Rounds averaged; fewer measured rounds than this are never stable.

    Returns
    -------
    bool
        True when the predictions count as stable.

    Examples
    --------
    >>> is_stable([None, 0.90, 0.96, 0.95, 0.97, 0.96, 0.95])
    True
    >>> is_stable([None, 0.99, 0.99, 0.99])      # three rounds: too few to say
    False
    """
    measured = [k for k in kappas if k is not None]
    return len(measured) >= window and float(np.mean(measured[-window:])) >= threshold


__all__ = ["DEFAULT_KAPPA_THRESHOLD", "DEFAULT_KAPPA_WINDOW", "is_stable", "prediction_agreement"]
