"""The large-pool machinery on small pools: approximate kNN, k-means subsampling, modAL detection."""
import numpy as np
import pytest
import torch

from modal_vlm.embeddings.disk import DiskMatrix
from modal_vlm.strategies import _knn, _linalg, _result, cec_query
from modal_vlm.strategies._kmeans import weighted_kmeans
from modal_vlm.strategies.cec import uncertainty_weighted_clustering


def blobs(n, d=32, n_blobs=20, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, d))
    F = centres[rng.integers(0, n_blobs, n)] + noise * rng.normal(size=(n, d))
    return torch.from_numpy((F / np.linalg.norm(F, axis=1, keepdims=True)).astype(np.float32))


def test_exact_knn_matches_brute_force_and_excludes_self():
    F = blobs(300)
    index, sim = _knn.exact_knn(F, 5)
    S = (F @ F.T).numpy()
    np.fill_diagonal(S, -np.inf)
    np.testing.assert_array_equal(np.sort(index.numpy(), 1), np.sort(np.argsort(-S, 1)[:, :5], 1))
    np.testing.assert_allclose(sim.numpy(), -np.sort(-S, 1)[:, :5], rtol=1e-5)


INT8_PRODUCT = hasattr(torch, "_int_mm")


@pytest.mark.parametrize("scan_dtype", [
    pytest.param(torch.int8, marks=pytest.mark.skipif(not INT8_PRODUCT, reason="this torch has no int8 product")),
    torch.float32])
def test_approximate_knn_returns_true_neighbours_with_exact_similarities(monkeypatch, scan_dtype):
    monkeypatch.setattr(_knn, "_scan_dtype", lambda: scan_dtype)  # both product paths, on any CPU
    monkeypatch.setattr(_knn, "SCANNED", 160)  # 3 of ~55 cells: a real approximation
    F = blobs(3000)
    index, sim = _knn.knn(F, 10, np.random.RandomState(0), method="approximate")
    rows = torch.arange(len(F))[:, None]
    assert not (index == rows).any()
    assert all(len(set(r)) == 10 for r in index.tolist())
    np.testing.assert_allclose(sim.numpy(), (F[:, None, :] * F[index]).sum(-1).numpy(), atol=1e-5)
    assert (sim[:, :-1] >= sim[:, 1:]).all()
    exact, exact_sim = _knn.exact_knn(F, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(index.tolist(), exact.tolist())])
    assert recall > 0.9 and sim.mean() > 0.99 * exact_sim.mean()
    again, _ = _knn.knn(F, 10, np.random.RandomState(0), method="approximate")
    torch.testing.assert_close(index, again)


@pytest.mark.parametrize("scan_dtype", [
    pytest.param(torch.int8, marks=pytest.mark.skipif(not INT8_PRODUCT, reason="this torch has no int8 product")),
    torch.float32])
def test_cell_assignment_by_shortlist_agrees_with_full_scoring(monkeypatch, scan_dtype):
    monkeypatch.setattr(_knn, "_scan_dtype", lambda: scan_dtype)
    F = blobs(3000, d=256, n_blobs=40)
    centers = F[torch.randperm(len(F), generator=torch.Generator().manual_seed(0))[:400]]
    full = torch.argmax(F @ centers.T, 1)
    projection = _knn._shortlist_projection(centers)
    assert projection is not None  # 400 centers in 256-d: the shortlist costs less
    shortlist = _knn._nearest_center(F, centers, projection)
    assert (shortlist == full).float().mean() > 0.98
    # Where a shortlist would cost more (few centers), every center is scored in full.
    assert _knn._shortlist_projection(centers[:50]) is None
    torch.testing.assert_close(_knn._nearest_center(F, centers[:50], None),
                               torch.argmax(F @ centers[:50].T, 1))


def test_large_cells_are_cut_into_slabs_of_about_the_mean_size():
    F = blobs(1000, d=16, n_blobs=4)
    train_cell = torch.zeros(1000, dtype=torch.int64)
    train_cell[900:] = torch.arange(100) % 9 + 1  # cell 0 holds 900 samples, cells 1..9 about 11 each
    rule = _knn._slab_rule(F, train_cell, 10)
    assert rule[-1] == 18  # cell 0 in 9 slabs of the mean size, 100
    cell = _knn._cut(F, train_cell.clone(), rule)
    counts = torch.bincount(cell, minlength=18)
    assert 60 <= counts[[0] + list(range(10, 18))].min() and counts.max() <= 140  # at the sample's quantiles
    torch.testing.assert_close(cell[900:], train_cell[900:])  # small cells untouched
    # The cut is a rule: any block of the pool is cut as the sample was.
    torch.testing.assert_close(_knn._cut(F[::7], train_cell[::7].clone(), rule), cell[::7])
    # Slabs are slices along one direction: their projections do not overlap.
    along = F @ rule[0][0]
    slab_of = {int(c): along[cell == c] for c in [0] + list(range(10, 18))}
    ranges = sorted((float(v.min()), float(v.max())) for v in slab_of.values())
    assert all(hi < lo for (_, hi), (lo, _) in zip(ranges, ranges[1:]))
    nothing = _knn._slab_rule(F, torch.randperm(1000) % 10, 10)
    assert nothing[-1] == 10  # nothing above twice the mean: nothing changes
    torch.testing.assert_close(_knn._cut(F, train_cell.clone() % 10, nothing), train_cell % 10)


