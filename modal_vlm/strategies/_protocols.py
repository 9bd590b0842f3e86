"""What a query strategy needs from the classifier it is handed, as :class:`typing.Protocol`\\ s.

The strategies never import the estimator: any object with these methods works, and
:class:`~modal_vlm.ClipPromptClassifier` has them all. Each strategy needs only part of the
contract (see :ref:`strategies-contract`):

- :class:`ProbabilisticClassifier` (``predict_proba``): the uncertainty strategies (entropy,
  margin, least confidence) and CEC without its clustering;
- :class:`EmbeddingClassifier` (adds ``transform``): every strategy that uses image
  embeddings (CEC, Coreset, BADGE, the low-budget methods...);
- :class:`FeatureClassifier` (adds ``predict_proba_from_features``): probabilities from the
  embeddings already computed, with no second pass over the images; needed by DropQuery,
  ``on_embeddings`` and for a pool handed over as an :class:`~modal_vlm.embeddings.EmbeddingPool`;
- :class:`TextEmbeddingClassifier` (adds ``class_text_features``): CB and CB+SQ.

A ``classes_`` attribute, where there is one, names the columns of ``predict_proba`` (the
labels of the labeled set are looked up there); without it the columns are ``0..C-1``.

The classifier reaches a strategy as itself, as the last step of a scikit-learn
:class:`~sklearn.pipeline.Pipeline` (whose earlier steps ``transform`` the pool first), or as
the ``estimator`` of a modAL learner (:class:`Learner`), whose ``X_training`` and
``y_training`` are the labeled set.
"""
from __future__ import annotations

from typing import Any, Protocol, Union

import numpy as np
from sklearn.pipeline import Pipeline


class ProbabilisticClassifier(Protocol):
    """A classifier with class probabilities: enough for the uncertainty strategies."""

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of the images ``X``.

        Parameters
        ----------
        X : sequence
            Images, in whatever form the classifier takes (the strategies pass the pool on
            untouched).

        Returns
        -------
        numpy.ndarray of shape (n_samples, n_classes)
            Rows summing to 1.
        """


class EmbeddingClassifier(ProbabilisticClassifier, Protocol):
    """A classifier that also embeds its inputs: what most strategies need."""

    def transform(self, X) -> np.ndarray:
        """Embeddings of the images ``X``.

        Parameters
        ----------
        X : sequence
            Images, as for :meth:`predict_proba`.

        Returns
        -------
        array-like of shape (n_samples, n_features)
            The low-budget strategies L2-normalise them (a CLIP embedding is unit already);
            the others use them as they are.
        """


class FeatureClassifier(EmbeddingClassifier, Protocol):
    """An embedding classifier that predicts from its own embeddings."""

    def predict_proba_from_features(self, features) -> np.ndarray:
        """Class probabilities from embeddings.

        Parameters
        ----------
        features : numpy.ndarray of shape (n_samples, n_features)
            Rows of :meth:`transform` (float32).

        Returns
        -------
        numpy.ndarray of shape (n_samples, n_classes)
            Equal to ``predict_proba`` of the images the rows embed.
        """


class TextEmbeddingClassifier(EmbeddingClassifier, Protocol):
    """An embedding classifier whose classes are embedded in the same space (a CLIP-like
    model's class prompts): what CB and CB+SQ need."""

    def class_text_features(self) -> np.ndarray:
        """One embedding per class, in the space of :meth:`transform`.

        Returns
        -------
        array-like of shape (n_classes, n_features)
            In the order of the ``predict_proba`` columns.
        """


class Learner(Protocol):
    """A modAL learner as the strategies read it: the classifier and the labeled set."""

    estimator: Any
    X_training: Any
    y_training: Any


#: What a strategy's ``classifier`` argument may be.
Classifier = Union[Learner, Pipeline, ProbabilisticClassifier]

__all__ = ["Classifier", "EmbeddingClassifier", "FeatureClassifier", "Learner", "ProbabilisticClassifier",
           "TextEmbeddingClassifier"]
