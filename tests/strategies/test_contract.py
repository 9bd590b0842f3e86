"""The modAL contract of every strategy: signature, return value, errors, determinism."""
import numpy as np
import pytest
from modAL.models import ActiveLearner
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from modal_vlm.strategies import (EmbeddingClassifier, FeatureClassifier, ProbabilisticClassifier,
                                  TextEmbeddingClassifier, _result, get_strategy, list_strategies, pcb)
from modal_vlm.strategies import (badge_query, cb_query, cbsq_query, cec_query, coreset_query, dropquery_query,
                                  entropy_query, least_confidence_query, margin_query, maxherding_query,
                                  probcover_query, random_query, ranked_batch_query, typiclust_query, uherding_query)

LOW_BUDGET = [typiclust_query, probcover_query, maxherding_query, uherding_query, dropquery_query]
ALL = [random_query, entropy_query, margin_query, least_confidence_query, coreset_query, badge_query,
       cec_query, cb_query, cbsq_query, ranked_batch_query, *LOW_BUDGET, pcb(entropy_query), pcb(cec_query),
       pcb(coreset_query), pcb(cb_query), pcb(ranked_batch_query), pcb(typiclust_query)]
NAMES = [getattr(s, "__name__", repr(s)) for s in ALL]


@pytest.fixture(params=[False, True], ids=["modAL-0.4.1", "modAL-0.4.2"])
def modal_version(request, monkeypatch):
    monkeypatch.setattr(_result, "modal_unpacks_metrics", lambda: request.param)
    return request.param


@pytest.mark.parametrize("strategy", ALL, ids=NAMES)
def test_distinct_deterministic_indices(strategy, fake):
    clf, X = fake
    a, metrics = strategy(clf, X, 7, random_state=3, return_metrics=True)
    b, _ = strategy(clf, X, 7, random_state=3, return_metrics=True)
    assert a.dtype.kind == "i" and len(set(a.tolist())) == 7 and a.min() >= 0 and a.max() < 40
    np.testing.assert_array_equal(a, b)
    assert isinstance(metrics, dict)
    whole = strategy(clf, X, 40, random_state=0, return_metrics=True)[0]
    assert sorted(whole.tolist()) == list(range(40))


@pytest.mark.parametrize("strategy", ALL, ids=NAMES)
@pytest.mark.parametrize("n, match", [(41, "exceeds the pool size 40"), (0, "an integer >= 1"),
                                      (2.5, "must be an int")])
def test_bad_n_instances(strategy, fake, n, match):
    clf, X = fake
    with pytest.raises(ValueError, match=match):
        strategy(clf, X, n)


@pytest.mark.parametrize("strategy", ALL, ids=NAMES)
def test_empty_pool(strategy, fake):
    with pytest.raises(ValueError, match="X_pool is empty"):
        strategy(fake[0], np.arange(0), 1)


@pytest.mark.parametrize("strategy", [cec_query, pcb(cec_query), badge_query, cb_query, cbsq_query,
                                      ranked_batch_query],
                         ids=["cec", "pcb_cec", "badge", "cb", "cbsq", "ranked_batch"])
def test_one_pass_over_the_pool(strategy, fake):
    clf, X = fake
    strategy(clf, X, 5, random_state=0)
    assert clf.calls == {"transform": 1, "predict_proba": 1}


@pytest.mark.parametrize("strategy", LOW_BUDGET, ids=lambda s: s.__name__)
def test_low_budget_methods_embed_once_and_predict_at_most_once(strategy, fake):
    clf, X = fake
    strategy(clf, X, 5, random_state=0)
    # Coverage methods read no probabilities (ProbCover: only their number of classes).
    assert clf.calls["transform"] == 1 and clf.calls["predict_proba"] <= 1


@pytest.mark.parametrize("strategy, keys, per_sample", [
    (cec_query, {"U", "H", "H_nb"}, "U"),
    (cb_query, {"cluster"}, "cluster"),
    (cbsq_query, {"pseudo_labeled", "pseudo_labels", "confidence", "cluster", "threshold"}, "confidence"),
    (typiclust_query, {"cluster", "typicality"}, "cluster"),
    (probcover_query, {"degree", "covered", "delta"}, "degree"),
    (maxherding_query, {"gain"}, "gain"),
    (uherding_query, {"uncertainty", "gain", "sigma", "temperature"}, "uncertainty"),
    (dropquery_query, {"disagreement", "threshold"}, "disagreement"),
], ids=["cec", "cb", "cbsq", "typiclust", "probcover", "maxherding", "uherding", "dropquery"])
def test_modal_0_4_1_and_0_4_2_conventions(modal_version, fake, strategy, keys, per_sample):
    clf, X = fake
    result = strategy(clf, X, 3, random_state=0)
    if modal_version:
        indices, metrics = result
        assert set(metrics) >= keys and metrics[per_sample].shape == (40,)
    else:
        indices = result
        assert isinstance(result, np.ndarray)
    assert len(indices) == 3


