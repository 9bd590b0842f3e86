"""Each low-budget method's defining behaviour on small constructed inputs (no reference
library needed; ``test_reference.py`` compares with scikit-activeml where it imports)."""
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from modal_vlm.strategies import (dropquery_query, maxherding_query, probcover_query, typiclust_query,
                                  uherding_query)
from modal_vlm.strategies import herding, probcover
from modal_vlm.strategies.herding import (calibrated_temperature, expected_calibration_error, kernel_herding,
                                          margin_uncertainty, smallest_labeled_distance)
from modal_vlm.strategies.probcover import delta_graph, max_coverage, nearest_other_cluster, probcover_select
from modal_vlm.strategies.typiclust import typicality, typiclust_select

LOW_BUDGET = [typiclust_query, probcover_query, maxherding_query, uherding_query, dropquery_query]


def unit(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def blobs(sizes, d=8, spread=0.05, seed=0):
    """Groups of the given sizes around orthogonal directions; returns (features, group)."""
    rng = np.random.default_rng(seed)
    F = np.concatenate([np.eye(d)[g] + spread * rng.normal(size=(size, d)) for g, size in enumerate(sizes)])
    return unit(F), np.repeat(np.arange(len(sizes)), sizes)


def learner(clf, X_labeled, y_labeled):
    return SimpleNamespace(estimator=clf, X_training=X_labeled, y_training=np.asarray(y_labeled))


# --- TypiClust --------------------------------------------------------------------------


def test_typicality_is_the_inverse_mean_squared_distance_to_the_k_nearest():
    F = unit(np.random.default_rng(1).normal(size=(30, 4)))
    D2 = ((F[:, None] - F[None]) ** 2).sum(-1)
    np.fill_diagonal(D2, np.inf)
    expected = 1 / (np.sort(D2, 1)[:, :5].mean(1) + 1e-5)
    np.testing.assert_allclose(typicality(F, 5), expected, rtol=1e-4)
    np.testing.assert_allclose(typicality(F[:9], 20), 1 / (np.sort(D2[:9, :9], 1)[:, :4].mean(1) + 1e-5), rtol=1e-4)
    assert typicality(F[:1], 20).tolist() == [1.0]


def test_typiclust_takes_the_most_typical_sample_of_each_cluster_largest_first():
    F, group = blobs([50, 35, 20])
    picks, cluster, scores = typiclust_select(F, 3, np.random.RandomState(0))
    assert group[picks].tolist() == [0, 1, 2]  # the largest cluster first
    for pick in picks:
        members = np.flatnonzero(group == group[pick])
        assert pick == members[np.argmax(typicality(F[members], 20))]
        assert len(set(cluster[members].tolist())) == 1 and not np.isnan(scores[members]).any()


def test_typiclust_skips_clusters_that_hold_a_label():
    F, group = blobs([40, 40, 40, 40])
    labeled = F[group == 1][:2]
    pool = np.delete(F, np.flatnonzero(group == 1)[:2], axis=0)
    pool_group = np.delete(group, np.flatnonzero(group == 1)[:2])
    picks, _, _ = typiclust_select(pool, 3, np.random.RandomState(0), labeled_features=labeled)
    assert sorted(pool_group[picks].tolist()) == [0, 2, 3]


def test_typiclust_picks_small_clusters_last_and_cycles_through_the_large_ones():
    F, group = blobs([8, 6, 4])
    # K = 3 clusters: the group of 4 is at most MIN_CLUSTER_SIZE, so the large ones come round
    # until they are spent (the authors leave the small one out).
    picks, _, _ = typiclust_select(F, 16, np.random.RandomState(0), max_clusters=3)
    assert group[picks].tolist() == [0, 1] * 6 + [0, 0, 2, 2]


def test_typiclust_returns_a_full_batch_on_duplicates():
    F, _ = blobs([3, 3, 2])
    F = np.repeat(F, 6, axis=0)  # 8 distinct embeddings, 48 samples
    picks = typiclust_query(_fake(F), np.arange(48), 20, random_state=0)
    assert len(set(picks.tolist())) == 20


# --- ProbCover --------------------------------------------------------------------------


def test_delta_graph_holds_exactly_the_pairs_closer_than_delta(monkeypatch):
    monkeypatch.setattr(probcover, "BLOCK_BYTES", 4 * 7 * 7)  # blocks of 7 x 7 pairs
    F = unit(np.random.default_rng(2).normal(size=(40, 3)))
    x, y = delta_graph(probcover.unit_rows(F), 0.6)
    D = np.linalg.norm(F[:, None] - F[None], axis=-1)
    assert set(zip(x.tolist(), y.tolist())) == set(zip(*np.nonzero(D < 0.6)))


def test_nearest_other_cluster_and_the_purity_quantile(monkeypatch):
    monkeypatch.setattr(probcover, "BLOCK_BYTES", 4 * 5 * 5)
    F = unit(np.random.default_rng(3).normal(size=(30, 3)))
    cluster = (F[:, 0] > 0).astype(int)
    D = np.linalg.norm(F[:, None] - F[None], axis=-1)
    expected = np.where(cluster[:, None] != cluster[None], D, np.inf).min(1)
    np.testing.assert_allclose(nearest_other_cluster(probcover.unit_rows(F), cluster, np.arange(30)), expected,
                               atol=1e-5)
    # Well-separated groups: k-means finds them, and delta is the largest radius with 90% pure balls.
    F, group = blobs([30, 30, 30], d=3, spread=0.15)
    delta = probcover.purity_delta(F, 3, np.random.RandomState(0), alpha=0.9)
    D = np.linalg.norm(F[:, None] - F[None], axis=-1)

    def purity(radius):
        return np.mean([(group[D[i] < radius] == group[i]).all() for i in range(len(F))])

    assert purity(delta) >= 0.9 > purity(delta + 1e-4)


def test_max_coverage_always_takes_the_largest_new_coverage():
    rng = np.random.default_rng(4)
    F = unit(rng.normal(size=(60, 2)))
    x, y = delta_graph(probcover.unit_rows(F), 0.5)
    covered0 = np.zeros(60, dtype=bool)
    covered0[:5] = True
    picks, degree = max_coverage(x, y, 60, 6, np.random.RandomState(0), covered0)
    reach = np.zeros((60, 60), dtype=bool)
    reach[x, y] = True
    np.testing.assert_array_equal(degree, (reach & ~covered0).sum(1))
    covered, taken = covered0.copy(), np.zeros(60, dtype=bool)
    for pick in picks:
        gain = np.where(taken, -1, (reach & ~covered).sum(1))
        assert gain[pick] == gain.max()
        covered |= reach[pick]
        taken[pick] = True


def test_probcover_covers_the_labeled_groups_first_and_then_picks_at_random():
    angles = np.deg2rad(np.r_[0:8, 60:65, 120:123])  # groups of 8, 5 and 3, 1 degree apart
    F = np.stack([np.cos(angles), np.sin(angles)], 1)
    group = np.repeat([0, 1, 2], [8, 5, 3])
    picks, _, covered, delta = probcover_select(F[1:], 5, np.random.RandomState(0), labeled_features=F[:1],
                                                delta=0.2)
    assert covered.sum() == 7 and delta == 0.2  # the labeled sample covers its group
    assert group[1:][picks[:2]].tolist() == [1, 2] and len(set(picks.tolist())) == 5


def test_probcover_counts_coverage_on_sampled_targets_above_the_edge_budget(monkeypatch):
    F, group = blobs([60, 40, 20], d=4, spread=0.02)
    monkeypatch.setattr(probcover, "MAX_EDGES", 2000)  # ~5,600 edges: about a third of the targets kept
    picks, degree, _, _ = probcover_select(F, 3, np.random.RandomState(0), delta=0.5)
    assert group[picks].tolist() == [0, 1, 2]
    assert degree.max() < 60 and degree.sum() <= 2 * 2000


def test_probcover_auto_delta_uses_one_cluster_per_class(fake):
    clf, X = fake
    _, metrics = probcover_query(clf, X, 3, random_state=0, return_metrics=True)
    assert 0 < metrics["delta"] <= 2
    with pytest.raises(ValueError, match="delta"):
        probcover_query(clf, X, 3, delta=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        probcover_query(clf, X, 3, alpha=1.0)


# --- MaxHerding / Uncertainty Herding --------------------------------------------------------------


def naive_herding(F, b, sigma, L=None, w=None):
    """Plain greedy on the full kernel matrix."""
    K = np.exp(-((F[:, None] - F[None]) ** 2).sum(-1) / sigma**2)
    m = np.zeros(len(F)) if L is None else np.exp(-((F[:, None] - L[None]) ** 2).sum(-1) / sigma**2).max(1)
    w = np.ones(len(F)) if w is None else w
    picks = []
    for _ in range(b):
        gain = (np.clip(K - m[None], 0, None) * w[None]).sum(1)
        gain[picks] = -np.inf
        picks.append(int(np.argmax(gain)))
        m = np.maximum(m, K[picks[-1]])
    return picks


@pytest.mark.parametrize("lazy_block", [1, 3, 64])
def test_kernel_herding_is_the_plain_greedy(monkeypatch, lazy_block):
    monkeypatch.setattr(herding, "LAZY_BLOCK", lazy_block)
    rng = np.random.default_rng(5)
    F, L, w = unit(rng.normal(size=(80, 5))), unit(rng.normal(size=(4, 5))), rng.uniform(size=80)
    for sigma in (0.5, 1.0):
        assert kernel_herding(F, 8, np.random.RandomState(0), sigma=sigma)[0].tolist() == naive_herding(F, 8, sigma)
        picks = kernel_herding(F, 8, np.random.RandomState(0), labeled_features=L, weights=w, sigma=sigma)[0]
        assert picks.tolist() == naive_herding(F, 8, sigma, L, w)


def test_kernel_herding_samples_its_candidates_on_large_pools():
    F = unit(np.random.default_rng(6).normal(size=(100, 4)))
    picks, gain = kernel_herding(F, 5, np.random.RandomState(0), max_candidates=30)
    candidates = np.flatnonzero(~np.isnan(gain))
    assert len(candidates) == 30 and set(picks.tolist()) <= set(candidates.tolist())
    assert picks.tolist() == candidates[naive_herding(F[candidates], 5, 1.0)].tolist()


def test_margin_uncertainty_and_temperature():
    proba = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    np.testing.assert_allclose(margin_uncertainty(proba), [0.5, 0.95], atol=1e-6)
    hotter = margin_uncertainty(proba, temperature=3.0)
    assert (hotter > margin_uncertainty(proba)).all() and hotter.max() <= 1.0


class _Overconfident(ClassifierMixin, BaseEstimator):
    """Predicts class ``X % 2`` with probability 0.99 for even ``X``, wrongly half of the time."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        X = np.asarray(X)
        p = np.where(X % 4 < 2, 0.99, 0.01)
        return np.stack([p, 1 - p], 1)


def test_calibrated_temperature_softens_an_overconfident_model():
    X = np.arange(40)
    y = X % 2  # the model is right on half of the samples, with confidence 0.99
    T = calibrated_temperature(_Overconfident(), X, y)
    assert T > 3
    assert expected_calibration_error(_Overconfident().fit(X, y).predict_proba(X), y, [0, 1]) > 0.4
    assert calibrated_temperature(_Overconfident(), X[:3], y[:3]) == 1.0  # too few to split
    with pytest.raises(TypeError, match="temperature=1.0"):
        calibrated_temperature(object(), X, y)


def test_uherding_covers_the_uncertain_group(fake_classifier):
    F, group = blobs([20, 20], d=4, spread=0.2)
    # The model is sure about group 0 and unsure about group 1.
    proba = np.where(group[:, None] == 0, [0.99, 0.01], [0.55, 0.45])
    clf = fake_classifier(F, proba)
    labeled = learner(clf, np.array([0, 20]), [0, 1])
    pool = np.arange(1, 40)[np.arange(1, 40) != 20]
    idx, metrics = uherding_query(labeled, pool, 4, random_state=0, temperature=1.0, return_metrics=True)
    assert (group[pool[idx]] == 1).all()
    assert metrics["sigma"] == pytest.approx(np.linalg.norm(F[0] - F[20]), rel=1e-5)
    assert group[pool[maxherding_query(labeled, pool, 4, random_state=0)]].tolist().count(0) >= 1


def test_smallest_labeled_distance_ignores_duplicates():
    L = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    assert smallest_labeled_distance(L) == pytest.approx(np.linalg.norm(L[2] - L[3]), rel=1e-5)
    assert smallest_labeled_distance(L[:2]) is None and smallest_labeled_distance(L[:1]) is None
    # 2 - 2 cos in float32 would put these samples up to 1e-3 from themselves.
    F = unit(np.random.default_rng(8).normal(size=(70, 384))).astype(np.float32)
    D = np.linalg.norm(F[:, None].astype(np.float64) - F[None], axis=-1)
    np.fill_diagonal(D, np.inf)
    assert smallest_labeled_distance(F) == pytest.approx(D.min(), rel=1e-4)


def test_herding_parameters_are_validated(fake):
    clf, X = fake
    for kwargs in ({"sigma": 0}, {"max_candidates": 0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            maxherding_query(clf, X, 2, **kwargs)
    with pytest.raises(ValueError, match="temperature"):
        uherding_query(clf, X, 2, temperature="hot")


# --- DropQuery --------------------------------------------------------------------------


class _Linear:
    """A classifier on embeddings: class = sign of the first coordinate, probabilities from it."""

    classes_ = np.array([0, 1])

    def __init__(self, features):
        self.features = np.asarray(features, np.float32)

    def transform(self, X):
        return self.features[np.asarray(X)]

    def predict_proba_from_features(self, F):
        score = 5.0 * np.asarray(F)[:, 0]
        p = 1 / (1 + np.exp(-score))
        return np.stack([1 - p, p], 1)

    def predict_proba(self, X):
        return self.predict_proba_from_features(self.transform(X))


def _fake(F):
    return _Linear(F)


def _boundary_pool(n=400, d=64, seed=7):
    """Samples whose first coordinate is a shared sign signal of varying strength."""
    rng = np.random.default_rng(seed)
    strength = np.r_[np.full(n // 2, 3.0), np.full(n - n // 2, 0.02)]  # far from / near the boundary
    F = rng.normal(size=(n, d)) * 0.01
    F[:, 0] = strength * np.sign(rng.normal(size=n))
    return F, strength < 1


def test_dropout_disagreement_finds_the_samples_near_the_boundary():
    F, near = _boundary_pool()
    clf = _Linear(F)
    pool = np.arange(10, len(F))
    idx, metrics = dropquery_query(learner(clf, np.arange(10), np.zeros(10, int)), pool, 5, random_state=0,
                                   return_metrics=True)
    # Dropping the first coordinate (p = 0.75) flips the score to ~0; only near samples flip when kept.
    assert metrics["disagreement"].shape == (len(pool),) and metrics["threshold"] in (0, 1)
    assert metrics["disagreement"][~near[pool]].max() <= metrics["disagreement"][near[pool]].max()
    assert len(set(idx.tolist())) == 5


def test_dropquery_lowers_the_threshold_and_pads_with_random_samples():
    F, _ = _boundary_pool()
    clf = _Linear(F)
    labeled = learner(clf, np.arange(4), np.zeros(4, int))
    pool = np.arange(4, len(F))
    _, metrics = dropquery_query(labeled, pool, 20, random_state=0, return_metrics=True)
    assert metrics["threshold"] < 1  # 25 x 20 = 500 candidates cannot exceed one disagreement
    # No dropout: nothing disagrees, every candidate is missing: random samples fill the batch.
    idx, metrics = dropquery_query(labeled, pool, 6, random_state=0, dropout=0.0, return_metrics=True)
    assert metrics["threshold"] == 0 and not metrics["disagreement"].any() and len(set(idx.tolist())) == 6


def test_dropquery_centroid_start_takes_one_sample_per_group():
    F, group = blobs([30, 25, 20])
    idx, metrics = dropquery_query(_Linear(F), np.arange(75), 3, random_state=0, return_metrics=True)
    assert sorted(group[idx].tolist()) == [0, 1, 2] and metrics["threshold"] is None
    _, metrics = dropquery_query(_Linear(F), np.arange(75), 3, random_state=0, centroid_start=False,
                                 return_metrics=True)
    assert metrics["threshold"] is not None


def test_dropquery_parameters_are_validated(fake):
    clf, X = fake
    for kwargs, match in (({"dropout": 1.0}, "dropout"), ({"n_dropout": 0}, "n_dropout"),
                          ({"candidates_per_query": 0}, "candidates_per_query")):
        with pytest.raises(ValueError, match=match):
            dropquery_query(clf, X, 2, **kwargs)


# --- Every method ------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", LOW_BUDGET, ids=lambda s: s.__name__)
@pytest.mark.parametrize("distinct", [6, 1])
def test_full_batch_when_kmeans_finds_fewer_clusters_than_asked(strategy, distinct):
    """A pool of 6 distinct embeddings (or a single one) repeated: more picks than distinct samples."""
    F, _ = blobs([2, 2, 2], d=4)
    F = np.repeat(F[:distinct], 30 // distinct, axis=0)
    clf = _Linear(F)
    kwargs = {"temperature": 1.0} if strategy is uherding_query else {}
    for labeled in (None, learner(clf, np.arange(3), np.zeros(3, int))):
        pool = np.arange(3, 30) if labeled else np.arange(30)
        idx = strategy(labeled or clf, pool, 12, random_state=0, **kwargs)
        assert len(set(np.asarray(idx).tolist())) == 12


@pytest.mark.parametrize("strategy", LOW_BUDGET, ids=lambda s: s.__name__)
def test_seeded_and_reproducible_with_labels(strategy):
    F, _ = blobs([30, 20, 10], d=6, spread=0.2)
    clf = _Linear(F)
    labeled = learner(clf, np.arange(6), np.array([0, 1, 0, 1, 0, 1]))
    kwargs = {"temperature": 1.0} if strategy is uherding_query else {}
    a = strategy(labeled, np.arange(6, 60), 5, random_state=1, **kwargs)
    b = strategy(labeled, np.arange(6, 60), 5, random_state=1, **kwargs)
    np.testing.assert_array_equal(a, b)
