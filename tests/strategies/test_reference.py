"""The low-budget methods against scikit-activeml's implementations on the same inputs.

scikit-activeml (``pip install modal-vlm[reference]``) is the reference the issue names; the
methods are written here (its versions build ``n x n`` matrices and refit scikit-learn
models), so these tests check that both pick the same samples wherever their documented
choices agree (each module's docstring lists the differences). Without scikit-activeml they
are skipped; ``test_low_budget.py`` checks each method's defining behaviour without it.
"""
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from modal_vlm.strategies.dropquery import dropquery_query
from modal_vlm.strategies.herding import kernel_herding
from modal_vlm.strategies.probcover import probcover_select, purity_delta
from modal_vlm.strategies.typiclust import typiclust_select

skactiveml = pytest.importorskip("skactiveml", reason="the reference comparison needs scikit-activeml "
                                                      "(pip install modal-vlm[reference])")
from skactiveml.classifier import SklearnClassifier  # noqa: E402
from skactiveml.pool import DropQuery, MaxHerding, ProbCover, TypiClust  # noqa: E402

# ProbCover with one delta warns that it searched no purity.
pytestmark = pytest.mark.filterwarnings("ignore:The maximum purity:UserWarning")


def unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def hub_blobs(sizes, d=8, seed=0):
    """Groups around orthogonal directions, each with one sample (its first) at the middle
    of a tight ring: the most typical sample by mean or mean squared distance alike."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, size in enumerate(sizes):
        centre = np.eye(d)[g]
        ring = centre + 0.01 * unit(rng.normal(size=(6, d)))
        rest = centre + 0.08 * rng.normal(size=(size - 7, d))
        rows.append(np.concatenate([centre[None], ring, rest]))
    return unit(np.concatenate(rows)), np.repeat(np.arange(len(sizes)), sizes)


def missing(n):
    return np.full(n, np.nan)


def test_typiclust_picks_what_scikit_activeml_picks():
    F, group = hub_blobs([40, 32, 25, 18])
    hubs = np.flatnonzero(np.r_[True, np.diff(group) != 0])
    # scikit-activeml: K = L + b, every cluster, k = 5 neighbours; the same choices here.
    theirs = TypiClust(random_state=0, k=5).query(F, missing(len(F)), batch_size=4)
    ours, _, _ = typiclust_select(F, 4, np.random.RandomState(0), k=5, min_cluster_size=0)
    assert ours.tolist() == theirs.tolist() == hubs.tolist()


def test_typiclust_skips_the_labeled_cluster_as_scikit_activeml_does():
    F, group = hub_blobs([40, 32, 25, 18, 30])
    labeled = np.flatnonzero(group == 4)[10]  # a member of the last group (not its hub)
    y = missing(len(F))
    y[labeled] = 1
    theirs = TypiClust(random_state=0, k=5).query(F, y, batch_size=4)
    pool = np.delete(np.arange(len(F)), labeled)
    ours, _, _ = typiclust_select(F[pool], 4, np.random.RandomState(0), labeled_features=F[[labeled]], k=5,
                                  min_cluster_size=0)
    assert pool[ours].tolist() == theirs.tolist()
    assert set(group[theirs].tolist()) == {0, 1, 2, 3}


def test_probcover_covers_in_the_order_scikit_activeml_does():
    # Groups of distinct sizes, each inside one ball, the groups farther apart than delta:
    # every member of a group has the same degree, so the picks agree group by group.
    angles = np.deg2rad(np.r_[0:9, 40:46, 80:84, 120:122, 160:163])
    F = np.stack([np.cos(angles), np.sin(angles)], 1)
    group = (angles // np.deg2rad(40)).astype(int)
    y = missing(len(F))
    y[9] = 0  # labels the group of 6
    theirs = ProbCover(deltas=[0.3], random_state=0).query(F, y, batch_size=4)
    pool = np.delete(np.arange(len(F)), 9)
    ours, *_ = probcover_select(F[pool], 4, np.random.RandomState(0), labeled_features=F[[9]], delta=0.3)
    assert group[pool[ours]].tolist() == group[theirs].tolist() == [0, 2, 4, 3]


def test_probcover_picks_what_scikit_activeml_picks_on_a_random_pool():
    F = unit(np.random.default_rng(2).normal(size=(300, 4)))
    y = missing(len(F))
    y[:3] = 0
    theirs, utilities = ProbCover(deltas=[0.6], random_state=0).query(F, y, batch_size=6, return_utilities=True)
    # A valid comparison only if no pick was a tie (both break ties at random): this pool has none.
    assert all((u[~np.isnan(u)] == np.nanmax(u)).sum() == 1 for u in utilities)
    ours, *_ = probcover_select(F[3:], 6, np.random.RandomState(0), labeled_features=F[:3], delta=0.6)
    assert (ours + 3).tolist() == theirs.tolist()


def test_probcover_delta_is_the_exact_form_of_scikit_activemls_grid_search():
    rng = np.random.default_rng(12)
    F = unit(np.concatenate([np.eye(4)[g] + 0.25 * rng.normal(size=(40, 4)) for g in range(4)]))
    reference = ProbCover(n_classes=4, random_state=0)
    reference.query(F, missing(len(F)), batch_size=1)
    ours = purity_delta(F, 4, np.random.RandomState(0))
    # Their grid 0.2, 0.4, ... stops at the largest step with 95% pure balls; the exact
    # radius lies between that step and the next.
    assert reference.delta_max_ <= ours < reference.delta_max_ + 0.2


@pytest.mark.parametrize("with_labels", [False, True])
def test_maxherding_picks_what_scikit_activeml_picks(with_labels):
    rng = np.random.default_rng(13)
    F = unit(rng.normal(size=(90, 6)))
    y = missing(len(F))
    n_labeled = 4 if with_labels else 0
    y[:n_labeled] = 0
    for sigma in (0.7, 1.0):
        theirs = MaxHerding(metric="rbf", metric_dict={"gamma": 1 / sigma**2}, random_state=0).query(
            F, y, batch_size=8)
        ours, _ = kernel_herding(F[n_labeled:], 8, np.random.RandomState(0),
                                 labeled_features=F[:n_labeled] if with_labels else None, sigma=sigma)
        assert (ours + n_labeled).tolist() == theirs.tolist()


class _FlipsWhenAnEntryIsDropped(ClassifierMixin, BaseEstimator):
    """Class 1 when every entry of the embedding is non-zero: dropout of 75% of 40 entries
    always changes the prediction of such a sample, never of one with a zero entry."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        full = (np.asarray(X) != 0).all(1)
        return np.stack([~full, full], 1).astype(float)

    def predict(self, X):
        return self.predict_proba(X).argmax(1)

    def predict_proba_from_features(self, F):
        return self.predict_proba(F)