def test_modal_0_4_2_style_call_never_runs_the_strategy_twice(monkeypatch, fake):
    """A stand-in for modAL 0.4.2's BaseLearner.query, which re-runs on a failed unpacking."""
    monkeypatch.setattr(_result, "modal_unpacks_metrics", lambda: True)
    clf, X = fake
    calls = []

    def counted(classifier, X_pool, **kwargs):
        calls.append(1)
        return cec_query(classifier, X_pool, **kwargs)

    try:
        query_result, query_metrics = counted(clf, X, n_instances=4, random_state=0)
    except Exception:  # what modAL 0.4.2 does
        query_metrics = None
        query_result = counted(clf, X, n_instances=4, random_state=0)
    assert len(calls) == 1 and len(query_result) == 4 and "U" in query_metrics


@pytest.mark.parametrize("name", ["cec", "entropy", "margin", "entropy+pcb", "cb", "cbsq", "typiclust", "probcover",
                                  "maxherding", "uherding", "dropquery"])
def test_cold_start_in_a_real_modal_learner(make_clf, images, name):
    X, _ = images
    learner = ActiveLearner(estimator=make_clf(), query_strategy=get_strategy(name))
    idx, chosen = learner.query(X, n_instances=3, random_state=0)
    assert len(set(np.asarray(idx).tolist())) == 3
    np.testing.assert_array_equal(chosen, X[idx])


def test_coreset_and_pcb_read_the_learners_labeled_set(make_clf, images):
    X, y = images
    learner = ActiveLearner(estimator=make_clf(max_epochs=1), X_training=X[:3], y_training=y[:3])
    idx, metrics = coreset_query(learner, X[3:], 2, random_state=0, return_metrics=True)
    assert np.isfinite(metrics["distance"]).all()
    assert metrics["distance"][idx[0]] == metrics["distance"].max()
    with pytest.raises(ValueError, match=r"labels \[7\]"):
        pcb(random_query)(learner, X[3:], 2, y_labeled=np.array([7]))


def test_coreset_cold_start_is_a_seeded_random_center(make_clf, images):
    X, _ = images
    a = coreset_query(make_clf(), X, 3, random_state=5, return_metrics=True)
    b = coreset_query(make_clf(), X, 3, random_state=5, return_metrics=True)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.isinf(a[1]["distance"]).all()


def test_pipeline_ending_in_the_classifier(make_clf, images):
    X, _ = images
    pipe = Pipeline([("identity", FunctionTransformer(None)), ("clf", make_clf())])
    direct = cec_query(make_clf(), X, 3, random_state=0, return_metrics=True)[0]
    np.testing.assert_array_equal(cec_query(pipe, X, 3, random_state=0, return_metrics=True)[0], direct)


def test_pcb_wraps_modals_own_strategy(make_clf, images):
    from modAL.uncertainty import uncertainty_sampling

    X, _ = images
    idx = pcb(uncertainty_sampling, gamma=0.5)(make_clf(), X, 3, random_state=0)
    assert len(set(np.asarray(idx).tolist())) == 3


def test_strategy_registry():
    assert list_strategies() == ["random", "entropy", "margin", "least_confidence", "coreset", "badge", "cec",
                                 "cb", "cbsq", "ranked_batch", "typiclust", "probcover", "maxherding", "uherding",
                                 "dropquery"]
    assert get_strategy("uherding") is uherding_query and get_strategy("typiclust+pcb").base is typiclust_query
    assert "badge+pcb" in list_strategies(pcb_variants=True) and "cb+pcb" not in list_strategies(pcb_variants=True)
    assert get_strategy("cec") is cec_query and get_strategy("cbsq") is cbsq_query
    assert get_strategy("cb+pcb").base is cb_query
    with pytest.raises(ValueError, match="CB\\+SQ is 'cbsq'"):
        get_strategy("cb+sq")
    with pytest.raises(ValueError, match="'cbsq\\+pcb': PCB re-selects"):
        get_strategy("cbsq+pcb")
    with pytest.raises(ValueError, match="Unknown strategy 'bald'.*cec"):
        get_strategy("bald")
    with pytest.raises(ValueError, match="gamma"):
        pcb(entropy_query, gamma=0)


