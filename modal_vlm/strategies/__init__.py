"""Query strategies for modAL: CEC, the field's baselines and its low-budget methods.

Every strategy has modAL's signature ``strategy(classifier, X_pool, n_instances=1, *,
random_state=None, **params)``. ``classifier`` may be a modAL learner, a
:class:`~modal_vlm.ClipPromptClassifier` or a scikit-learn Pipeline ending in one; any other
classifier with the methods a strategy needs works too (:class:`ProbabilisticClassifier`,
:class:`EmbeddingClassifier`, :class:`FeatureClassifier`, :class:`TextEmbeddingClassifier`). Probabilities
(zero-shot before any label) and embeddings come from the classifier's embedding cache, once
per call.

Return value (see :ref:`strategies-return`): with modAL 0.4.1 (what a fresh install
resolves) the pool indices; with modAL 0.4.2+, which unpacks ``(indices, metrics)``, that tuple.
``return_metrics=True`` always returns the tuple; ``metrics`` holds per-sample scores (CEC:
``U``, ``H``, ``H_nb``). A strategy that pseudo-labels some of its picks (CB+SQ) returns them
in ``metrics`` (``"pseudo_labeled"``, ``"pseudo_labels"``; see :ref:`strategies-pseudo-labels`).

>>> from modal_vlm.strategies import get_strategy, list_strategies
>>> list_strategies()[:3]
['random', 'entropy', 'margin']
>>> get_strategy("entropy+pcb")
pcb(entropy_query, gamma=0.1)
"""
from __future__ import annotations

from ._protocols import (EmbeddingClassifier, FeatureClassifier, ProbabilisticClassifier,
                         TextEmbeddingClassifier)
from .badge import badge_query
from .cb import cb_query, cbsq_query
from .cec import cec_query
from .coreset import coreset_query
from .dropquery import dropquery_query
from .herding import maxherding_query, uherding_query
from .on_embeddings import on_embeddings, ranked_batch_query
from .open_set import open_set
from .pcb import pcb
from .probcover import probcover_query
from .random import random_query
from .typiclust import typiclust_query
from .uncertainty import entropy_query, least_confidence_query, margin_query

_STRATEGIES = {
    "random": random_query,
    "entropy": entropy_query,
    "margin": margin_query,
    "least_confidence": least_confidence_query,
    "coreset": coreset_query,
    "badge": badge_query,
    "cec": cec_query,
    "cb": cb_query,
    "cbsq": cbsq_query,
    "ranked_batch": ranked_batch_query,
    # The low-budget methods (TypiClust, ProbCover, MaxHerding, Uncertainty Herding, DropQuery).
    "typiclust": typiclust_query,
    "probcover": probcover_query,
    "maxherding": maxherding_query,
    "uherding": uherding_query,
    "dropquery": dropquery_query,
}
#: Strategies that balance by themselves (left out of the listed ``+pcb`` variants).
_SELF_BALANCING = ("cec", "cb", "cbsq")
#: Strategies whose pseudo-labels PCB's re-selection would orphan (no ``+pcb``).
_PSEUDO_LABELING = ("cbsq",)
#: The wrappers a name may append, ``NAME+pcb``, ``NAME+open``, ``NAME+pcb+open``.
_WRAPPERS = {"pcb": pcb, "open": open_set}


def list_strategies(pcb_variants: bool = False) -> list[str]:
    """Names accepted by :func:`get_strategy`; ``NAME+pcb`` works for every base name.

    Parameters
    ----------
    pcb_variants : bool, default=False
        Also list the ``NAME+pcb`` names (PCB class balancing around each base strategy;
        CEC and CB, which balance through their clustering, are left out of these but
        ``"cec+pcb"`` and ``"cb+pcb"`` are accepted too).

    Returns
    -------
    list of str
        The base names (``"random"``, ``"entropy"``, ..., ``"cec"``, ``"cb"``, ``"cbsq"``, ...,
        ``"typiclust"``, ``"probcover"``, ``"maxherding"``, ``"uherding"``, ``"dropquery"``),
        then, with ``pcb_variants``, the ``+pcb`` ones.

    Examples
    --------
    >>> list_strategies()[:10]
    ['random', 'entropy', 'margin', 'least_confidence', 'coreset', 'badge', 'cec', 'cb', 'cbsq', 'ranked_batch']
    >>> list_strategies()[10:]
    ['typiclust', 'probcover', 'maxherding', 'uherding', 'dropquery']
    >>> list_strategies(pcb_variants=True)[-1]
    'dropquery+pcb'
    """
    names = list(_STRATEGIES)
    return names + [f"{n}+pcb" for n in names if n not in _SELF_BALANCING] if pcb_variants else names


def get_strategy(name: str):
    """The strategy called ``name`` (``"cec"``, ``"entropy"``, ``"entropy+pcb"``...).

    Parameters
    ----------
    name : str
        A name of :func:`list_strategies`, optionally followed by ``"+pcb"`` for PCB class
        balancing around it (:class:`~modal_vlm.pcb` with its default ``gamma``) and/or
        ``"+open"`` for open-set-aware selection (:class:`~modal_vlm.open_set`: the images
        most like those marked "none of these classes" are hidden from it), wrapped in the
        order written. CB+SQ is ``"cbsq"`` (the authors' name for it): ``+`` separates
        wrappers here.

    Returns
    -------
    callable
        The query strategy: a function such as :func:`~modal_vlm.strategies.entropy_query`, or a
        :class:`~modal_vlm.pcb` wrapper of one.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones), or ``"cbsq+pcb"``.

    Examples
    --------
    >>> get_strategy("cec").__name__
    'cec_query'
    >>> get_strategy("margin+pcb")
    pcb(margin_query, gamma=0.1)
    >>> get_strategy("margin+pcb+open")
    open_set(pcb_margin_query, threshold=0.5)
    >>> get_strategy("nope")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: Unknown strategy 'nope'; use one of [...] (append '+pcb' for PCB class balancing,
    '+open' for open-set-aware selection).
    """
    base, *wrappers = name.split("+")
    if base not in _STRATEGIES or any(w not in _WRAPPERS for w in wrappers) or len(set(wrappers)) != len(wrappers):
        hint = " CB+SQ is 'cbsq'." if name.replace(" ", "").lower() == "cb+sq" else ""
        raise ValueError(f"Unknown strategy {name!r}; use one of {list_strategies()} "
                         f"(append '+pcb' for PCB class balancing, '+open' for open-set-aware selection).{hint}")
    if "pcb" in wrappers and base in _PSEUDO_LABELING:
        raise ValueError(f"{name!r}: PCB re-selects among {base}'s picks, so its pseudo-labels would "
                         f"no longer belong to the batch; use {base!r} alone.")
    strategy = _STRATEGIES[base]
    for wrapper in wrappers:
        strategy = _WRAPPERS[wrapper](strategy)
    return strategy


__all__ = ["badge_query", "cb_query", "cbsq_query", "cec_query", "coreset_query", "dropquery_query", "entropy_query",
           "get_strategy", "least_confidence_query", "list_strategies", "margin_query", "maxherding_query",
           "on_embeddings", "open_set", "pcb", "probcover_query", "random_query", "ranked_batch_query",
           "typiclust_query", "uherding_query",
           # what a strategy needs from its classifier (docs/strategies.rst, "The contract")
           "EmbeddingClassifier", "FeatureClassifier", "ProbabilisticClassifier", "TextEmbeddingClassifier"]
