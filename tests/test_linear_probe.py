"""``ClipLinearProbe``, the zero-shot-initialised linear head: the contracts of
``ClipPromptClassifier`` (scikit-learn's API checks; its estimator checks run in
test_sklearn_contract; skorch, modAL, saving) and what makes it a head."""
import pickle
import warnings

import numpy as np
import pytest
import torch
from modAL.models import ActiveLearner
from sklearn.base import clone
from sklearn.utils import estimator_checks
from test_experiment import write_image_folder
from test_sklearn_contract import API_CHECKS

from modal_vlm import ClipLinearProbe, ClipPromptClassifier, cec_query
from modal_vlm.model.estimators import get_estimator, list_estimators
from modal_vlm.model.linear_probe import TRAIN_THREADS


def probe(**params):
    defaults = dict(model_name="tiny-vit", max_epochs=20, verbose=0, random_state=0)
    return ClipLinearProbe(params.pop("class_names", ["cat", "dog", "car"]), **{**defaults, **params})


@pytest.mark.parametrize("check_name", API_CHECKS)
def test_scikit_learn_api_checks_on_the_estimator_itself(check_name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        getattr(estimator_checks, check_name)("ClipLinearProbe", probe())


def test_zero_shot_before_fit_is_the_prompt_learners(images):
    X, _ = images
    np.testing.assert_allclose(probe().predict_proba(X),
                               ClipPromptClassifier(["cat", "dog", "car"], model_name="tiny-vit",
                                                    verbose=0).predict_proba(X), atol=1e-6)


def test_fit_trains_only_the_class_weights_from_zero_shot(images):
    X, y = images
    clf = probe().initialize()
    head = clf.module_
    torch.testing.assert_close(head.learned_text_features(), head.zero_shot_features)   # starts at zero-shot
    clf.fit(X, y)
    assert [name for name, _ in clf.get_all_learnable_params()] == ["class_weights"]
    assert not np.allclose(clf.class_text_features(), clf.module_.zero_shot_features.numpy())
    assert clf.score(X, y) >= probe().score(X, y)
    assert len(clf.history_) == 20 and clf.fit_epochs_ == 20
    assert str(clf.optimizer_.__class__.__name__) == "Adam"


def test_the_pull_keeps_the_weights_near_zero_shot(images):
    X, y = images

    def drift(lambda_kg):
        clf = probe(lambda_kg=lambda_kg, max_epochs=50).fit(X, y)
        return float((1 - (clf.class_text_features() * clf.module_.zero_shot_features.numpy()).sum(1)).mean())

    assert drift(100.0) < drift(0.0) / 4


def test_training_runs_in_one_thread_and_restores_the_count(images, monkeypatch):
    X, y = images
    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        clf = probe(max_epochs=3)
        original = type(clf).train_step

        def step(self, *args, **kwargs):
            seen.append(torch.get_num_threads())
            return original(self, *args, **kwargs)

        monkeypatch.setattr(type(clf), "train_step", step)
        clf.fit(X, y)
        assert seen == [TRAIN_THREADS] * 3 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_clone_pickle_and_parameters(images):
    X, y = images
    clf = probe(lambda_kg=3.0).fit(X, y)
    twin = clone(clf)
    assert twin.get_params()["lambda_kg"] == 3.0 and not twin.initialized_
    assert "n_ctx" not in clf.get_params() and "train_visual_norm" not in clf.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'n_ctx'"):
        clf.set_params(n_ctx=4)       # a prompt parameter means nothing to a head
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert repr(clf) == "ClipLinearProbe(class_names=['cat', 'dog', 'car'], model_name='tiny-vit', " \
                        "lambda_kg=3.0, max_epochs=20, random_state=0, verbose=0)"


def test_a_saved_head_does_not_load_into_a_prompt_learner(images, tmp_path):
    X, y = images
    probe().fit(X, y).save_params(f_params=tmp_path / "head.pt")
    prompt = ClipPromptClassifier(["cat", "dog", "car"], model_name="tiny-vit", verbose=0).initialize()
    with pytest.raises(ValueError, match="does not fit this model"):
        prompt.load_params(f_params=tmp_path / "head.pt")


def test_active_learning_with_cec_and_class_names(images):
    X, y = images
    names = np.array(["cat", "dog", "car"])
    learner = ActiveLearner(estimator=probe(), query_strategy=cec_query)
    picked, _ = learner.query(X, n_instances=3, random_state=0)   # cold start: zero-shot
    learner.teach(X[picked], names[y[picked]])
    picked, _ = learner.query(np.delete(X, picked, axis=0), n_instances=3, random_state=1)
    assert len(set(np.asarray(picked).tolist())) == 3
    assert set(learner.predict(X)) <= set(names)


def test_ueo_trains_the_head_on_unlabeled_images(images):
    X, y = images
    clf = probe(fit_mode="ueo", max_epochs=5).fit(X[:3], y[:3], X_unlabeled=X[3:])
    assert [name for name, _ in clf.get_all_learnable_params()] == ["class_weights"]
    assert clf.module_.visual is None    # the image encoder stays frozen


def test_estimators_by_name():
    assert list_estimators() == ["prompt", "linear"]
    assert get_estimator("prompt") is ClipPromptClassifier and get_estimator("linear") is ClipLinearProbe
    with pytest.raises(ValueError, match="unknown learner 'coop'; valid: prompt, linear"):
        get_estimator("coop")


def test_the_runner_records_the_learner_only_when_it_is_not_the_default(tmp_path):
    import json

    from modal_vlm import cli

    folder = write_image_folder(tmp_path / "images")
    base = ["run", "--data", str(folder), "--model", "tiny-vit", "--epochs", "2", "--seed", "0",
            "--rounds", "1", "--quiet"]
    assert cli.main(base + ["--out", str(tmp_path / "linear"), "--learner", "linear"]) == 0
    assert cli.main(base + ["--out", str(tmp_path / "prompt"), "--batch-size", "4"]) == 0
    linear = json.loads((tmp_path / "linear" / "config.json").read_text())["config"]
    prompt = json.loads((tmp_path / "prompt" / "config.json").read_text())["config"]
    assert linear["learner"] == "linear" and linear["classifier"]["optimizer"] == "torch.optim.adam.Adam"
    assert "learner" not in prompt and "n_ctx" in prompt["classifier"]   # as before the option existed
    assert cli.main(base + ["--out", str(tmp_path / "bad"), "--learner", "coop"]) == 2