def test_cec_parameters(fake):
    clf, X = fake
    plain = cec_query(clf, X, 5, random_state=0, calibrate=False, alpha=0.0, clustering=False,
                      return_metrics=True)
    top_entropy = np.argsort(-plain[1]["H"])[:5]
    assert sorted(plain[0].tolist()) == sorted(top_entropy.tolist())
    for selection in ("centroid", "most_uncertain", "candidates"):
        idx = cec_query(clf, X, 5, random_state=0, selection=selection, return_metrics=True)[0]
        assert len(set(idx.tolist())) == 5
    # The defaults are the benchmark's choice: the centroid member of the heaviest clusters
    # without a label, 2 clusters per label; before any label that is the spec.
    default = cec_query(clf, X, 5, random_state=0)
    np.testing.assert_array_equal(default, cec_query(clf, X, 5, random_state=0, selection="centroid",
                                                     avoid_labeled=False))
    most = cec_query(clf, X, 5, random_state=0, selection="most_uncertain", return_metrics=True)
    assert most[1]["U"][most[0]].min() > np.median(most[1]["U"])  # each pick: its cluster's most uncertain
    with pytest.raises(ValueError, match="alpha"):
        cec_query(clf, X, 2, alpha=1.5)
    with pytest.raises(ValueError, match="weight_power"):
        cec_query(clf, X, 2, weight_power=-0.5)
    with pytest.raises(ValueError, match="clusters_per_label"):
        cec_query(clf, X, 2, avoid_labeled=True, clusters_per_label=0)
    with pytest.raises(ValueError, match="selection"):
        cec_query(clf, X, 2, selection="best")


def test_cec_avoid_labeled_reads_the_learners_labeled_set(fake):
    from types import SimpleNamespace

    clf, X = fake
    pool = X[10:]
    # Without labels the parameter changes nothing: K = n_instances either way.
    np.testing.assert_array_equal(cec_query(clf, pool, 4, random_state=0, avoid_labeled=True),
                                  cec_query(clf, pool, 4, random_state=0))
    # The labeled set itself: a sample of the pool was labeled, its cluster is avoided.
    learner = SimpleNamespace(estimator=clf, X_training=X[:10], y_training=np.zeros(10, int))
    before = clf.calls["transform"]
    idx = cec_query(learner, pool, 4, random_state=0, avoid_labeled=True)
    assert len(set(idx.tolist())) == 4 and clf.calls["transform"] == before + 2  # pool + labeled
    labeled_as_pool = SimpleNamespace(estimator=clf, X_training=pool[idx], y_training=np.zeros(4, int))
    again = cec_query(labeled_as_pool, pool, 4, random_state=0, avoid_labeled=True)
    assert not set(again.tolist()) & set(idx.tolist())  # the labeled samples' clusters are skipped
    # With labels, the default is the covering with 2 clusters per label, not the spec's K = b.
    np.testing.assert_array_equal(cec_query(labeled_as_pool, pool, 4, random_state=0),
                                  cec_query(labeled_as_pool, pool, 4, random_state=0, avoid_labeled=True,
                                            clusters_per_label=2, selection="centroid"))
    one = cec_query(labeled_as_pool, pool, 4, random_state=0, avoid_labeled=True, clusters_per_label=1,
                    selection="centroid")
    spec = cec_query(labeled_as_pool, pool, 4, random_state=0, avoid_labeled=False, selection="centroid")
    assert len({tuple(again.tolist()), tuple(one.tolist()), tuple(spec.tolist())}) > 1


@pytest.mark.parametrize("protocol", [ProbabilisticClassifier, EmbeddingClassifier, FeatureClassifier,
                                      TextEmbeddingClassifier], ids=lambda p: p.__name__)
def test_the_classifier_has_what_the_protocols_promise(protocol, fake):
    # The protocols document what the strategies call; ClipPromptClassifier and the test
    # double the strategy tests run on must both have all of it.
    from modal_vlm import ClipPromptClassifier

    methods = {name for cls in protocol.__mro__ if cls is not object and getattr(cls, "_is_protocol", False)
               for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}
    assert methods >= {"predict_proba"}
    for classifier in (ClipPromptClassifier(["cat", "dog"]), fake[0]):
        assert all(callable(getattr(type(classifier), name, None)) for name in methods), (classifier, methods)
