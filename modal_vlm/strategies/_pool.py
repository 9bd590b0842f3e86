"""One resolver from whatever modAL hands a strategy to what the strategy needs.

A strategy receives a modAL learner, a bare estimator or a scikit-learn
:class:`~sklearn.pipeline.Pipeline` ending in one, plus a pool ``X_pool`` that is opaque here
(paths, PIL images, arrays...): it only ever goes to the estimator. :class:`QueryPool` turns
that into embeddings, probabilities and the labeled set, each computed at most once. What it
asks of the estimator is spelled out in :mod:`._protocols`.
"""
from __future__ import annotations

from functools import cached_property
from typing import TypeGuard

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state

from .._validation import check_int
from ..embeddings.disk import DiskMatrix, as_tensor
from ..embeddings.pool import EmbeddingPool
from ..sentinels import none_mask
from ._linalg import pool_blocks
from ._protocols import Classifier, Learner, ProbabilisticClassifier


def _is_learner(obj) -> TypeGuard[Learner]:
    return hasattr(obj, "estimator") and hasattr(obj, "X_training")


class QueryPool:
    """Lazy view of a classifier over an unlabeled pool.

    It quacks like a modAL learner (``estimator``, ``X_training``, ``y_training``,
    ``predict_proba``) so that :func:`~modal_vlm.strategies.pcb` can hand it to any base
    strategy, modAL's own included, and nothing is computed twice.

    Parameters
    ----------
    classifier : modAL learner, estimator or Pipeline
        See :data:`~._protocols.Classifier`; each attribute below says what it needs of
        the estimator.
    X_pool : sequence
        The unlabeled pool, passed untouched to the estimator.
    X_labeled, y_labeled : optional
        The labeled set; default: the learner's ``X_training`` / ``y_training``.
    """

    def __init__(self, classifier: Classifier, X_pool, X_labeled=None, y_labeled=None):
        learner = _is_learner(classifier)
        self.classifier = classifier
        self.X_pool = X_pool
        self.n = len(X_pool)
        self.estimator = classifier.estimator if learner else classifier
        self.X_training = X_labeled if X_labeled is not None else (
            classifier.X_training if learner else None)
        self.y_training = y_labeled if y_labeled is not None else (
            classifier.y_training if learner else None)
        self._model: ProbabilisticClassifier
        if isinstance(self.estimator, Pipeline):
            self._head, self._model = self.estimator[:-1], self.estimator[-1]
        else:
            self._head, self._model = None, self.estimator

    def _embed(self, X):
        if not hasattr(self._model, "transform"):
            raise TypeError(f"{type(self._model).__name__} has no transform(): this strategy needs "
                            "image embeddings, e.g. from ClipPromptClassifier.")
        features = self._model.transform(X if self._head is None else self._head.transform(X))
        if np.ndim(features) != 2 or len(features) != len(X):
            raise ValueError(f"transform() returned shape {np.shape(features)} for {len(X)} samples; "
                             "expected (n_samples, n_features).")
        return as_tensor(features)

    @property
    def precomputed(self) -> bool:
        """Whether the pool is an :class:`~modal_vlm.embeddings.EmbeddingPool` (no ``transform`` of it)."""
        return isinstance(self.X_pool, EmbeddingPool) and self.X_pool.embeddings is not None

    @cached_property
    def features(self):
        """Embeddings of the pool: a float32 ``torch.Tensor (n, d)``, or a
        :class:`~modal_vlm.embeddings.disk.DiskMatrix` for a memory-mapped pool (an
        :class:`~._protocols.EmbeddingClassifier`'s ``transform``)."""
        return self.X_pool.features() if self.precomputed else self._embed(self.X_pool)

    def proba_blocks(self):
        """``(rows, probabilities)`` over the pool in row blocks, as float32 tensors.

        A memory-mapped pool's probabilities are computed block by block from its embeddings
        and never held whole (10^7 x 100 classes is 4 GB); otherwise one block, :attr:`proba`.
        """
        on_disk = self.precomputed and isinstance(self.features, DiskMatrix)
        if not on_disk or "proba" in self.__dict__:
            yield slice(0, self.n), as_tensor(self.proba)
            return
        for rows in pool_blocks(self.features):
            yield rows, as_tensor(self._proba_from_features(self.features[rows], rows.stop - rows.start))

    def _proba_from_features(self, features, n):
        if not hasattr(self._model, "predict_proba_from_features"):
            raise TypeError(f"{type(self._model).__name__} has no predict_proba_from_features(): an "
                            "EmbeddingPool needs a classifier that predicts from embeddings.")
        proba = np.asarray(self._model.predict_proba_from_features(features.numpy()))
        if proba.ndim != 2 or len(proba) != n:
            raise ValueError(f"predict_proba returned shape {proba.shape} for {n} samples.")
        return proba

    def _probabilities(self, X, features) -> np.ndarray:
        # From the embeddings when the model can: no second pass over the images.
        if hasattr(self._model, "predict_proba_from_features"):
            proba = self._model.predict_proba_from_features(features().numpy())
        else:
            proba = self.estimator.predict_proba(X)
        proba = np.asarray(proba)
        if proba.ndim != 2 or len(proba) != len(X):
            raise ValueError(f"predict_proba returned shape {proba.shape} for {len(X)} samples.")
        return proba

    @cached_property
    def proba(self) -> np.ndarray:
        """Class probabilities of the pool, ``(n, C)``; from :attr:`features` when the model can
        (a :class:`~._protocols.FeatureClassifier`)."""
        if self.precomputed:
            return np.concatenate([self._proba_from_features(self.features[rows], rows.stop - rows.start)
                                   for rows in pool_blocks(self.features)])
        return self._probabilities(self.X_pool, lambda: self.features)

    @cached_property
    def labeled_features(self):
        """Embeddings of the labeled set, or ``None`` when nothing is labeled yet."""
        if self.n_labeled == 0:
            return None
        return self._embed(self.X_training)

    @cached_property
    def labeled_proba(self):
        """Current class probabilities of the labeled set, ``(L, C)``, or ``None`` without labels."""
        if self.n_labeled == 0:
            return None
        return self._probabilities(self.X_training, lambda: self.labeled_features)

    @property
    def n_labeled(self) -> int:
        """Size ``L`` of the labeled set (0 before any label)."""
        return 0 if self.X_training is None else len(self.X_training)

    @cached_property
    def text_features(self):
        """The classifier's class text features ``(C, d)``, ``torch.Tensor`` (see
        :class:`~._protocols.TextEmbeddingClassifier`)."""
        if not hasattr(self._model, "class_text_features"):
            raise TypeError(f"{type(self._model).__name__} has no class_text_features(): this strategy "
                            "needs the class text features, e.g. from ClipPromptClassifier.")
        text = as_tensor(self._model.class_text_features())
        if text.ndim != 2 or len(text) != self.proba.shape[1]:
            raise ValueError(f"class_text_features() returned shape {tuple(text.shape)}; expected "
                             f"({self.proba.shape[1]}, n_features), one row per class.")
        return text

    def subset(self, rows, X_rows) -> "QueryPool":
        """A view of the pool images ``rows`` (``X_rows`` = those images), sharing what is
        already computed here (embeddings, probabilities, the labeled set's).

        Parameters
        ----------
        rows : np.ndarray of int
            Positions in this pool.
        X_rows : sequence
            ``X_pool`` at ``rows`` (see :func:`take_rows`).

        Returns
        -------
        QueryPool
        """
        view = QueryPool(self.classifier, X_rows, X_labeled=self.X_training, y_labeled=self.y_training)
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        if "features" in self.__dict__ and not isinstance(self.features, DiskMatrix):
            view.features = self.features[index]
        if "proba" in self.__dict__:
            view.proba = self.proba[np.asarray(rows)]
        for name in ("labeled_features", "labeled_proba", "labeled_none", "text_features"):
            if name in self.__dict__:
                view.__dict__[name] = self.__dict__[name]
        return view

    def predict_proba(self, X):
        """The cached :attr:`proba` for the pool itself, the estimator's otherwise."""
        return self.proba if X is self.X_pool else self.estimator.predict_proba(X)

    @property
    def classes(self) -> np.ndarray:
        """The classifier's ``classes_`` (``arange(C)`` for a model without them)."""
        return np.asarray(getattr(self._model, "classes_", np.arange(self.proba.shape[1])))

    @cached_property
    def labeled_none(self) -> np.ndarray:
        """Which samples of the labeled set are labeled :data:`~modal_vlm.NONE` ("none of
        these classes"), ``(L,)`` bool (empty before any label)."""
        if self.y_training is None or len(self.y_training) == 0:
            return np.zeros(0, dtype=bool)
        classes = self.classes
        names = classes.tolist() if classes.dtype.kind in "USO" else ()
        return none_mask(np.asarray(self.y_training, dtype=object).reshape(-1), names)

    def labeled_positions(self) -> np.ndarray:
        """Column of :attr:`proba` of each class label of the labeled set, in its order, the
        :data:`~modal_vlm.NONE` labels left out (empty before any label)."""
        if self.y_training is None or len(self.y_training) == 0:
            return np.zeros(0, dtype=np.intp)
        n_classes, classes = self.proba.shape[1], self.classes
        y = np.asarray(self.y_training, dtype=object).reshape(-1)[~self.labeled_none].tolist()
        column = {label: i for i, label in enumerate(classes.tolist())}
        unknown = sorted({label for label in y if label not in column}, key=str)
        if len(classes) != n_classes or unknown:
            raise ValueError(f"labels {unknown[:10]} of the labeled set are not among the classifier's "
                             f"{n_classes} classes_.")
        return np.array([column[label] for label in y], dtype=np.intp)

    def class_counts(self) -> np.ndarray:
        """Labels per class over all ``C`` classes of :attr:`proba` (zeros before any label);
        :data:`~modal_vlm.NONE` labels count for no class."""
        return np.bincount(self.labeled_positions(), minlength=self.proba.shape[1])


