"""Formula-level checks of the strategies on hand-computed small cases."""
import numpy as np
import pytest

from modal_vlm.strategies.badge import badge_select, gradient_embeddings
from modal_vlm.strategies.cec import (calibrated_entropy, class_priors, neighbour_uncertainty,
                                      uncertainty_weighted_clustering)
from modal_vlm.strategies.coreset import k_center_greedy
from modal_vlm.strategies.pcb import balance_by_pseudo_labels


def test_calibration_with_two_classes_and_a_known_prior():
    # Class 0 dominates: its top-2 mean is 0.85, class 1's is 0.35 (top_n = ceil(4 / 2) = 2).
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    np.testing.assert_allclose(class_priors(proba), [0.85, 0.35], rtol=1e-6)
    H, prior = calibrated_entropy(proba)
    q = (proba / prior) / (proba / prior).sum(1, keepdims=True)
    np.testing.assert_allclose(H, -(q * np.log(q)).sum(1), rtol=1e-5)
    # Calibration moves the 0.6/0.4 sample to near-uniform: q = (0.7059, 1.1429) normalised.
    np.testing.assert_allclose(q[2], [0.38182, 0.61818], atol=1e-4)
    plain, none = calibrated_entropy(proba, calibrate=False)
    assert none is None and np.argmax(plain) == 2 and np.argmax(H) == 3
    np.testing.assert_allclose(class_priors(proba, top_n=1), [0.9, 0.4], rtol=1e-6)
    np.testing.assert_allclose(class_priors(proba, top_n=99), proba.mean(0), rtol=1e-6)


def test_neighbour_weighting_on_a_toy_pool():
    # Unit vectors at angles 0, 10, 20 and 180 degrees: the last has only negative similarities.
    angles = np.deg2rad([0.0, 10.0, 20.0, 180.0])
    F = np.stack([np.cos(angles), np.sin(angles)], 1)
    H = np.array([1.0, 0.2, 0.4, 0.9])
    U, H_nb = neighbour_uncertainty(H, F, k=2, alpha=0.5, knn="exact")
    s = np.cos(np.deg2rad(10.0))
    c20 = np.cos(np.deg2rad(20.0))
    expected = np.array([
        (s * 0.2 + c20 * 0.4) / (s + c20),       # neighbours 10 and 20 degrees
        (s * 1.0 + s * 0.4) / (2 * s),           # 0 and 20 degrees, equal similarity
        (s * 0.2 + c20 * 1.0) / (s + c20),
        (1e-8 * 0.4 + 1e-8 * 0.2) / 2e-8,        # negative similarities weigh eps each
    ])
    np.testing.assert_allclose(H_nb, expected, rtol=1e-4)
    np.testing.assert_allclose(U, 0.5 * H + 0.5 * expected, rtol=1e-4)
    # An isolated uncertain outlier scores lower than its raw entropy once neighbours count.
    assert U[3] < H[3]
    U0, _ = neighbour_uncertainty(H, F, k=2, alpha=0.0)
    np.testing.assert_allclose(U0, H, rtol=1e-6)


def test_weighted_kmeans_picks_centroid_nearest_samples():
    F = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    picks = uncertainty_weighted_clustering(F, np.ones(6), 2, np.random.RandomState(0))
    assert sorted(picks.tolist()) == [1, 4]
    # A heavy weight pulls a centroid: weights 1, 1, 8 put it at 1.7, nearest sample 2.0.
    picks = uncertainty_weighted_clustering(F, np.array([1, 1, 8, 1, 1, 1.0]), 2, np.random.RandomState(0))
    assert sorted(picks.tolist()) == [2, 4]
    most = uncertainty_weighted_clustering(F, np.array([1, 5, 2, 9, 1, 1.0]), 2, np.random.RandomState(0),
                                           selection="most_uncertain")
    assert sorted(most.tolist()) == [1, 3]


