"""Open-set-aware selection: the picks avoid images like those marked "none of these classes"
(``modal_vlm.NONE``), and change nothing on a pool without such answers."""
import numpy as np
import pytest

from modal_vlm import NONE, get_strategy, open_set
from modal_vlm.strategies import cec_query, entropy_query, random_query
from modal_vlm.strategies._pool import QueryPool
from modal_vlm.strategies.open_set import none_probability


def test_none_probability_is_a_posterior_of_the_two_kinds_of_marks():
    F = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    p = none_probability(F, F[:2], np.array([True, False]), bandwidth=0.1)
    # one mark of each kind: sigmoid((cos to the "none" mark - cos to the class mark) / tau)
    expected = 1 / (1 + np.exp(-(F @ F[0] - F @ F[1]) / 0.1))
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    assert p[0] > 0.99 and p[1] < 0.01 and p[3] > 0.5 > p[2]
    assert none_probability(F, F[:2], np.array([False, False])).tolist() == [0, 0, 0, 0]
    alone = none_probability(F, F[:1], np.array([True]), bandwidth=0.1)   # no class label to compare
    assert alone[0] == pytest.approx(1.0) and np.all(alone[1:] < 1) and alone[3] > alone[2]
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        none_probability(F, F[:2], np.array([True, False]), bandwidth=0)


def two_clusters(fake_classifier, n=20):
    """A pool of two tight clusters: 0..n-1 (the classes) and n..2n-1 (junk), the junk the
    most uncertain; a labeled set with one image of each, the junk one marked NONE."""
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    F = np.repeat(centres, n + 1, axis=0) + 0.05 * rng.normal(size=(2 * n + 2, 4))
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    P = np.where(np.arange(2 * n + 2)[:, None] < n + 1, [0.9, 0.1], [0.5, 0.5])
    clf = fake_classifier(F, P)
    pool = np.r_[np.arange(n), np.arange(n + 1, 2 * n + 1)]
    return clf, pool, np.array([n, 2 * n + 1]), n


@pytest.mark.parametrize("strategy", [cec_query, open_set(entropy_query)])
def test_picks_avoid_images_like_those_marked_none(fake_classifier, strategy):
    clf, pool, labeled, n = two_clusters(fake_classifier)
    learner = type("Learner", (), {"estimator": clf, "X_training": labeled, "y_training": np.array([0, NONE])})()
    picks = strategy(learner, pool, 4, random_state=0, return_metrics=True)[0]
    assert np.all(pool[picks] < n)   # none from the junk cluster
    blind = type("Learner", (), {"estimator": clf, "X_training": labeled[:1], "y_training": np.array([0])})()
    base = cec_query if strategy is cec_query else entropy_query
    assert np.any(pool[base(blind, pool, 4, random_state=0, return_metrics=True)[0]] > n)  # drawn to junk


def test_without_none_answers_the_picks_are_exactly_those_without_weighting(fake):
    clf, X = fake
    learner = type("Learner", (), {"estimator": clf, "X_training": X[:4], "y_training": np.array([0, 1, 2, 3])})()
    for weighted, plain in [(cec_query, lambda *a, **k: cec_query(*a, open_set=False, **k)),
                            (open_set(entropy_query), entropy_query),
                            (get_strategy("entropy+pcb+open"), get_strategy("entropy+pcb"))]:
        np.testing.assert_array_equal(weighted(learner, X[4:], 5, random_state=1, return_metrics=True)[0],
                                      plain(learner, X[4:], 5, random_state=1, return_metrics=True)[0])


def test_open_set_wrapper_metrics_names_and_errors(fake_classifier):
    clf, pool, labeled, n = two_clusters(fake_classifier)
    learner = type("Learner", (), {"estimator": clf, "X_training": labeled, "y_training": np.array([0, NONE])})()
    picks, metrics = open_set(entropy_query)(learner, pool, 3, random_state=0, return_metrics=True)
    assert metrics["none_probability"].shape == (len(pool),)
    assert np.isnan(metrics["entropy"][n:]).all() and not np.isnan(metrics["entropy"][:n]).any()
    # a pool that is nearly all junk: the least likely junk completes the batch
    picks = open_set(random_query)(learner, pool[n - 2:], 5, random_state=0, return_metrics=True)[0]
    assert len(set(picks.tolist())) == 5 and {0, 1} <= set(picks.tolist())
    assert repr(get_strategy("margin+open")) == "open_set(margin_query, threshold=0.5)"
    for bad in ("entropy+open+open", "entropy+nope"):
        with pytest.raises(ValueError, match="Unknown strategy"):
            get_strategy(bad)
    with pytest.raises(ValueError, match="threshold must lie in"):
        open_set(entropy_query, threshold=0)


def test_cb_and_pcb_count_no_class_for_none(fake):
    clf, X = fake
    learner = type("Learner", (), {"estimator": clf, "X_training": X[:4], "y_training": np.array([0, NONE, 2, NONE])})()
    assert QueryPool(learner, X[4:]).class_counts().tolist() == [1, 0, 1, 0]
    for name in ("cbsq", "entropy+pcb"):
        assert len(get_strategy(name)(learner, X[4:], 3, random_state=0, return_metrics=True)[0]) == 3
