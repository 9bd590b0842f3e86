"""Weighted k-means++ seeding (torch) and Lloyd iterations (faiss).

The seeding only needs, for the newest seed ``i``, the inner products of every point with
point ``i``; taking them from a callable lets BADGE seed on gradient embeddings that are never
materialised (their inner products factorise, see :mod:`.badge`).
"""
from __future__ import annotations

import faiss
import numpy as np
import torch

from ..embeddings.disk import as_tensor
from ._linalg import nearest_centers, squared_norms


def _uniform_if_void(weights, n: int) -> torch.Tensor:
    # All-zero weights (every sample certain) carry no preference: fall back to uniform.
    if weights is None:
        return torch.ones(n)
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if weights.min() < 0:
        raise ValueError("sample weights must be non-negative.")
    return weights if float(weights.sum()) > 0 else torch.ones(n)


def kmeans_plusplus(sq_norms, inner_with, n_clusters: int, rng, *, weights=None, first=None):
    """Weighted k-means++ (D^2) seeding; returns ``n_clusters`` distinct row indices.

    Parameters
    ----------
    sq_norms : torch.Tensor of shape (n,)
        Squared norms of the points.
    inner_with : callable
        ``inner_with(i)`` returns the inner products of all points with point ``i``.
    n_clusters : int
    rng : numpy.random.RandomState
    weights : array-like of shape (n,), optional
        Sample weights; a point is drawn with probability proportional to
        ``weight * (squared distance to the nearest seed)``.
    first : int, optional
        The first seed; by default drawn with probability proportional to ``weights``.
    """
    n = len(sq_norms)
    weights = _uniform_if_void(weights, n).double()
    chosen = np.zeros(n, dtype=bool)
    seeds = []
    if first is None:
        first = int(np.searchsorted(np.cumsum(weights.numpy()), rng.uniform() * float(weights.sum()),
                                    side="right"))
    seed, min_sq = first, torch.full((n,), float("inf"), dtype=torch.float64)
    while True:
        seeds.append(seed)
        chosen[seed] = True
        if len(seeds) == n_clusters:
            return np.asarray(seeds, dtype=np.intp)
        sq = (sq_norms + sq_norms[seed] - 2.0 * inner_with(seed)).clamp_min(0.0).double()
        min_sq = torch.minimum(min_sq, sq)
        mass = (weights * min_sq).numpy()
        mass[chosen] = 0.0  # rounding can leave a seed a tiny positive distance to itself
        total = mass.sum()
        if total > 0:
            # side="right" skips zero-mass entries, so seeds stay distinct.
            seed = int(np.searchsorted(np.cumsum(mass), rng.uniform() * total, side="right"))
        else:  # every remaining point duplicates a seed (or weighs nothing)
            seed = int(rng.choice(np.flatnonzero(~chosen)))


def weighted_kmeans(X: torch.Tensor, n_clusters: int, rng, *, weights=None, max_iter: int = 100,
                    tol: float = 1e-4) -> torch.Tensor:
    """Weighted k-means (k-means++ seeding, faiss's Lloyd iterations); returns the centers ``(K, d)``.

    The seeds come from :func:`kmeans_plusplus` (drawn with ``rng``, weighted); faiss's
    :class:`faiss.Kmeans` then runs the Lloyd iterations with the sample weights (BLAS
    assignment; a center that loses all its points is re-seeded by splitting a large
    cluster). It stops when the squared center shift of an iteration falls under ``tol``
    times the mean per-feature variance of ``X`` (scikit-learn's criterion) or after
    ``max_iter`` iterations. Equal ``rng`` states give equal centers.
    """
    X = as_tensor(X)
    w = _uniform_if_void(weights, len(X))
    sq_norms = squared_norms(X)
    seeds = kmeans_plusplus(sq_norms, lambda i: X @ X[i], n_clusters, rng, weights=w)
    centers = X[torch.as_tensor(seeds)].numpy().copy()
    # Mean per-feature variance from the norms: X.var(0) would allocate an (n, d) temporary.
    threshold = tol * float(sq_norms.mean() - X.mean(0).square().sum()) / X.shape[1]
    # One iteration per call: faiss has no convergence test. Its own subsampling is off
    # (the callers subsample with their seeded rng) and so is its too-few-points warning.
    kmeans = faiss.Kmeans(X.shape[1], n_clusters, niter=1, seed=int(rng.randint(2**31)),
                          max_points_per_centroid=len(X), min_points_per_centroid=1)
    x, w = X.numpy(), w.numpy()
    for _ in range(max_iter):
        kmeans.train(x, weights=w, init_centroids=centers)
        shift = float(((kmeans.centroids - centers) ** 2).sum())
        centers = kmeans.centroids.copy()
        if shift <= threshold:
            break
    return torch.from_numpy(centers)


def kmeans_on_pool(F, n_clusters: int, rng, *, subsample=None, extra=None, n_init: int = 1):
    """k-means of a pool matrix: ``(centers, cluster of every row)``.

    Parameters
    ----------
    F : torch.Tensor, DiskMatrix or UnitRows of shape (n, d)
        The pool (see :mod:`._linalg`).
    n_clusters : int
    rng : numpy.random.RandomState
        Seeds the sample and k-means++.
    subsample : int, optional
        Fit on a uniform random sample of this many rows (never fewer than 50 per cluster)
        when the pool is larger, then assign every row; None fits on the whole pool.
    extra : torch.Tensor of shape (m, d), optional
        Rows fitted beside the pool's (e.g. the labeled samples), not assigned here.
    n_init : int, default=1
        Runs from different k-means++ seeds; the one of least inertia is kept (a single run
        can merge two well-separated groups and split a third).
    """
    fit_size = len(F) if subsample is None else max(int(subsample), 50 * n_clusters)
    rows = np.sort(rng.choice(len(F), fit_size, replace=False)) if len(F) > fit_size else None
    X = F[torch.as_tensor(rows)] if rows is not None else F[torch.arange(len(F))]
    if extra is not None and len(extra):
        X = torch.cat([X, as_tensor(extra)])
    best, centers = float("inf"), None
    for _ in range(n_init):
        candidate = weighted_kmeans(X, min(n_clusters, len(X)), rng)
        inertia = float(nearest_centers(X, candidate)[1].sum())
        if inertia < best or centers is None:
            best, centers = inertia, candidate
    return centers, nearest_centers(F, centers)[0][:, 0].numpy()