def test_weight_power_sharpens_or_removes_the_pull_of_uncertainty():
    F = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    U = np.array([1, 1, 3, 1, 1, 1.0])  # weights 1, 1, 3: centroid 1.4, nearest sample 1.0
    picks = {p: sorted(uncertainty_weighted_clustering(F, U, 2, np.random.RandomState(0), weight_power=p).tolist())
             for p in (0.0, 1.0, 2.0)}
    assert picks == {0.0: [1, 4], 1.0: [1, 4], 2.0: [2, 4]}  # weights 1, 1, 9: centroid 1.73
    # Power 0 clusters unweighted, but the within-cluster rule still reads U.
    most = uncertainty_weighted_clustering(F, U, 2, np.random.RandomState(0), selection="most_uncertain",
                                           weight_power=0.0)
    assert sorted(most.tolist()) == [2, 3]
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="weight_power must be >= 0"):
            uncertainty_weighted_clustering(F, U, 2, np.random.RandomState(0), weight_power=bad)


def test_clustering_avoids_clusters_that_hold_a_label():
    # Three groups; group 0 is the heaviest (U) but holds the labeled sample.
    F = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2], [10.0], [10.1], [10.2]])
    U = np.array([9, 9, 9, 1, 1, 1, 2, 3, 2.0])
    rng = lambda: np.random.RandomState(0)  # noqa: E731
    spec = uncertainty_weighted_clustering(F, U, 1, rng(), selection="most_uncertain")
    assert spec.tolist() == [0]  # one cluster of everything: its most uncertain member
    avoid = uncertainty_weighted_clustering(F, U, 1, rng(), selection="most_uncertain",
                                            labeled_features=np.array([[0.05]]))
    assert avoid.tolist() == [7]  # K = 2 + ... clusters: the heaviest uncovered one is 10.x
    both = uncertainty_weighted_clustering(F, U, 2, rng(), labeled_features=np.array([[0.05]]))
    assert sorted(both.tolist()) == [4, 7]  # centroid members of the two uncovered groups
    # Labels in every group: picks still come, distinct.
    covered = uncertainty_weighted_clustering(F, U, 2, rng(), selection="most_uncertain",
                                              labeled_features=np.array([[0.1], [5.1], [10.1]]))
    assert len(set(covered.tolist())) == 2
    # More clusters than samples are never asked of k-means.
    small = uncertainty_weighted_clustering(F[:3], U[:3], 2, rng(), labeled_features=np.zeros((4, 1)))
    assert len(set(small.tolist())) == 2


def test_more_clusters_per_label_free_the_groups_beside_a_label():
    # Group A holds the label; group B lies close to it, C far away; B is the most uncertain.
    F = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2], [10.0], [10.1], [10.2]])
    U = np.array([1, 1, 1, 5, 5, 5, 1, 1, 1.0])
    labeled = np.array([[0.05]])
    rng = lambda: np.random.RandomState(0)  # noqa: E731
    # One cluster per label: K = 2, A and B share the covered cluster, the pick comes from C.
    one = uncertainty_weighted_clustering(F, U, 1, rng(), labeled_features=labeled)
    assert one.tolist() == [7]
    # Two per label: K = 3, B is a cluster of its own, uncovered and heaviest.
    two = uncertainty_weighted_clustering(F, U, 1, rng(), labeled_features=labeled, clusters_per_label=2)
    assert two.tolist() == [4]
    for bad in (0, 1.5, True, None):
        with pytest.raises(ValueError, match="clusters_per_label must be an integer >= 1"):
            uncertainty_weighted_clustering(F, U, 1, rng(), labeled_features=labeled, clusters_per_label=bad)


def test_covering_clusters_are_capped_for_large_labeled_sets(monkeypatch):
    from modal_vlm.strategies import cec

    made = []
    real = cec.weighted_kmeans
    monkeypatch.setattr(cec, "weighted_kmeans", lambda X, K, *a, **kw: made.append(K) or real(X, K, *a, **kw))
    monkeypatch.setattr(cec, "MAX_COVERING_CLUSTERS", 12)
    F = np.random.default_rng(0).normal(size=(200, 4))
    U = np.ones(200)
    for n_labeled, n_instances in ((3, 2), (30, 2), (30, 20)):
        picks = uncertainty_weighted_clustering(F, U, n_instances, np.random.RandomState(0),
                                                labeled_features=F[:n_labeled], clusters_per_label=2)
        assert len(set(picks.tolist())) == n_instances
    # 2 + 2 * 3 = 8 clusters; 2 + 60 capped at 12; a batch above the cap keeps K = n_instances.
    assert made == [8, 12, 20]



    F = np.zeros((5, 2))  # all samples identical: clusters collapse, picks must not
    picks = uncertainty_weighted_clustering(F, np.arange(5.0), 4, np.random.RandomState(0))
    assert len(set(picks.tolist())) == 4


