"""k nearest neighbours of every pool sample among the other pool samples (inner product).

``exact`` is blocked brute force: a block of rows times a block of the pool, a running top-k
per row, the row itself masked; it costs ``n^2 d`` multiply-adds, which grows too slow for an
interactive query beyond about 10^4 samples, so above :data:`EXACT_MAX` samples ``auto``
switches to ``approximate``, an inverted-file self-join (timings, recall and memory at each
size: ``benchmarks/results/query_scaling.md``):

1. faiss's k-means (:class:`faiss.Kmeans`, spherical, seeded by ``rng``) splits a sample of
   the pool into about ``sqrt(n)`` cells, and every sample goes to its nearest cell center
   (the centers scored in their leading 128 singular directions, the 8 best re-ranked
   exactly: on the largest pools scoring every center in full dominated the query), and
   cells of more than twice the mean size are cut into slabs of about the mean size, as
   uneven cells make the scan's cost uneven (:func:`_slab_rule`);
2. the samples of a cell search the cell and its nearest cells (by center), about
   :data:`SCANNED` candidates per sample, with matrix products of :data:`SCAN_ROWS` queries
   of the cell against all its targets; a pool on disk is first copied in cell order into
   a temporary file (:meth:`DiskMatrix.reordered`), so that a cell's rows are one read;
3. the product runs in int8 where the CPU has integer dot-product instructions (AVX-512
   VNNI, AVX-VNNI or AMX: several times float32's throughput there), each target list
   quantised with its own scale, else in float32; it keeps the
   :data:`CANDIDATE_FACTOR` ``* k`` best candidates, and re-ranks them with exact float32
   inner products.

The neighbours returned are true pool samples with exact similarities; some true neighbours
may be missed (recall is measured in ``benchmarks/bench_query_scaling.py``). A sample whose
probed cells hold ``k`` others or fewer gets an exact search. The whole-pool self-join is what
a neighbour-aware strategy needs (every sample's neighbours), so it is organised by cell, one
dense product per cell, rather than as ``n`` separate index queries: faiss's per-query
``IndexIVFFlat.search`` with the same cells probed repeats the per-cell work for every
sample, and was several times slower per sample on the benchmark's data
(``benchmarks/results/query_scaling.md``).
"""
from __future__ import annotations

import functools
import math

import faiss
import numpy as np
import torch

from ..embeddings.disk import DiskMatrix, as_matrix
from . import _linalg
from ._linalg import row_blocks

#: Largest pool searched exactly by ``method="auto"``.
EXACT_MAX = 10_000
#: Candidates scanned per sample: the samples of a cell search their cell and the nearest
#: cells up to about this many samples (more where cells are uneven), so the cost grows
#: linearly with the pool; on pools without local structure the recall then falls at the
#: largest sizes (``benchmarks/results/query_scaling.md``).
SCANNED = 8_000
#: Candidates kept per sample from the fast product, as a multiple of k, for exact re-ranking.
CANDIDATE_FACTOR = 2
#: Training points per cell for faiss's k-means, and its iterations.
TRAIN_PER_LIST = 32
KMEANS_ITER = 10
#: Query rows per product: the similarity block and the gathered candidates then stay in the
#: cores' caches, which is faster than one product per cell (``query_scaling.md``).
SCAN_ROWS = 256
#: Columns per group in the top-k by groups (group maxima first, then their members), and
#: how many times the maxima are grouped again (the scan's width is padded to a multiple
#: of ``GROUP ** SELECT_LEVELS``).
GROUP = 8
SELECT_LEVELS = 2
#: Cell assignment scores every center in this many dimensions (the centers' leading
#: singular directions) and re-ranks the :data:`ASSIGN_SHORTLIST` best exactly: a quarter of
#: the 512 dimensions of the benchmark's embeddings, so several times fewer multiply-adds
#: than scoring every center in full.
ASSIGN_DIMS = 128
ASSIGN_SHORTLIST = 8
#: Rows per step of the int8 rounding: a block's temporaries stay in cache, where one pass
#: over the whole matrix would allocate a full-size temporary.
QUANTIZE_ROWS = 1024
#: Cells of more than this many times the mean size are cut into slabs of the mean size.
MAX_CELL_FACTOR = 2

METHODS = ("auto", "exact", "approximate")


