"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on gradient embeddings.

The gradient embedding of a sample is ``g = (p - onehot(argmax p)) ⊗ f``: the gradient of the
cross-entropy at the predicted label with respect to a linear head on the image embedding
``f``. It has ``C * d`` entries (51,200 for C = 100, d = 512), but inner products factorise,
``<g_i, g_j> = <a_i, a_j> <f_i, f_j>`` with ``a = p - onehot(argmax p)``, so the seeding runs
exactly on the factors and never materialises ``g`` (the low-rank trick; no projection).
"""
from __future__ import annotations

import numpy as np
import torch

from ..embeddings.disk import as_matrix, as_tensor
from ._kmeans import kmeans_plusplus
from ._linalg import matvec, squared_norms
from ._pool import prepare
from ._result import query_result


def gradient_factors(proba) -> torch.Tensor:
    """``a = p - onehot(argmax p)``, the class factor of the gradient embedding.

    Parameters
    ----------
    proba : array-like of shape (n, C)
        Class probabilities of the pool.

    Returns
    -------
    torch.Tensor of shape (n, C), float32
        ``proba`` with 1 subtracted at each row's most likely class.

    Examples
    --------
    >>> gradient_factors([[0.75, 0.25]])
    tensor([[-0.2500,  0.2500]])
    """
    A = as_tensor(proba).clone()
    A[torch.arange(len(A)), A.argmax(1)] -= 1.0
    return A


def gradient_embeddings(proba, features) -> np.ndarray:
    """The gradient embeddings ``(n, C * d)`` themselves (small pools, inspection, tests).

    Parameters
    ----------
    proba : array-like of shape (n, C)
        Class probabilities of the pool.
    features : array-like of shape (n, d)
        Image embeddings of the same samples.

    Returns
    -------
    np.ndarray of shape (n, C * d), float32
        Row ``i`` is the outer product ``a_i ⊗ f_i`` flattened class-major, ``a`` from
        :func:`gradient_factors`.

    Examples
    --------
    >>> gradient_embeddings([[0.75, 0.25]], [[1.0, 2.0]])
    array([[-0.25, -0.5 ,  0.25,  0.5 ]], dtype=float32)
    """
    A, F = gradient_factors(proba), as_tensor(features)
    return torch.einsum("nc,nd->ncd", A, F).reshape(len(A), -1).numpy()


def badge_select(proba, features, n_instances, rng) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeds on the gradient embeddings, starting from the largest gradient.

    Runs on the factors (``<g_i, g_j> = <a_i, a_j> <f_i, f_j>``): the ``C * d`` gradient
    embeddings are never built.

    Parameters
    ----------
    proba : array-like of shape (n, C)
        Class probabilities of the pool.
    features : array-like of shape (n, d)
        Image embeddings of the same samples.
    n_instances : int
        Number of seeds to pick (at most ``n``).
    rng : numpy.random.RandomState
        Draws every seed after the first (with probability proportional to the squared
        distance to the nearest seed so far).

    Returns
    -------
    picks : np.ndarray of shape (n_instances,)
        Distinct pool indices; the first has the largest gradient-embedding norm.
    gradient_norm : np.ndarray of shape (n,)
        Each sample's gradient-embedding norm ``||a|| ||f||``.

    Examples
    --------
    >>> import numpy as np
    >>> proba = [[0.9, 0.1], [0.5, 0.5], [0.6, 0.4]]
    >>> picks, norms = badge_select(proba, np.eye(3), 2, np.random.RandomState(0))
    >>> int(picks[0]), norms.round(3)
    (1, array([0.141, 0.707, 0.566], dtype=float32))
    """
    A, F = gradient_factors(proba), as_matrix(features)
    sq_norms = squared_norms(A) * squared_norms(F)
    picks = kmeans_plusplus(sq_norms, lambda i: (A @ A[i]) * matvec(F, F[i]), n_instances, rng,
                            first=int(torch.argmax(sq_norms)))
    return picks, sq_norms.sqrt().numpy()


def badge_query(classifier, X_pool, n_instances=1, *, random_state=None, return_metrics=False):
    """BADGE query: diverse samples with large expected gradients.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Gives the pool's class probabilities and embeddings (``transform``, cached).
    X_pool : sequence
        Unlabeled pool.
    n_instances : int, default=1
        Number of pool samples to query (the batch size), at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Seeds the k-means++ draws.
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` whatever the installed modAL expects.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["gradient_norm"]``: each sample's
        gradient-embedding norm.

    Raises
    ------
    ValueError
        ``X_pool`` is empty or ``n_instances`` is not an int in ``[1, len(X_pool)]``.
    TypeError
        The classifier has no ``transform`` (BADGE needs image embeddings).

    Examples
    --------
    The first pick is the sample with the largest gradient embedding:

    >>> import numpy as np
    >>> from modal_vlm import ClipPromptClassifier
    >>> images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    >>> idx, metrics = badge_query(ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0),
    ...                            images, 4, random_state=0, return_metrics=True)
    >>> bool(metrics["gradient_norm"][idx[0]] == metrics["gradient_norm"].max())
    True
    """
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state)
    picks, norms = badge_select(pool.proba, pool.features, n_instances, rng)
    return query_result(picks, {"gradient_norm": norms}, return_metrics)
