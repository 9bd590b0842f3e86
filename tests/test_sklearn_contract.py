"""The scikit-learn contract: scikit-learn's own estimator checks, tags, params and repr,
class-name labels, the outlier-score convention.

scikit-learn's checks feed 2-d feature matrices, and ClipPromptClassifier takes images (its
tags say so, and ``check_estimator`` on it then runs nothing but ``check_estimator_cloneable``).
The checks therefore run on :class:`FeatureImagesClassifier`: the estimator itself, with its
input drawn from each feature vector as a tiny image (the only change). The checks that
cannot apply are listed in :data:`NOT_APPLICABLE` with the reason; the data-free API checks
also run on the estimator itself.
"""
import warnings

import numpy as np
from torch.utils.data import Dataset as TorchDataset
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.utils import check_array, get_tags
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from modal_vlm import ClipLinearProbe, ClipPromptClassifier

#: Estimator checks that cannot pass, by name, with the reason (also in docs/contracts.rst).
NOT_APPLICABLE = {
    "check_no_attributes_set_in_init":
        "skorch's NeuralNet.__init__ sets history_, initialized_ and virtual_params_ and keeps "
        "nested parameters (optimizer__momentum) as attributes: skorch's get_params, set_params "
        "and clone rely on it",
    "check_do_not_raise_errors_in_init_or_set_params":
        "the smoke test passes every name of the signature, the catch-all **kwargs included, as a "
        "parameter called 'kwargs', which set_params rightly rejects as unknown",
    "check_n_features_in":
        "images have no feature count: any size is valid input (the encoder resizes it), so there "
        "is no n_features_in_",
    "check_n_features_in_after_fitting": "no n_features_in_ (images of any size)",
    "check_classifiers_train":
        "asserts that predict rejects a different number of features; images of any size are valid",
    "check_estimators_partial_fit_n_features":
        "asserts that partial_fit rejects a different number of features; images of any size are valid",
    "check_classifiers_classes":
        "the classes are class_names, fixed before any fit, not learned from y: labels outside "
        "class_names are rejected and classes_ lists every class in class_names' order",
    "check_transformer_data_not_an_array":
        "transform() returns the embeddings, but the estimator is a classifier, not a scikit-learn "
        "transformer (no fit_transform, no set_output)",
    "check_transformer_general": "not a scikit-learn transformer (see check_transformer_data_not_an_array)",
}

#: Checks on the estimator itself that need no data (its real tags and signature).
API_CHECKS = ["check_estimator_cloneable", "check_estimator_repr", "check_get_params_invariance",
              "check_set_params", "check_estimator_tags_renamed", "check_valid_tag_types",
              "check_parameters_default_constructible", "check_mixin_order"]

CLASS_NAMES = [f"class{i}" for i in range(10)]  # the checks use up to 10 integer labels


def draw_features(X) -> np.ndarray:
    """Each feature vector as an 8x8 RGB image (features cycled, squashed to 0..255)."""
    X = check_array(X, dtype=np.float64)
    pixels = X[:, np.arange(8 * 8 * 3) % X.shape[1]]
    return np.round(255 / (1 + np.exp(-pixels))).astype(np.uint8).reshape(-1, 8, 8, 3)


