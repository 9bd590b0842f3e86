"""CB and CB+SQ: the formulas on hand-made inputs, the authors' allocation rule, selective
querying, and the strategies on small fake classifiers."""
import numpy as np
import pytest
import torch

from modal_vlm.strategies import cb_query, cbsq_query
from modal_vlm.strategies.cb import (class_guided_features, class_thresholds, cluster_balanced_order,
                                     selective_querying)


def test_class_guided_features_concatenate_image_and_expected_text_feature():
    # f = (3, 4) normalises to (0.6, 0.8); T's rows normalise to e1, e2, so p T = (0.25, 0.75).
    g = class_guided_features([[3.0, 4.0]], [[0.25, 0.75]], [[2.0, 0.0], [0.0, 5.0]]).numpy()
    expected = np.array([0.6, 0.8, 0.25, 0.75]) / np.sqrt(0.36 + 0.64 + 0.25 ** 2 + 0.75 ** 2)
    np.testing.assert_allclose(g[0], expected, rtol=1e-6)
    # Two images with the same embedding but different predictions are told apart by the text half.
    g = class_guided_features([[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], np.eye(2)).numpy()
    np.testing.assert_allclose(g, [[0.5 ** 0.5, 0, 0.5 ** 0.5, 0], [0.5 ** 0.5, 0, 0, 0.5 ** 0.5]], atol=1e-6)


def test_cluster_balanced_order_by_hand():
    # No labels: every ratio is 0, so the largest cluster (1: 3 members) goes first, then the
    # size-2 cluster 0, the size-1 cluster 2 and, at ratio 1/3 < 1/2, cluster 1 again.
    cluster = [0, 1, 1, 0, 2, 1]
    distance = [0.4, 0.3, 0.1, 0.2, 0.0, 0.2]
    assert list(cluster_balanced_order(cluster, distance, 0)) == [2, 3, 4, 5, 0, 1]
    # Two labeled points (first) in cluster 0: cluster 1 (ratio 0) goes before cluster 0 (2/4).
    order = cluster_balanced_order([0, 0, 0, 0, 1, 1], [0, 0, 0.5, 0.1, 0.2, 0.3], 2)
    assert list(order) == [2, 1, 3, 0]
    # A cluster of labeled points only is never picked from; the order ends with the pool.
    assert list(cluster_balanced_order([0, 1, 1], [0.0, 0.1, 0.2], 1)) == [0, 1]


def authors_allocation(cluster, sq_distance, n_labeled, n_query):
    """The rule of cb.py 126-163 (ml-postech/active-prompt-learning), restated: budgets by
    lowest labeled ratio (ties: largest cluster, then lowest id), one centroid-nearest
    unlabeled member per budgeted cluster."""
    uniques = sorted(set(cluster))
    size = {c: cluster.count(c) for c in uniques}
    count = {c: sum(1 for i in range(n_labeled) if cluster[i] == c) for c in uniques}
    budget = dict.fromkeys(uniques, 0)
    for _ in range(n_query):
        low = min(count[c] / size[c] for c in uniques)
        chosen = max((c for c in uniques if count[c] / size[c] == low), key=size.get)
        budget[chosen] += 1
        count[chosen] += 1
    picks = set()
    for c in uniques:
        if budget[c]:
            assert budget[c] == 1
            members = [i for i in range(n_labeled, len(cluster)) if cluster[i] == c]
            picks.add(min(members, key=lambda i: (sq_distance[i], i)) - n_labeled)
    return picks


@pytest.mark.parametrize("seed", range(20))
def test_cluster_balanced_order_matches_the_authors_allocation(seed):
    rng = np.random.default_rng(seed)
    n_labeled, n_pool, b = int(rng.integers(0, 8)), 40, int(rng.integers(1, 6))
    K = b + n_labeled  # CB's cluster count: at least b clusters without labels
    cluster = rng.integers(0, K, n_labeled + n_pool)
    cluster[n_labeled:n_labeled + K] = np.arange(K)  # no empty cluster
    distance = rng.random(n_labeled + n_pool)
    ours = list(cluster_balanced_order(cluster, distance, n_labeled))
    assert sorted(ours) == list(range(n_pool))
    assert set(ours[:b]) == authors_allocation(cluster.tolist(), distance.tolist(), n_labeled, b)


def test_class_thresholds_and_selective_querying():
    proba = [[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]]
    # Labels 0, 0, 1: class 0's threshold is (0.9 + 0.7) / 2; class 1's the 0.8 of its one sample.
    np.testing.assert_allclose(class_thresholds(proba, [0, 0, 1], 3), [0.8, 0.8, np.inf])
    assert np.isinf(class_thresholds(None, [], 2)).all()
    confident = np.array([True, True, False, True, False, False])
    oracle, pseudo = selective_querying([0, 1, 2, 3, 4, 5], confident, 2, max_pseudo_labels=5)
    assert oracle.tolist() == [2, 4] and pseudo.tolist() == [0, 1, 3]
    oracle, pseudo = selective_querying([0, 1, 2, 3, 4, 5], confident, 2, max_pseudo_labels=1)
    assert oracle.tolist() == [1, 2] and pseudo.tolist() == [0]   # past the cap, confident picks are queried
    oracle, pseudo = selective_querying([0, 1, 2, 3, 4, 5], confident, 2, max_pseudo_labels=0)
    assert oracle.tolist() == [0, 1] and pseudo.tolist() == []
    # The pool runs out before the budget: the last pseudo-labeled pick is queried instead.
    oracle, pseudo = selective_querying([0, 1, 2], confident, 2, max_pseudo_labels=5)
    assert oracle.tolist() == [2, 1] and pseudo.tolist() == [0]


def blobs(fake_classifier, per_blob=10, n_labeled_per_blob=(0, 0, 0, 0), confidence=0.8, seed=0):
    """Four tight, orthogonal blobs; blob ``k`` is predicted class ``k`` with ``confidence``
    (one value, or one per row). Returns the fake classifier, the pool rows, the labeled rows
    (after the pool) and every row's blob."""
    rng = np.random.default_rng(seed)
    blob = np.concatenate([np.repeat(np.arange(4), per_blob), np.repeat(np.arange(4), n_labeled_per_blob)])
    features = np.eye(8)[blob] + 0.05 * rng.normal(size=(len(blob), 8))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    conf = np.broadcast_to(np.asarray(confidence, dtype=float), (len(blob),))
    proba = np.repeat(((1 - conf) / 3)[:, None], 4, axis=1)
    proba[np.arange(len(blob)), blob] = conf
    clf = fake_classifier(features, proba, np.eye(8)[4:])
    return clf, np.arange(4 * per_blob), np.arange(4 * per_blob, len(blob)), blob


def test_cb_picks_one_sample_per_blob_and_avoids_labeled_blobs(fake_classifier):
    clf, X, _, blob = blobs(fake_classifier)
    idx, metrics = cb_query(clf, X, 4, random_state=0, return_metrics=True)
    assert sorted(blob[idx].tolist()) == [0, 1, 2, 3]
    assert len(set(metrics["cluster"][idx].tolist())) == 4
    # With one label in blobs 0 and 1, K = 2 + 2 clusters: the two unlabeled blobs are picked.
    clf, X, labeled, blob = blobs(fake_classifier, n_labeled_per_blob=(1, 1, 0, 0))
    idx = cb_query(clf, X, 2, random_state=0, X_labeled=labeled, return_metrics=True)[0]
    assert sorted(blob[idx].tolist()) == [2, 3]
    # Each pick is its blob's sample nearest the blob's mean class-guided feature.
    G = class_guided_features(clf.features[X], clf.proba[X], np.eye(8)[4:]).numpy()
    for i in idx:
        members = np.flatnonzero(blob[X] == blob[i])
        centre = G[members].mean(0)
        assert i == members[np.argmin(((G[members] - centre) ** 2).sum(1))]


def test_cbsq_pseudo_labels_confident_picks_of_labeled_classes_only(fake_classifier):
    # Pool confidences alternate 0.95 / 0.6. Labeled (all three in blob 3, so blobs 0-2 are
    # label-free clusters): two labeled class 0 at confidence 0.7 and 0.9 (threshold 0.8), one
    # labeled class 1 at 0.99 (threshold 0.99); classes 2 and 3 have no label, no threshold.
    pool_conf = np.tile([0.95, 0.6], 20)
    clf, X, labeled, blob = blobs(fake_classifier, n_labeled_per_blob=(0, 0, 0, 3),
                                  confidence=np.concatenate([pool_conf, [0.7, 0.9, 0.99]]))
    y_labeled = np.array([0, 0, 1])
    idx, metrics = cbsq_query(clf, X, 6, random_state=0, X_labeled=labeled, y_labeled=y_labeled,
                              return_metrics=True)
    np.testing.assert_allclose(metrics["threshold"], [0.8, 0.99, np.inf, np.inf])
    pseudo = metrics["pseudo_labeled"]
    assert len(idx) == 6 and 0 < len(pseudo) <= 6 and not set(idx.tolist()) & set(pseudo.tolist())
    # Pseudo-labeled: predicted class 0 at 0.95 (>= 0.8), labeled with that prediction.
    assert (blob[pseudo] == 0).all() and (metrics["confidence"][pseudo] == 0.95).all()
    np.testing.assert_array_equal(metrics["pseudo_labels"], blob[pseudo])
    # Every queried pick is below its class's threshold: selective querying sends nothing confident.
    assert (metrics["confidence"][idx] < metrics["threshold"][blob[idx]]).all()
    # max_pseudo_labels=0 turns selective querying off: CB with 4 b + L clusters.
    off = cbsq_query(clf, X, 6, random_state=0, X_labeled=labeled, y_labeled=y_labeled, max_pseudo_labels=0,
                     return_metrics=True)
    assert len(off[1]["pseudo_labeled"]) == 0
    np.testing.assert_array_equal(off[0], cb_query(clf, X, 6, random_state=0, X_labeled=labeled, cluster_factor=4))
    capped = cbsq_query(clf, X, 6, random_state=0, X_labeled=labeled, y_labeled=y_labeled, max_pseudo_labels=1,
                        return_metrics=True)
    assert len(capped[1]["pseudo_labeled"]) == 1


def test_cbsq_without_labels_is_cb(fake_classifier):
    clf, X, _, _ = blobs(fake_classifier, confidence=0.99)
    idx, metrics = cbsq_query(clf, X, 3, random_state=4, return_metrics=True)
    np.testing.assert_array_equal(idx, cb_query(clf, X, 3, random_state=4))
    assert len(metrics["pseudo_labeled"]) == 0 and np.isinf(metrics["threshold"]).all()


def test_text_features_come_from_the_classifier_zero_shot_then_learned(make_clf, images):
    X, y = images
    clf = make_clf(max_epochs=2)
    zero_shot = clf.class_text_features()
    np.testing.assert_allclose(zero_shot, clf.module_.zero_shot_features.numpy(), rtol=1e-6)
    clf.fit(X[:6], y[:6])
    learned = clf.class_text_features()
    assert learned.shape == zero_shot.shape and not np.allclose(learned, zero_shot)
    np.testing.assert_allclose(np.linalg.norm(learned, axis=1), 1.0, rtol=1e-5)
    # predict_proba is the softmax of the scaled cosine with exactly these features.
    logits = float(clf.module_.logit_scale) * clf.transform(X) @ learned.T
    np.testing.assert_allclose(clf.predict_proba(X), torch.softmax(torch.from_numpy(logits), 1).numpy(),
                               rtol=1e-4, atol=1e-6)


def test_errors_name_the_problem(fake, fake_classifier):
    clf, X = fake
    with pytest.raises(ValueError, match="cluster_factor must be an integer >= 1"):
        cb_query(clf, X, 2, cluster_factor=0)
    with pytest.raises(ValueError, match="max_pseudo_labels must be an integer >= 0"):
        cbsq_query(clf, X, 2, max_pseudo_labels=-1)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        cbsq_query(clf, X[4:], 2, X_labeled=X[:4], y_labeled=[0, 1, 2])
    with pytest.raises(ValueError, match=r"labels \[9\]"):
        cbsq_query(clf, X[4:], 2, X_labeled=X[:1], y_labeled=[9])
    no_text = type("NoText", (), {"transform": staticmethod(clf.transform),
                                  "predict_proba": staticmethod(clf.predict_proba)})()
    with pytest.raises(TypeError, match="has no class_text_features"):
        cb_query(no_text, X, 2)
    wrong = fake_classifier(clf.features, clf.proba, np.eye(5)[:3])
    with pytest.raises(ValueError, match=r"shape \(3, 5\); expected \(4, n_features\)"):
        cb_query(wrong, X, 2)