def test_slab_rule_learned_from_a_sample_cuts_the_pool_evenly():
    # One isotropic cell in 256-d and a sample of 300 of its members (fewer than dimensions):
    # the pool's members, unseen, must fall evenly into the slabs too.
    generator = torch.Generator().manual_seed(0)
    centre = torch.nn.functional.normalize(torch.randn(256, generator=generator), dim=0)
    pool = torch.nn.functional.normalize(centre + 0.1 * torch.randn(6000, 256, generator=generator), dim=1)
    sample, rest = pool[:300], pool[300:]
    rule = _knn._slab_rule(sample, torch.zeros(300, dtype=torch.int64), 6)  # 6 times the mean: 6 slabs
    assert rule[-1] == 11
    counts = torch.bincount(_knn._cut(rest, torch.zeros(len(rest), dtype=torch.int64), rule), minlength=11)
    counts = counts[[0] + list(range(6, 11))]
    assert counts.max() <= 1.5 * len(rest) / 6 and counts.min() >= 0.5 * len(rest) / 6


def test_cells_are_even_and_centred_on_their_members():
    F = blobs(4000, d=128, n_blobs=2, noise=0.5)  # two blobs, no inner structure: k-means is uneven
    centers, cell = _knn._cells(F, np.random.RandomState(0), 40)
    counts = torch.bincount(cell, minlength=len(centers))
    assert len(centers) > 40 and counts.max() <= 2.5 * len(F) / 40
    for c in torch.nonzero(counts).reshape(-1).tolist():
        torch.testing.assert_close(centers[c], torch.nn.functional.normalize(F[cell == c].mean(0), dim=0))


