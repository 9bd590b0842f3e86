"""k nearest neighbours of every pool sample among the other pool samples (inner product).

``exact`` is blocked brute force: a block of rows times the whole pool, top-k per row, the
row itself masked; it costs ``n^2 d`` multiply-adds (about 3 minutes for 10^5 x 512 on two CPU
cores), so above :data:`EXACT_MAX` samples ``auto`` switches to ``approximate``, an inverted
file index built here in torch (no extra dependency):

1. project the embeddings on their top :data:`PROJECTED_DIM` principal directions (uncentred,
   so inner products are preserved as well as a rank-r map can);
2. k-means the projections into about ``sqrt(n)`` lists (cells);
3. the samples of a cell search the cell and its :data:`N_PROBE` ``- 1`` nearest cells (by
   center) in the projection, keeping :data:`RERANK_FACTOR` ``* k`` candidates each;
4. re-rank the candidates with exact inner products of the full embeddings.

The neighbours returned are true pool samples with exact similarities; some true neighbours
may be missed (recall is measured in ``benchmarks/bench_query_scaling.py``). A sample whose
probed cells hold fewer than ``k`` others gets an exact search.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ._kmeans import weighted_kmeans
from ._linalg import nearest_centers, row_blocks

#: Largest pool searched exactly by ``method="auto"``.
EXACT_MAX = 10_000
#: Dimension of the projection the inverted file is built on.
PROJECTED_DIM = 128
#: Cells searched by the samples of a cell (their own and the nearest others).
N_PROBE = 2
#: Candidates kept per sample for exact re-ranking, as a multiple of k.
RERANK_FACTOR = 2
#: Training points per list for the coarse k-means.
TRAIN_PER_LIST = 32

METHODS = ("auto", "exact", "approximate")


def knn(F: torch.Tensor, k: int, rng, method: str = "auto"):
    """The ``k`` most similar other samples of every row of ``F`` (inner product).

    Parameters
    ----------
    F : torch.Tensor of shape (n, d)
    k : int
        Neighbours per sample; at most ``n - 1``.
    rng : numpy.random.RandomState
        Seeds the approximate index.
    method : {"auto", "exact", "approximate"}

    Returns
    -------
    index : torch.Tensor of shape (n, k), int64
    sim : torch.Tensor of shape (n, k), float32, most similar first
    """
    if method not in METHODS:
        raise ValueError(f"knn must be one of {METHODS}, got {method!r}.")
    if method == "exact" or (method == "auto" and len(F) <= EXACT_MAX):
        return exact_knn(F, k)
    return approximate_knn(F, k, rng)


def exact_knn(F: torch.Tensor, k: int, queries=None):
    """Blocked brute-force neighbours of the rows ``queries`` (default: all rows)."""
    queries = torch.arange(len(F)) if queries is None else queries
    index = torch.empty((len(queries), k), dtype=torch.int64)
    sim = torch.empty((len(queries), k), dtype=torch.float32)
    for rows in row_blocks(len(queries), 4 * len(F)):
        block = F[queries[rows]] @ F.T
        block[torch.arange(len(block)), queries[rows]] = -math.inf  # a sample is not its own neighbour
        sim[rows], index[rows] = torch.topk(block, k, dim=1)
    return index, sim


def _projection(F: torch.Tensor, rng) -> torch.Tensor:
    if F.shape[1] <= PROJECTED_DIM:
        return F
    sample = F[torch.as_tensor(rng.choice(len(F), min(len(F), 20_000), replace=False))]
    # One BLAS thread: right after torch's matmuls, OpenBLAS threads contend with torch's
    # spinning OpenMP workers and a 512 x 512 eigh takes seconds instead of milliseconds.
    with threadpool_limits(1, user_api="blas"):
        _, vectors = np.linalg.eigh((sample.T @ sample).double().numpy())  # ascending order
    return F @ torch.from_numpy(vectors[:, -PROJECTED_DIM:].astype(np.float32))


def _groups(labels: torch.Tensor, n_groups: int):
    """Row indices of each label value, as (order, start offsets)."""
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=n_groups)
    return order, torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])


def approximate_knn(F: torch.Tensor, k: int, rng):
    """Inverted-file neighbour search with exact re-ranking (see the module docstring)."""
    n = len(F)
    Z = _projection(F, rng)
    n_lists = max(1, min(n // TRAIN_PER_LIST, round(math.sqrt(n))))
    train = Z[torch.as_tensor(rng.choice(n, min(n, TRAIN_PER_LIST * n_lists), replace=False))]
    centers = weighted_kmeans(train, n_lists, rng, max_iter=10)
    cell = nearest_centers(Z, centers)[0][:, 0]
    nearest_cells = nearest_centers(centers, centers, min(N_PROBE, n_lists))[0].tolist()
    order, start = _groups(cell, n_lists)
    members = [order[start[c]:start[c + 1]] for c in range(n_lists)]

    n_cand = min(n - 1, RERANK_FACTOR * k)
    index = torch.full((n, k), -1, dtype=torch.int64)
    sim = torch.full((n, k), -math.inf)
    for c in range(n_lists):
        queries = members[c]
        # The cell's own members open the search set (so queries[i] is targets[i]); listing
        # it explicitly keeps that true when duplicate centers tie.
        probed = [c] + [p for p in nearest_cells[c] if p != c][:len(nearest_cells[c]) - 1]
        targets = torch.cat([members[p] for p in probed])
        if len(queries) == 0 or len(targets) <= k:
            continue  # left to the exact fallback below
        Zt = Z[targets].T
        for rows in row_blocks(len(queries), 4 * (len(targets) + n_cand * F.shape[1])):
            block = Z[queries[rows]] @ Zt
            own = torch.arange(rows.start, rows.stop)
            block[own - rows.start, own] = -math.inf
            cand = targets[torch.topk(block, min(n_cand, len(targets) - 1), dim=1)[1]]
            exact = torch.einsum("bd,bkd->bk", F[queries[rows]], F[cand])
            top_sim, keep = torch.topk(exact, k, dim=1)
            sim[queries[rows]] = top_sim
            index[queries[rows]] = torch.gather(cand, 1, keep)
    short = torch.nonzero(index[:, 0] < 0).reshape(-1)
    if len(short):
        index[short], sim[short] = exact_knn(F, k, short)
    return index, sim