class _OnEmbeddings(_FlipsWhenAnEntryIsDropped):
    def __init__(self, features=None):
        self.features = features

    def transform(self, X):
        return self.features[np.asarray(X)]


def test_dropquery_picks_what_scikit_activeml_picks_where_the_candidates_agree():
    rng = np.random.default_rng(14)
    d = 40
    # Four groups of candidates (no zero entry) and stable samples (a zero entry) between them.
    F = np.concatenate([np.eye(d)[g] * 3 + 0.05 * rng.normal(size=(15, d)) for g in range(4)])
    stable = rng.normal(size=(30, d))
    stable[:, 0] = 0.0
    X = unit(np.concatenate([stable[:2], F, stable[2:]]))
    y = missing(len(X))
    y[:2] = [0, 1]
    clf = SklearnClassifier(_FlipsWhenAnEntryIsDropped(), classes=[0, 1]).fit(X, y)
    theirs = DropQuery(random_state=0).query(X, y, clf, fit_clf=False, batch_size=4)
    learner = type("Learner", (), {"estimator": _OnEmbeddings(X), "X_training": np.arange(2),
                                   "y_training": np.array([0, 1])})()
    ours, metrics = dropquery_query(learner, np.arange(2, len(X)), 4, random_state=0, return_metrics=True)
    assert sorted((ours + 2).tolist()) == sorted(theirs.tolist())
    assert (metrics["disagreement"][:60] == 1).all() and not metrics["disagreement"][60:].any()