def test_int8_products_only_with_integer_dot_product_instructions(monkeypatch):
    monkeypatch.setattr(_knn, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert _knn._scan_dtype.__wrapped__() is torch.float32
    monkeypatch.setattr(_knn, "_cpu_flags", lambda: {"avx2", "avx512_vnni"})
    assert _knn._scan_dtype.__wrapped__() is (torch.int8 if INT8_PRODUCT else torch.float32)
    monkeypatch.delattr(torch, "_int_mm", raising=False)  # an older torch: float32 after all
    assert _knn._scan_dtype.__wrapped__() is torch.float32


@pytest.mark.skipif(not INT8_PRODUCT, reason="this torch has no int8 product")
def test_int8_scan_ranks_as_the_float_products_do():
    F = blobs(400, d=64)
    Q = _knn._quantize(F, torch.empty(F.shape, dtype=torch.int8))
    assert int(Q.abs().max()) == 127
    S = _knn._product(Q, Q, torch.empty(400, 400, dtype=torch.int32)).double()
    scale = 127.0 / float(F.abs().max())
    np.testing.assert_allclose(S.numpy() / scale**2, (F @ F.T).double().numpy(), atol=0.02)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
def test_selection_by_groups_finds_the_top_columns(dtype):
    generator = torch.Generator().manual_seed(0)  # not the global RNG
    S = torch.randperm(50 * 8 * 8 * 10, generator=generator).reshape(50, -1).to(dtype)  # no ties
    for keep in (3, 9, 20, 79, 85):  # fewer and more than the 80 groups and their 10 groups
        picked = _knn._select(S, keep)
        expected = torch.topk(S, keep, dim=1)[1]
        assert torch.equal(picked.sort(1).values, expected.sort(1).values)


def test_approximate_knn_falls_back_to_exact_for_tiny_cells(monkeypatch):
    monkeypatch.setattr(_knn, "TRAIN_PER_LIST", 1)  # 8 cells of ~8 samples, 1 probed: < k + 1
    monkeypatch.setattr(_knn, "SCANNED", 8)  # 1 cell probed
    exact_rows = []
    exact_knn = _knn.exact_knn
    monkeypatch.setattr(_knn, "exact_knn", lambda F, k, q=None: exact_rows.append(len(q)) or exact_knn(F, k, q))
    F = blobs(64, n_blobs=3)
    index, sim = _knn.approximate_knn(F, 20, np.random.RandomState(0))
    exact, exact_sim = exact_knn(F, 20)
    assert exact_rows and exact_rows[0] > 0
    torch.testing.assert_close(sim, exact_sim)


def test_exact_knn_blocks_the_targets_of_a_disk_pool(monkeypatch, tmp_path):
    F = blobs(500)
    on_disk = np.lib.format.open_memmap(tmp_path / "F.npy", mode="w+", dtype=np.float32, shape=F.shape)
    on_disk[:] = F.numpy()
    monkeypatch.setattr(_linalg, "BLOCK_BYTES", 40 * 4 * 32)  # 40-row target blocks
    index, sim = _knn.exact_knn(DiskMatrix(on_disk), 7)
    expected, expected_sim = _knn.exact_knn(F, 7)
    torch.testing.assert_close(sim, expected_sim)
    assert (index == expected).float().mean() > 0.99  # ties may order differently


def test_auto_is_exact_up_to_the_threshold(monkeypatch):
    monkeypatch.setattr(_knn, "approximate_knn", lambda *a: pytest.fail("approximate at small n"))
    _knn.knn(blobs(50), 3, np.random.RandomState(0))
    with pytest.raises(ValueError, match="knn must be one of"):
        _knn.knn(blobs(50), 3, np.random.RandomState(0), method="faiss")


def test_weighted_kmeans_matches_weighted_means():
    X = torch.tensor([[0.0], [1.0], [10.0], [14.0]])
    centers = weighted_kmeans(X, 2, np.random.RandomState(0), weights=[1.0, 3.0, 1.0, 1.0])
    np.testing.assert_allclose(np.sort(centers.numpy()[:, 0]), [0.75, 12.0], rtol=1e-6)


def test_kmeans_on_a_subsample_then_the_whole_pool():
    # Four far-apart blobs: a 200-sample fit finds them as well as the whole pool does.
    F = np.concatenate([np.random.default_rng(i).normal(10 * i, 0.1, size=(500, 2)) for i in range(4)])
    U = np.ones(len(F))
    sub = uncertainty_weighted_clustering(F, U, 4, np.random.RandomState(0), kmeans_subsample=200)
    full = uncertainty_weighted_clustering(F, U, 4, np.random.RandomState(0), kmeans_subsample=None)
    assert sorted(i // 500 for i in sub) == sorted(i // 500 for i in full) == [0, 1, 2, 3]


def test_cec_on_a_pool_above_the_exact_threshold(monkeypatch, fake):
    clf, X = fake
    monkeypatch.setattr(_knn, "EXACT_MAX", 10)  # the 40-sample pool goes approximate
    a = cec_query(clf, X, 5, random_state=np.random.RandomState(1), kmeans_subsample=250)
    b = cec_query(clf, X, 5, random_state=1, kmeans_subsample=250)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 5


def test_installed_modal_is_detected():
    import importlib.metadata

    unpacks = _result.modal_unpacks_metrics.__wrapped__()
    version = importlib.metadata.version("modAL-python")
    assert unpacks == (tuple(int(v) for v in version.split(".")[:3]) >= (0, 4, 2))


def test_split_result_reads_every_convention():
    idx, metrics = _result.split_result(np.array([3, 1]))
    assert idx.tolist() == [3, 1] and metrics == {}
    idx, metrics = _result.split_result((np.array([2]), {"U": np.ones(3)}))
    assert idx.tolist() == [2] and set(metrics) == {"U"}
    # modAL 0.4.1's old style (indices, rows) and 0.4.2's (indices, selected scores)
    idx, metrics = _result.split_result((np.array([0, 4]), np.zeros((2, 5))))
    assert idx.tolist() == [0, 4] and metrics == {}


class SoftmaxClassifier:
    """Probabilities from embeddings only, as ClipPromptClassifier.predict_proba_from_features."""

    def __init__(self, centres, F=None):
        self.centres, self.F = centres, F

    def transform(self, X):
        return self.F[np.asarray(X)]

    def predict_proba_from_features(self, features):
        logits = 8.0 * np.asarray(features) @ self.centres.T
        P = np.exp(logits - logits.max(1, keepdims=True))
        return P / P.sum(1, keepdims=True)


def test_cec_on_a_memory_mapped_pool_reads_blocks_and_equals_the_in_memory_query(monkeypatch, tmp_path):
    from modal_vlm.embeddings import EmbeddingPool

    F = blobs(3000).numpy().astype(np.float16)
    np.save(tmp_path / "pool.npy", F)
    centres = blobs(6, seed=1).numpy()
    monkeypatch.setattr(_knn, "EXACT_MAX", 1000)  # the approximate search, on disk too,
    monkeypatch.setattr(_knn, "SCANNED", 800)  # probing some of the cells
    monkeypatch.setattr(_linalg, "BLOCK_BYTES", 4 * 32 * 256)  # 256-row blocks of the pool
    reads = []
    getitem = DiskMatrix.__getitem__
    monkeypatch.setattr(DiskMatrix, "__getitem__", lambda self, rows: reads.append(
        len(np.arange(len(self))[rows.numpy() if isinstance(rows, torch.Tensor) else rows])) or getitem(self, rows))
    pool = EmbeddingPool(tmp_path / "pool.npy", items=[f"img{i}.png" for i in range(3000)])
    # k-means on a 500-sample fit (a pool under kmeans_subsample is clustered whole, loaded).
    on_disk, metrics = cec_query(SoftmaxClassifier(centres), pool, 8, random_state=0, kmeans_subsample=500,
                                 return_metrics=True)
    assert reads and max(reads) < len(F)  # samples and blocks, never the whole pool
    in_memory, expected = cec_query(SoftmaxClassifier(centres, F.astype(np.float32)), np.arange(3000), 8,
                                    random_state=0, kmeans_subsample=500, return_metrics=True)
    np.testing.assert_array_equal(on_disk, in_memory)
    np.testing.assert_allclose(metrics["U"], expected["U"], rtol=1e-5)
    # The rest of the pool after labeling: still memory-mapped, the same rows.
    rest = pool.drop(on_disk)
    assert len(rest) == 2992 and isinstance(rest.features(), DiskMatrix)
    np.testing.assert_array_equal(rest.features()[:5].numpy(), np.delete(F, on_disk, 0)[:5].astype(np.float32))
    assert rest[[0]].tolist() == [np.delete(np.asarray(pool), on_disk)[0]]


def test_priors_over_blocks_equal_the_priors_of_the_whole(monkeypatch):
    from modal_vlm.strategies.cec import _priors_of_blocks, class_priors

    P = torch.softmax(3 * torch.randn(5000, 7, generator=torch.Generator().manual_seed(0)), 1)
    P[:300, 2] = P[300, 2]  # ties at the top
    blocks = [P[i:i + 128] for i in range(0, len(P), 128)]
    for top_n in (None, 1, 40, 5000):
        np.testing.assert_allclose(_priors_of_blocks(blocks, len(P), top_n), class_priors(P, top_n), rtol=1e-5)


def test_disk_matrix_reads_rows_as_numpy_indexes_them(tmp_path):
    F = blobs(200).numpy().astype(np.float16)
    np.save(tmp_path / "F.npy", F)
    M = DiskMatrix(np.load(tmp_path / "F.npy", mmap_mode="r"))
    assert M._file is not None  # a whole .npy: positioned reads, not the mapping
    for rows in (slice(3, 50), slice(None, None, 7), np.array([5, 4, 4, 199, 0, 6, 7]), np.array([-1, -200]),
                 torch.tensor([10, 2, 3])):
        expected = F[rows.numpy() if isinstance(rows, torch.Tensor) else rows].astype(np.float32)
        np.testing.assert_array_equal(M[rows].numpy(), expected)
    with pytest.raises(IndexError, match="out of range"):
        M[np.array([200])]
    subset = DiskMatrix(np.load(tmp_path / "F.npy", mmap_mode="r"), rows=np.array([1, 5, 9]))
    np.testing.assert_array_equal(subset[[2, 0]].numpy(), F[[9, 1]].astype(np.float32))


def test_reordered_copy_holds_the_rows_in_the_new_order_and_leaves_no_file(tmp_path):
    F = blobs(1000).numpy().astype(np.float16)
    np.save(tmp_path / "F.npy", F)
    order = np.random.default_rng(0).permutation(1000)
    copy = DiskMatrix(np.load(tmp_path / "F.npy", mmap_mode="r")).reordered(order)
    np.testing.assert_array_equal(copy[:].numpy(), F[order].astype(np.float32))
    np.testing.assert_array_equal(copy[[3, 999]].numpy(), F[order[[3, 999]]].astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["F.npy"]  # the copy has no name


def test_approximate_knn_on_disk_equals_in_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(_knn, "SCANNED", 300)
    F = blobs(2000).numpy().astype(np.float16)
    np.save(tmp_path / "F.npy", F)
    on_disk = _knn.approximate_knn(DiskMatrix(np.load(tmp_path / "F.npy", mmap_mode="r")), 5,
                                   np.random.RandomState(0))
    in_memory = _knn.approximate_knn(torch.from_numpy(F.astype(np.float32)), 5, np.random.RandomState(0))
    torch.testing.assert_close(on_disk, in_memory)