def knn(F, k: int, rng, method: str = "auto"):
    """The ``k`` most similar other samples of every row of ``F`` (inner product).

    Parameters
    ----------
    F : torch.Tensor or DiskMatrix of shape (n, d)
        A pool matrix (see :mod:`._linalg`); memory-mapped pools are read in blocks.
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
    F = as_matrix(F)
    if method == "exact" or (method == "auto" and len(F) <= EXACT_MAX):
        return exact_knn(F, k)
    return approximate_knn(F, k, rng)


def _merge_top(sim, index, new_sim, new_index, k):
    """Running top-k: the ``k`` best of two candidate sets per row."""
    sim, keep = torch.topk(torch.cat([sim, new_sim], 1), k, dim=1)
    return sim, torch.gather(torch.cat([index, new_index], 1), 1, keep)


def exact_knn(F, k: int, queries=None):
    """Blocked brute-force neighbours of the rows ``queries`` (default: all rows)."""
    F = as_matrix(F)
    queries = torch.arange(len(F)) if queries is None else torch.as_tensor(queries)
    index = torch.empty((len(queries), k), dtype=torch.int64)
    sim = torch.empty((len(queries), k), dtype=torch.float32)
    # In memory: every row block against the whole pool; on disk, target blocks too.
    target_rows = min(len(F), _linalg.BLOCK_BYTES // (4 * F.shape[1]))
    resident = F if isinstance(F, torch.Tensor) and target_rows == len(F) else None
    for rows in row_blocks(len(queries), 4 * max(target_rows, k)):
        q = queries[rows]
        Fq = F[q]
        best = torch.full((len(q), k), -math.inf)
        best_index = torch.zeros((len(q), k), dtype=torch.int64)
        for targets in ([slice(0, len(F))] if resident is not None else row_blocks(len(F), 4 * F.shape[1])):
            block = Fq @ (resident if resident is not None else F[targets]).T
            own = (q >= targets.start) & (q < targets.stop)
            block[torch.nonzero(own).reshape(-1), q[own] - targets.start] = -math.inf  # not its own neighbour
            top, at = torch.topk(block, min(k, block.shape[1]), dim=1)
            best, best_index = _merge_top(best, best_index, top, at + targets.start, k)
        sim[rows], index[rows] = best, best_index
    return index, sim


@functools.lru_cache(maxsize=1)
def _scan_dtype():
    """int8 where the CPU has integer dot-product instructions and torch its int8 product,
    else float32.

    Measured on a 2-core AMD EPYC with AVX-512 VNNI (256 x 512 by 512 x 10,000 products):
    int8 380, bfloat16 190, float32 71 GMAC/s; on a 2-core Xeon with AVX-512 bfloat16 but no
    AMX, bfloat16 was 0.65 times float32's speed, so bfloat16 is never the safe choice. The
    exact re-ranking makes the int8 rounding cost recall only where it pushes a true neighbour
    out of the candidates.
    """
    if _cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        try:  # torch._int_mm runs on CPUs from torch 2.3 (its CPU kernel is oneDNN's)
            ones = torch.ones(2, 8, dtype=torch.int8)
            if torch.equal(torch._int_mm(ones, ones.T), torch.full((2, 2), 8, dtype=torch.int32)):
                return torch.int8
        except (AttributeError, RuntimeError, NotImplementedError):
            pass
    return torch.float32


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as info:
            return next((set(line.split(":", 1)[1].split()) for line in info if line.startswith("flags")), set())
    except OSError:  # not Linux: no way to tell, and float32 is never the slow choice
        return set()


def _quantize(X, out):
    """``X`` rounded to int8 into ``out``, scaled so that its largest magnitude is 127 (one
    scale for the whole matrix: a row's ranking of the columns is unchanged by it)."""
    low, high = torch.aminmax(X)  # one fused pass: far cheaper than an infinity norm
    scale = 127.0 / max(-float(low), float(high), 1e-30)
    scaled = torch.empty(min(len(X), QUANTIZE_ROWS), X.shape[1])
    for rows in row_blocks(len(X), 1, QUANTIZE_ROWS):  # float temporaries that stay in cache
        block = torch.mul(X[rows], scale, out=scaled[:rows.stop - rows.start])
        out[rows] = block.round_()
    return out


def _product(A, B, out=None):
    """``A @ B.T`` (into ``out``, if given): int32 sums of int8 products, or float32."""
    return torch._int_mm(A, B.T, out=out) if A.dtype == torch.int8 else torch.matmul(A, B.T, out=out)


def _cells(F, rng, n_lists: int):
    """Cell centers (their members' normalised means) and each sample's cell.

    faiss's k-means of a sample gives the centers that assign; large cells are cut into
    slabs (:func:`_slab_rule`) in the same pass over the pool.
    """
    n, d = F.shape
    # Two disjoint samples: one trains k-means, the other (where the pool has enough samples)
    # tells how the cells fill. k-means's own points sit around their own centroids, so
    # their counts hide the imbalance: cut by them, the 10^7 pool kept cells of 7.3 times
    # the mean size.
    drawn = rng.permutation(n)[:2 * TRAIN_PER_LIST * n_lists]
    train_rows = np.sort(drawn[:TRAIN_PER_LIST * n_lists])
    disjoint = len(drawn) >= 2 * len(train_rows)
    train = F[torch.as_tensor(train_rows)]
    kmeans = faiss.Kmeans(d, n_lists, niter=KMEANS_ITER, spherical=True, seed=int(rng.randint(2**31)),
                          max_points_per_centroid=len(train), min_points_per_centroid=1)
    kmeans.train(train.numpy())
    # Normalised centers: the nearest by inner product is the nearest by distance.
    centroids = torch.from_numpy(kmeans.centroids)
    projection = _shortlist_projection(centroids)
    held_out = F[torch.as_tensor(np.sort(drawn[len(train_rows):]))] if disjoint else train
    rule = _slab_rule(held_out, _nearest_center(held_out, centroids, projection), n_lists)
    cell = torch.empty(n, dtype=torch.int64)
    sums = torch.zeros(rule[-1], d)
    for rows in row_blocks(n, 4 * (n_lists + d + ASSIGN_SHORTLIST * d)):
        block = F[rows]
        cell[rows] = _cut(block, _nearest_center(block, centroids, projection), rule)
        sums.index_add_(0, cell[rows], block)
    return torch.nn.functional.normalize(sums, dim=1), cell


def _slab_rule(sample, sample_cell, n_lists: int):
    """How to cut the cells that hold more than :data:`MAX_CELL_FACTOR` times the mean share
    of a random ``sample`` of the pool (so about that share of the pool) into slabs of about
    the mean size: along a leading principal direction of their sampled members, at the
    quantiles of their projections.

    k-means cells are uneven where a class has no inner structure: the centroid nearest a
    blob's middle is the nearest of all for many of its samples (on the benchmark's largest
    pool the largest cell held many times the mean), and every member of a cell scans all of
    its probed cells, so those cells set the cost, far above the budget of :data:`SCANNED`.
    Learned from the sample and applied by :func:`_cut` as each block is assigned, the cut
    needs no second read of the pool (cutting the assigned cells instead read every large
    cell's members again, scattered reads that were slow on disk; the measurements:
    ``benchmarks/results/query_scaling.md``).

    Returns
    -------
    direction : torch.Tensor of shape (n_lists, d)
        Each large cell's cutting direction (zero for the others).
    bounds : torch.Tensor of shape (n_lists, n_cuts)
        Each large cell's slab boundaries along it, increasing, padded with +inf (all +inf
        for the others).
    first_slab : torch.Tensor of shape (n_lists,), int64
        The cell number of each large cell's second slab (its first keeps the cell's number).
    n_cells : int
        Cells after the cut.
    """
    counts = torch.bincount(sample_cell, minlength=n_lists)
    mean = len(sample) / n_lists
    large = torch.nonzero(counts > MAX_CELL_FACTOR * mean).reshape(-1).tolist()
    n_slabs = [math.ceil(int(counts[c]) / mean) for c in large]
    direction = torch.zeros(n_lists, sample.shape[1])
    bounds = torch.full((n_lists, max(n_slabs, default=1) - 1), math.inf)
    first_slab = torch.zeros(n_lists, dtype=torch.int64)
    n_cells = n_lists
    for c, slabs in zip(large, n_slabs):
        members = sample[sample_cell == c]
        # The direction from half the members, the quantiles from the other half: fitted to
        # fewer points than dimensions, a direction overfits them (their spread along it is
        # the widest of all, the pool's is not), and the quantiles of the same points then
        # made slabs of 3 times the mean size in the pool's middle.
        direction[c] = _principal_direction(members[0::2])
        bounds[c, :slabs - 1] = torch.quantile(members[1::2] @ direction[c], torch.arange(1, slabs) / slabs)
        first_slab[c], n_cells = n_cells, n_cells + slabs - 1
    return direction, bounds, first_slab, n_cells


def _cut(block, cell, rule):
    """The cells of the rows of ``block`` after :func:`_slab_rule`'s cut (``cell`` updated)."""
    direction, bounds, first_slab, _ = rule
    if bounds.shape[1] == 0:
        return cell
    rows = torch.nonzero(bounds[cell, 0] < math.inf).reshape(-1)  # members of large cells
    large = cell[rows]
    slab = (torch.linalg.vecdot(block[rows], direction[large])[:, None] > bounds[large]).sum(1)
    cell[rows] = torch.where(slab == 0, large, first_slab[large] + slab - 1)
    return cell


def _principal_direction(X, iterations: int = 10):
    """A leading principal direction of the rows of ``X``, by power iteration (a slab cut
    needs a direction of large spread, not the exact first one)."""
    centred = X - X.mean(0)
    # Start from the member farthest from the mean: deterministic, and rarely orthogonal
    # to the leading direction.
    direction = centred[torch.argmax(torch.linalg.vector_norm(centred, dim=1))]
    for _ in range(iterations):
        direction = torch.nn.functional.normalize(centred.T @ (centred @ direction), dim=0)
    return direction


def _shortlist_projection(centers):
    """``(basis, projected centers)`` for :func:`_nearest_center`, or None where scoring every
    center in full costs less than the projection, the shortlist and its re-ranking. The
    projected centers are int8 where the scan's products are (:func:`_scan_dtype`)."""
    n_lists, d = centers.shape
    if ASSIGN_DIMS * (d + n_lists) + ASSIGN_SHORTLIST * d >= n_lists * d:
        return None
    # The centers' leading right singular vectors keep most of their inner products.
    basis = torch.linalg.svd(centers, full_matrices=False)[2][:ASSIGN_DIMS].T.contiguous()
    projected = centers @ basis
    if _scan_dtype() == torch.int8:
        projected = _quantize(projected, torch.empty(projected.shape, dtype=torch.int8))
    return basis, projected


def _nearest_center(block, centers, projection):
    """Each row's most similar center: all centers scored in the projection, the
    :data:`ASSIGN_SHORTLIST` best re-ranked with exact inner products."""
    if projection is None:
        return torch.argmax(block @ centers.T, dim=1)
    basis, projected = projection
    nearest = torch.empty(len(block), dtype=torch.int64)
    # SCAN_ROWS rows at a time: the gathered shortlist then stays in cache.
    for rows in row_blocks(len(block), 1, SCAN_ROWS):
        x = block[rows]
        scores = x @ basis
        if projected.dtype == torch.int8:
            scores = _quantize(scores, torch.empty(scores.shape, dtype=torch.int8))
        shortlist = torch.topk(_product(scores, projected), ASSIGN_SHORTLIST, dim=1)[1]
        exact = torch.linalg.vecdot(centers[shortlist], x[:, None, :])
        nearest[rows] = torch.gather(shortlist, 1, exact.argmax(1, keepdim=True))[:, 0]
    return nearest


def _select(S, n_keep: int):
    """Column indices of the ``n_keep`` largest entries of each row of ``S`` (unordered).

    By groups, exact up to ties: the largest entries lie in the ``n_keep`` column groups with
    the largest maxima, so a top-k over group maxima, then over those groups' members,
    replaces a top-k over every column; the group maxima are selected the same way while
    their count divides into groups (torch's top-k over 1,250 columns took 10 times the
    reduction that makes them, so the product's cost, not the selection's, then rules).
    Group ``j`` holds the columns ``j, j + w, ..., j + (GROUP - 1) w`` of ``S``'s width
    ``GROUP * w``, so the maxima are one vectorised reduction.
    """
    b, width = S.shape
    n_groups = width // GROUP
    if n_groups <= n_keep or width % GROUP:
        return torch.topk(S, n_keep, dim=1)[1]
    top_groups = _select(S.view(b, GROUP, n_groups).amax(1), n_keep)
    columns = (top_groups[:, None, :] + n_groups * torch.arange(GROUP)[:, None]).reshape(b, -1)
    return torch.gather(columns, 1, torch.topk(torch.gather(S, 1, columns), n_keep, dim=1)[1])


def approximate_knn(F, k: int, rng):
    """Inverted-file self-join with exact re-ranking (see the module docstring)."""
    F = as_matrix(F)
    n, d = F.shape
    dtype = _scan_dtype()
    n_lists = max(1, min(n // TRAIN_PER_LIST, round(math.sqrt(n))))
    centers, cell = _cells(F, rng, n_lists)
    n_lists = len(centers)  # large cells were cut
    order = torch.argsort(cell, stable=True)
    counts = torch.bincount(cell, minlength=n_lists)
    start = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    members = [order[start[c]:start[c + 1]] for c in range(n_lists)]
    n_probe = max(1, min(n_lists, round(SCANNED * n_lists / n)))
    probes = torch.topk(centers @ centers.T, n_probe, dim=1)[1].tolist()
    # On disk, the pool in cell order: a cell's rows are then one read, not a scattered gather.
    by_cell = F.reordered(order) if isinstance(F, DiskMatrix) else None

    n_cand = CANDIDATE_FACTOR * k
    index = torch.full((n, k), -1, dtype=torch.int64)
    sim = torch.full((n, k), -math.inf)
    # The cell's own members open its target list, so queries[i] is targets[i].
    scanned = [[c] + [p for p in probes[c] if p != c] for c in range(n_lists)]
    sizes = [int(counts[cells].sum()) for cells in scanned]
    # Buffers for the largest target list, reused by every cell: allocations of a new size
    # per cell fragment the C heap (resident memory grew by gigabytes on large disk pools).
    width = max(sizes) + GROUP ** SELECT_LEVELS
    Ft_buffer = torch.empty(width, d)
    # int8 scans a rounded copy of the gathered rows; float32 scans those rows themselves.
    scan_buffer = torch.empty(width, d, dtype=torch.int8) if dtype == torch.int8 else Ft_buffer
    S_buffer = torch.empty(SCAN_ROWS * width, dtype=torch.int32 if dtype == torch.int8 else dtype)
    masked = torch.iinfo(torch.int32).min if dtype == torch.int8 else -math.inf
    cand_buffer = torch.empty(SCAN_ROWS * n_cand, d)
    for c, cells in enumerate(scanned):
        queries, m = members[c], sizes[c]
        if len(queries) == 0 or m <= k:
            continue  # left to the exact fallback below
        targets = torch.cat([members[p] for p in cells])
        Ft = Ft_buffer[:m]
        if by_cell is None:
            torch.index_select(F, 0, targets, out=Ft)
        else:
            torch.cat([by_cell[int(start[p]):int(start[p + 1])] for p in cells], out=Ft)
        # Zero rows pad the width for _select's groups; their columns are masked.
        Ft_scan = scan_buffer[:m + (-m % GROUP ** SELECT_LEVELS)]
        if dtype == torch.int8:
            _quantize(Ft, Ft_scan[:m])
        Ft_scan[m:] = 0
        keep = min(n_cand, m - 1)
        for rows in row_blocks(len(queries), 1, SCAN_ROWS):
            b = rows.stop - rows.start
            S = _product(Ft_scan[rows], Ft_scan, S_buffer[:b * len(Ft_scan)].view(b, len(Ft_scan)))
            own = torch.arange(rows.start, rows.stop)
            S[own - rows.start, own] = masked
            S[:, m:] = masked
            cand = _select(S, keep)
            invalid = (cand == own[:, None]) | (cand >= m)  # only ever ties at the masked value
            cand[invalid] = 0
            Fc = torch.index_select(Ft, 0, cand.reshape(-1), out=cand_buffer[:cand.numel()]).view(b, keep, d)
            exact = torch.linalg.vecdot(Fc, Ft[rows, None, :])  # faster than bmm for these shapes
            exact[invalid] = -math.inf
            top_sim, top = torch.topk(exact, k, dim=1)
            sim[queries[rows]] = top_sim
            index[queries[rows]] = targets[torch.gather(cand, 1, top)]
    short = torch.nonzero(index[:, 0] < 0).reshape(-1)
    if len(short):
        index[short], sim[short] = exact_knn(F, k, short)
    return index, sim
