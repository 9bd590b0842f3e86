"""Every strategy returns a full batch of distinct pool indices on a pool of near-duplicates
(burst photos, copied files), with and without labels (issue 25, bad day 5)."""
import numpy as np
import pytest
from modAL.models import ActiveLearner

from modal_vlm.strategies import get_strategy, list_strategies


def duplicated_pool(fake_classifier, seed):
    """40 pool samples with 2 distinct embeddings, and 4 labeled samples unlike any of them."""
    rng = np.random.default_rng(seed)
    distinct = rng.normal(size=(6, 5))
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    features = np.concatenate([np.repeat(distinct[:1], 30, 0), np.repeat(distinct[1:2], 10, 0), distinct[2:]])
    logits = features @ rng.normal(size=(5, 3))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return fake_classifier(features, proba, rng.normal(size=(3, 5))), np.arange(40), np.arange(40, 44)


@pytest.mark.trial("bad-day 5")
@pytest.mark.parametrize("name", list_strategies(pcb_variants=True))
@pytest.mark.parametrize("labeled", [False, True], ids=["cold", "with-labels"])
def test_low_diversity_pool_gives_a_full_batch(name, labeled, fake_classifier):
    for seed in range(6):  # k-means' seeding decides which centroids stay empty
        clf, X_pool, X_labeled = duplicated_pool(fake_classifier, seed)
        learner = ActiveLearner(estimator=clf, query_strategy=get_strategy(name))
        if labeled:
            learner.X_training, learner.y_training = X_labeled, np.array([0, 1, 2, 0])
        # Uncertainty Herding's 'auto' temperature refits a copy of the model, which a fake cannot be.
        fixed = {"temperature": 1.0} if name.split("+")[0] == "uherding" else {}
        picked = np.asarray(get_strategy(name)(learner, X_pool, 5, random_state=seed, return_metrics=True,
                                               **fixed)[0])
        assert len(set(picked.tolist())) == 5 and picked.min() >= 0 and picked.max() < 40, (name, seed)


@pytest.mark.trial("bad-day 5")
def test_cec_clustering_with_centroids_holding_only_labeled_samples():
    # Two distinct pool embeddings, labeled samples elsewhere: k-means leaves centroids that
    # hold labeled samples but no pool sample (these seeds crashed with "all keys need to be
    # the same shape").
    from modal_vlm.strategies.cec import uncertainty_weighted_clustering

    for seed in (6, 12, 13, 19):
        rng = np.random.default_rng(seed)
        distinct = rng.normal(size=(6, 8)).astype(np.float32)
        distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
        pool = np.concatenate([np.repeat(distinct[:1], 30, 0), np.repeat(distinct[1:2], 10, 0)])
        picks = uncertainty_weighted_clustering(pool, np.ones(40, np.float32), 5, np.random.RandomState(seed),
                                                labeled_features=distinct[2:], clusters_per_label=2)
        assert len(set(picks.tolist())) == 5
