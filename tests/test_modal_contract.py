"""Every combination with modAL the documentation claims (docs/contracts.rst): modAL's own
strategies, committees, batch strategies on embeddings, teach's options."""
import numpy as np
import pytest
from modAL.batch import uncertainty_batch_sampling
from modAL.density import information_density
from modAL.disagreement import (consensus_entropy_sampling, max_disagreement_sampling,
                                vote_entropy, vote_entropy_sampling)
from modAL.models import ActiveLearner, Committee
from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from modal_vlm import on_embeddings
from modal_vlm.committee import prompt_committee
from modal_vlm.strategies import ranked_batch_query
from modal_vlm.committee import CLIP_TEMPLATES


@pytest.mark.parametrize("strategy", [uncertainty_sampling, margin_sampling, entropy_sampling])
def test_modals_uncertainty_strategies_from_cold_start(make_clf, images, strategy):
    X, y = images
    learner = ActiveLearner(estimator=make_clf(max_epochs=1), query_strategy=strategy)
    idx, chosen = learner.query(X, n_instances=3)
    assert len(set(np.asarray(idx).tolist())) == 3
    learner.teach(X[idx], y[idx])
    assert len(set(np.asarray(learner.query(X, n_instances=3)[0]).tolist())) == 3


def test_class_names_through_teach_and_score(make_clf, images):
    X, y = images
    names = np.array(["cat", "dog", "car"])
    learner = ActiveLearner(estimator=make_clf(max_epochs=1), query_strategy=uncertainty_sampling)
    idx, _ = learner.query(X, n_instances=4)
    learner.teach(X[idx], names[y[idx]])
    assert set(learner.predict(X).tolist()) <= set(names)
    assert learner.score(X, names[y]) == learner.estimator.score(X, y)


def test_a_pipeline_as_the_estimator(make_clf, images):
    X, y = images
    pipe = Pipeline([("identity", FunctionTransformer(None)), ("clf", make_clf(max_epochs=1))])
    learner = ActiveLearner(estimator=pipe, query_strategy=ranked_batch_query)
    idx, _ = learner.query(X, n_instances=2)
    learner.teach(X[idx], y[idx])
    assert learner.predict(X).shape == (12,)


def test_modals_ranked_batch_sampling_needs_the_embeddings(make_clf, image_files):
    paths = np.array(image_files)
    with pytest.raises(ValueError, match="could not convert string to float"):  # distances on X itself
        uncertainty_batch_sampling(ActiveLearner(estimator=make_clf()), paths, n_instances=2)


@pytest.mark.parametrize("labeled", [0, 3])
def test_ranked_batch_on_embeddings_is_modals_on_the_embedding_matrix(make_clf, images, labeled):
    X, y = images
    learner = ActiveLearner(estimator=make_clf(max_epochs=1), query_strategy=ranked_batch_query,
                            **({"X_training": X[:labeled], "y_training": y[:labeled]} if labeled else {}))
    pool = X[labeled:]
    idx, _ = learner.query(pool, n_instances=4)
    assert len(set(np.asarray(idx).tolist())) == 4

    class OnMatrix:  # modAL's strategy, handed the embeddings directly
        on_transformed = False
        X_training = learner.estimator.transform(X[:labeled]) if labeled else None

        def predict_proba(self, features):
            return learner.estimator.predict_proba_from_features(features)

    expected = uncertainty_batch_sampling(OnMatrix(), learner.estimator.transform(pool), n_instances=4)
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(expected).reshape(-1))


def test_on_embeddings_works_on_image_paths(make_clf, images, image_files):
    _, y = images
    paths = np.array(image_files)
    learner = ActiveLearner(estimator=make_clf(max_epochs=1), X_training=paths[:2], y_training=y[:2],
                            query_strategy=on_embeddings(uncertainty_batch_sampling))
    idx, chosen = learner.query(paths[2:], n_instances=3)
    assert len(set(np.asarray(idx).tolist())) == 3
    np.testing.assert_array_equal(chosen, paths[2:][idx])