def test_k_center_greedy():
    F = np.array([[0.0], [1.0], [2.0], [10.0], [4.0]])
    picks, distance = k_center_greedy(F, 3, np.random.RandomState(0), labeled_features=np.array([[0.0]]))
    assert picks.tolist() == [3, 4, 2]  # 10 is farthest; then 4 (distance 4); then 2 (distance 2)
    np.testing.assert_allclose(distance, [0, 1, 2, 10, 4], atol=1e-6)
    cold_a, _ = k_center_greedy(F, 2, np.random.RandomState(1))
    cold_b, _ = k_center_greedy(F, 2, np.random.RandomState(1))
    np.testing.assert_array_equal(cold_a, cold_b)
    assert cold_a[1] == (3 if cold_a[0] != 3 else 0)


def test_badge_gradient_embeddings_and_factorised_seeding():
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    F = np.array([[1.0, 0.0], [0.6, 0.8]])
    g = gradient_embeddings(proba, F)
    assert g.shape == (2, 6)
    np.testing.assert_allclose(g[0], [-0.3, 0.0, 0.2, 0.0, 0.1, 0.0], atol=1e-6)
    np.testing.assert_allclose(g[1].reshape(3, 2), np.outer([0.1, 0.1, -0.2], [0.6, 0.8]), atol=1e-6)
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(4), size=30)
    E = rng.normal(size=(30, 3))
    picks, norms = badge_select(P, E, 5, np.random.RandomState(0))
    G = gradient_embeddings(P, E)
    np.testing.assert_allclose(norms, np.linalg.norm(G, axis=1), rtol=1e-5)
    assert picks[0] == np.argmax(norms) and len(set(picks.tolist())) == 5


def test_pcb_balancing_order():
    candidates = np.array([10, 11, 12, 13, 14])
    pseudo = np.array([0, 0, 1, 2, 2])
    counts = np.array([2, 0, 1])
    picks = balance_by_pseudo_labels(candidates, pseudo, counts, 4, np.random.RandomState(0))
    # Class 1 (0 labels) first: candidate 12. Then counts (2, 1, 1): class 1 again, no candidate
    # left -> a random candidate, uncounted. Then class 1 still least: random again...
    assert picks[0] == 12 and len(set(picks.tolist())) == 4
    counts = np.array([0, 0, 0])
    picks = balance_by_pseudo_labels(candidates, pseudo, counts, 3, np.random.RandomState(0))
    assert sorted(pseudo[picks - 10].tolist()) == [0, 1, 2]  # one per class from a cold start


def test_candidates_selection_clusters_only_the_most_uncertain():
    # Two far groups; only the right-hand one is uncertain. With one candidate per pick the
    # picks are the two most uncertain samples; with all candidates, one per group.
    F = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    U = np.array([0.1, 0.1, 0.1, 0.9, 1.0, 0.8])
    rng = np.random.RandomState(0)
    narrow = uncertainty_weighted_clustering(F, U, 2, rng, selection="candidates", candidates_per_query=1)
    assert sorted(narrow.tolist()) == [3, 4]
    wide = uncertainty_weighted_clustering(F, U, 2, np.random.RandomState(0), selection="candidates",
                                           candidates_per_query=3)
    assert {int(i) >= 3 for i in wide} == {True, False}
    with pytest.raises(ValueError, match="candidates_per_query must be an integer >= 1"):
        uncertainty_weighted_clustering(F, U, 2, rng, selection="candidates", candidates_per_query=0)