class FeatureImagesClassifier(ClipPromptClassifier):
    """ClipPromptClassifier on feature matrices: every method sees the drawn images."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.one_d_array = tags.input_tags.three_d_array = tags.input_tags.string = False
        return tags

    def check_data(self, X, y):
        # fit hands skorch its ready-built training set, which skorch checks again: as it is.
        return super().check_data(X if isinstance(X, TorchDataset) else draw_features(X), y)

    def transform(self, X):
        return super().transform(draw_features(X))

    def frozen_transform(self, X):
        return super().frozen_transform(draw_features(X))


class FeatureImagesProbe(FeatureImagesClassifier, ClipLinearProbe):
    """The linear head (``ClipLinearProbe``) on feature matrices drawn as images."""


def small(cls=ClipPromptClassifier, **params):
    defaults = dict(model_name="tiny-vit", n_ctx=2, max_epochs=2, batch_size=16, verbose=0, random_state=0)
    return cls(params.pop("class_names", CLASS_NAMES), **{**defaults, **params})


@parametrize_with_checks([small(FeatureImagesClassifier),
                          FeatureImagesProbe(CLASS_NAMES, model_name="tiny-vit", max_epochs=2, verbose=0,
                                             random_state=0)],
                         expected_failed_checks=lambda est: NOT_APPLICABLE,
                         xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        check(estimator)


@pytest.mark.parametrize("check_name", API_CHECKS)
def test_scikit_learn_api_checks_on_the_estimator_itself(check_name):
    estimator = small()
    with warnings.catch_warnings():
        # check_set_params warns where skorch's set_params rejects its fuzz values (callbacks=inf)
        warnings.simplefilter("ignore", UserWarning)
        getattr(estimator_checks, check_name)(type(estimator).__name__, estimator)


def test_the_not_applicable_checks_exist():
    # A renamed or removed check would silently leave the list: every name must be a check.
    assert all(callable(getattr(estimator_checks, name, None)) for name in NOT_APPLICABLE)


def test_tags_tell_the_truth(images):
    X, _ = images
    tags = get_tags(small())
    assert tags.requires_fit is False and tags.estimator_type == "classifier"
    assert not tags.input_tags.two_d_array and tags.input_tags.three_d_array and tags.input_tags.string
    assert tags.target_tags.required and tags.classifier_tags.multi_class
    assert small().predict(X).shape == (12,)  # requires_fit=False: zero-shot before fit
    with pytest.raises(ValueError):
        small().fit(X.reshape(12, -1).astype(np.float32), np.arange(12) % 3)  # a 2-d matrix is not images


def test_get_params_is_the_constructor_and_set_nested_params():
    clf = small(optimizer=torch.optim.Adam, optimizer__betas=(0.8, 0.9), iterator_train__num_workers=0)
    params = clf.get_params(deep=False)
    assert "_params_to_validate" not in params
    assert not any(k.startswith("callbacks__") for k in clf.get_params(deep=True))  # built-ins stay internal
    assert params["optimizer"] is torch.optim.Adam and params["optimizer__betas"] == (0.8, 0.9)
    assert params["iterator_train__num_workers"] == 0 and "optimizer__momentum" not in params  # SGD's
    assert small().get_params()["optimizer__momentum"] == 0.9
    assert set(params) == set(ClipPromptClassifier._constructor_defaults()) - {
        "optimizer__momentum", "optimizer__weight_decay"} | {"optimizer__betas", "iterator_train__num_workers"}
    twin = clone(clf)
    assert twin.get_params(deep=False).keys() == params.keys()
    twin.set_params(optimizer__betas=(0.5, 0.5), lr=0.01)
    assert twin.get_params()["optimizer__betas"] == (0.5, 0.5)
    X = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    twin.fit(X, [0, 1, 2, 3])
    assert twin.optimizer_.param_groups[0]["betas"] == (0.5, 0.5)


def test_user_callbacks_appear_in_deep_params():
    from skorch.callbacks import EpochScoring

    clf = small(callbacks=[("train_acc", EpochScoring("accuracy", on_train=True))])
    clf.initialize()
    assert clf.get_params()["callbacks__train_acc__on_train"] is True
    assert "callbacks__print_log" not in clf.get_params()


def test_repr_shows_the_non_default_parameters():
    assert repr(ClipPromptClassifier(["cat", "dog"])) == "ClipPromptClassifier(class_names=['cat', 'dog'])"
    clf = ClipPromptClassifier(CLASS_NAMES, model_name="tiny-vit", lr=0.02, optimizer=torch.optim.Adam,
                               optimizer__momentum=0.5)
    assert repr(clf) == ("ClipPromptClassifier(class_names=['class0', 'class1', 'class2', 'class3', 'class4', "
                         "'class5', ...], model_name='tiny-vit', lr=0.02, optimizer=torch.optim.adam.Adam, "
                         "optimizer__momentum=0.5)")
    assert repr(clone(clf)) == repr(clf)


def test_class_names_as_labels(images):
    X, y = images
    names = np.array(["cat", "dog", "car"])
    by_index = small(class_names=list(names)).fit(X, y)
    by_name = small(class_names=list(names)).fit(X, names[y])
    np.testing.assert_array_equal(by_name.predict_proba(X), by_index.predict_proba(X))  # the same fit
    np.testing.assert_array_equal(by_name.classes_, names)
    np.testing.assert_array_equal(by_name.predict(X), names[by_index.predict(X)])
    assert by_name.score(X, names[y]) == by_name.score(X, y) == by_index.score(X, names[y])
    by_name.fit(X, y)  # indices again: predictions are indices again
    assert by_name.predict(X).dtype.kind == "i"
    assert clone(small(class_names=list(names)).fit(X, names[y])).classes_.tolist() == [0, 1, 2]


def test_rejected_fit_keeps_the_label_kind(images):
    X, y = images
    names = np.array(["cat", "dog", "car"])
    clf = small(class_names=list(names)).fit(X, names[y])
    with pytest.raises(ValueError, match="Unknown labels"):
        clf.fit(X, np.array(["cat", "dog", "cow"] * 4))
    assert clf.predict(X).dtype.kind == "U"


def test_cross_validation_with_class_names(images):
    X, y = images
    names = np.array(["cat", "dog", "car"])[y]
    scores = cross_val_score(small(class_names=["cat", "dog", "car"], max_epochs=1), X, names, cv=2,
                             scoring="accuracy")
    np.testing.assert_array_equal(scores, cross_val_score(
        small(class_names=["cat", "dog", "car"], max_epochs=1), X, y, cv=2, scoring="accuracy"))


@pytest.mark.parametrize("classes, predicted", [(["cat", "dog", "car"], "U"), (range(3), "i")])
def test_skorch_classes_is_honoured(images, classes, predicted):
    X, y = images
    clf = small(class_names=["cat", "dog", "car"], classes=classes)
    assert clf.predict(X).dtype.kind == predicted  # zero-shot already
    assert clf.fit(X, np.array(["cat", "dog", "car"])[y]).predict(X).dtype.kind == predicted


@pytest.mark.parametrize("classes", [["cat", "cow"], [0, 1], range(4)])
def test_skorch_classes_that_contradict_class_names_are_rejected(images, classes):
    X, y = images
    with pytest.raises(ValueError, match="does not match class_names"):
        small(class_names=["cat", "dog", "car"], classes=classes).fit(X, y)


def test_partial_fit_classes(images):
    X, y = images
    clf = small(class_names=["cat", "dog", "car"])
    assert clf.partial_fit(X, y, classes=[0, 1, 2]) is clf
    clf.partial_fit(X, np.array(["cat", "dog", "car"])[y], classes=["cat", "dog"])
    with pytest.raises(ValueError, match=r"\['cow'\] are not all in class_names"):
        clf.partial_fit(X, y, classes=["cow"])


def test_column_vector_y_warns_like_scikit_learn(images):
    from sklearn.exceptions import DataConversionWarning

    X, y = images
    with pytest.warns(DataConversionWarning):
        clf = small().fit(X, y[:, None])
    np.testing.assert_array_equal(clf.predict_proba(X), small().fit(X, y).predict_proba(X))


def test_score_samples_is_higher_for_in_distribution(images):
    X, _ = images
    clf = small(class_names=["cat", "dog", "car"])
    scores = clf.score_samples(X)
    cosine = clf.transform(X) @ clf.class_text_features().T
    np.testing.assert_allclose(scores, cosine.max(axis=1), atol=1e-6)
    assert scores.shape == (12,) and np.all(np.abs(scores) <= 1 + 1e-6)
    probability = clf.set_params(ood_score="max_probability").score_samples(X)
    np.testing.assert_allclose(probability, clf.predict_proba(X).max(axis=1))
    assert np.all(probability >= 1 / 3 - 1e-6)
    with pytest.raises(ValueError, match="ood_score must be one of 'max_cosine', 'max_probability', got 'energy'"):
        clf.set_params(ood_score="energy").score_samples(X)