def test_information_density_on_embeddings(make_clf, images):
    X, _ = images
    density = information_density(make_clf().transform(X), metric="cosine")
    assert density.shape == (12,) and np.all(np.isfinite(density))


def test_committees_of_seeds_agree_at_zero_shot_and_of_templates_do_not(make_clf, images):
    X, _ = images
    seeds = Committee([ActiveLearner(estimator=make_clf(random_state=i)) for i in range(3)])
    assert np.all(vote_entropy(seeds, X) == 0)  # identical zero-shot votes: no disagreement
    np.testing.assert_array_equal(np.asarray(seeds.query(X, n_instances=3)[0]), [0, 1, 2])  # the first indices
    templates = prompt_committee(make_clf(), templates=["a photo of a {}.", "art of the {}.", "itap of a {}."])
    proba = np.stack([learner.predict_proba(X) for learner in templates.learner_list])
    assert not np.allclose(proba[0], proba[1])  # the members differ from round 0 on


@pytest.mark.parametrize("strategy", [vote_entropy_sampling, consensus_entropy_sampling, max_disagreement_sampling])
def test_prompt_committee_loop(make_clf, images, strategy):
    X, y = images
    committee = prompt_committee(make_clf(max_epochs=1), templates=CLIP_TEMPLATES[:3], query_strategy=strategy)
    assert [m.estimator.template for m in committee.learner_list] == list(CLIP_TEMPLATES[:3])
    assert len({m.estimator.random_state for m in committee.learner_list}) == 3
    idx, _ = committee.query(X, n_instances=2)
    committee.teach(X[idx], y[idx])
    assert all(m.estimator.module_.prompt_trained for m in committee.learner_list)
    assert committee.predict(X).shape == (12,)
    again = prompt_committee(make_clf(max_epochs=1), templates=CLIP_TEMPLATES[:3], query_strategy=strategy)
    np.testing.assert_array_equal(again.query(X, n_instances=2)[0], idx)  # seeded: reproducible


@pytest.mark.parametrize("templates, match", [(["a {}."], "at least two"), (["a {}.", "no slot"], "'no slot'")])
def test_prompt_committee_rejects_bad_templates(make_clf, templates, match):
    with pytest.raises(ValueError, match=match):
        prompt_committee(make_clf(), templates=templates)


def test_teach_only_new_refits_on_the_new_batch(make_clf, images):
    X, y = images
    learner = ActiveLearner(estimator=make_clf(), X_training=X[:6], y_training=y[:6])
    learner.teach(X[6:9], y[6:9], only_new=True)  # warm_start=False: a fresh prompt on 3 images
    alone = make_clf().fit(X[6:9], y[6:9])
    np.testing.assert_allclose(learner.predict_proba(X), alone.predict_proba(X), atol=1e-6)
    assert len(learner.X_training) == 9  # modAL still records every label


def test_teach_only_new_with_warm_start_continues(make_clf, images):
    X, y = images
    learner = ActiveLearner(estimator=make_clf(warm_start=True), X_training=X[:6], y_training=y[:6])
    before = learner.estimator.module_.prompt_learner.ctx.detach().clone()
    learner.teach(X[6:9], y[6:9], only_new=True)
    continued = make_clf(warm_start=True).fit(X[:6], y[:6]).fit(X[6:9], y[6:9])
    np.testing.assert_allclose(learner.predict_proba(X), continued.predict_proba(X), atol=1e-6)
    assert not np.allclose(learner.estimator.module_.prompt_learner.ctx.detach(), before)


def test_bootstrap_needs_an_array_pool(make_clf, images, image_files):
    _, y = images
    paths = np.array(image_files)
    learner = ActiveLearner(estimator=make_clf(max_epochs=1), X_training=paths[:6], y_training=y[:6],
                            bootstrap_init=True)
    assert learner.estimator.module_.prompt_trained
    with pytest.raises(AttributeError, match="shape"):  # modAL's bootstrap indexes X_training.shape
        ActiveLearner(estimator=make_clf(max_epochs=1), X_training=list(image_files[:6]), y_training=y[:6],
                      bootstrap_init=True)