def take_rows(X, rows):
    """``X`` at the positions ``rows``: an array (or :class:`~modal_vlm.embeddings.EmbeddingPool`) is
    indexed, any other sequence gives a list."""
    rows = np.asarray(rows, dtype=np.intp)
    return X[rows] if isinstance(X, np.ndarray) else [X[i] for i in rows]


def check_n_instances(n_instances, n_pool: int) -> int:
    """``n_instances`` as an int in ``[1, n_pool]``, or a ValueError naming the problem."""
    if n_pool == 0:
        raise ValueError("X_pool is empty: there is nothing to query.")
    check_int("n_instances", n_instances)
    if n_instances > n_pool:
        raise ValueError(f"n_instances={n_instances} exceeds the pool size {n_pool}.")
    return int(n_instances)


def prepare(classifier: Classifier | QueryPool, X_pool, n_instances, random_state, *, X_labeled=None,
            y_labeled=None):
    """Validate a strategy call: returns ``(QueryPool, n_instances, RandomState)``.

    A :class:`QueryPool` over the same ``X_pool`` (as handed over by ``pcb``) is reused.
    """
    if (isinstance(classifier, QueryPool) and classifier.X_pool is X_pool
            and X_labeled is None and y_labeled is None):
        pool = classifier
    else:
        if isinstance(classifier, QueryPool):
            classifier = classifier.classifier
        pool = QueryPool(classifier, X_pool, X_labeled=X_labeled, y_labeled=y_labeled)
    return pool, check_n_instances(n_instances, pool.n), check_random_state(random_state)
