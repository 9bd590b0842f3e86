"""The canonical use: modAL's own ActiveLearner around ClipPromptClassifier, on what a fresh
install resolves (modAL-python 0.4.1 with scikit-learn >= 1.8)."""
import inspect

import numpy as np
import pytest
from modAL.models import ActiveLearner
from modAL.uncertainty import uncertainty_sampling

import modal_vlm
from modal_vlm import compat


def test_active_learning_loop_from_cold_start(make_clf, images):
    X, y = images
    learner = ActiveLearner(estimator=make_clf(max_epochs=2), query_strategy=uncertainty_sampling)
    pool = np.arange(len(X))
    taught = []
    for _ in range(3):
        query_idx, query_inst = learner.query(X[pool], n_instances=2)
        assert len(set(query_idx.tolist())) == 2
        np.testing.assert_array_equal(query_inst, X[pool][query_idx])
        learner.teach(X[pool][query_idx], y[pool][query_idx])
        taught += pool[query_idx].tolist()
        pool = np.delete(pool, query_idx)
    assert learner.X_training.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(learner.y_training, y[taught])
    assert bool(learner.estimator.module_.prompt_trained)
    assert 0.0 <= learner.score(X, y) <= 1.0


def test_loop_with_initial_labels_and_image_paths(make_clf, images, image_files):
    _, y = images
    paths = np.array(image_files)
    learner = ActiveLearner(estimator=make_clf(max_epochs=1), query_strategy=uncertainty_sampling,
                            X_training=paths[:3], y_training=y[:3])
    idx, _ = learner.query(paths[3:])
    learner.teach(paths[3:][idx], y[3:][idx])
    assert len(learner.X_training) == 4
    assert learner.predict(paths).shape == (12,)


def test_teach_rejects_unknown_labels(make_clf, images):
    X, y = images
    learner = ActiveLearner(estimator=make_clf(max_epochs=1))
    with pytest.raises(ValueError, match=r"Unknown labels \[7\]"):
        learner.teach(X[:2], np.array([0, 7]))


def test_compat_patch_is_applied_where_scikit_learn_needs_it():
    from sklearn.utils import check_X_y as sklearn_check_X_y
    import modAL.models.base as modal_base

    needs = "force_all_finite" not in inspect.signature(sklearn_check_X_y).parameters
    assert (modal_base.check_X_y is compat.check_X_y) == needs
    assert modal_vlm.compat.patch_modal() is False  # idempotent


def test_compat_check_X_y_translates_the_old_keyword():
    X = np.array([[1.0, np.nan]])
    with pytest.raises(ValueError, match="NaN"):
        compat.check_X_y(X, [0], force_all_finite=True)
    Xc, _ = compat.check_X_y(X, [0], force_all_finite=False)
    assert np.isnan(Xc).any()


def test_failed_teach_leaves_the_learner_as_it_was(make_clf, images, image_files, tmp_path):
    _, y = images
    paths = np.array(image_files)
    learner = ActiveLearner(estimator=make_clf(max_epochs=2), X_training=paths[:3], y_training=y[:3])
    before = learner.predict_proba(paths)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(ValueError, match="Cannot read image file .*broken.png"):
        learner.teach(np.array([paths[3], str(broken)]), y[3:5])
    np.testing.assert_array_equal(learner.X_training, paths[:3])
    np.testing.assert_array_equal(learner.y_training, y[:3])
    np.testing.assert_array_equal(learner.predict_proba(paths), before)
    learner.teach(paths[3:5], y[3:5])   # the next teach works: the bad file did not stay behind
    np.testing.assert_array_equal(learner.X_training, paths[:5])


def test_compat_data_vstack_stacks_data_frames_like_pandas_1():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1, 2], "b": [3.0, 4.0]}, index=pd.Index([10, 11], name="id"))
    stacked = compat.data_vstack([frame, frame.iloc[[1]]])
    assert stacked["a"].tolist() == [1, 2, 2] and stacked.index.tolist() == [10, 11, 11]
    rows = compat.data_vstack([frame, frame.iloc[0]])  # a Series is one row, as DataFrame.append had it
    assert rows.shape == (3, 2) and rows.index.name == "id" and rows["b"].tolist() == [3.0, 4.0, 3.0]
    np.testing.assert_array_equal(compat.data_vstack([np.ones((1, 2)), np.zeros((1, 2))]), [[1, 1], [0, 0]])


def test_compat_lets_modal_teach_on_data_frames():
    pd = pytest.importorskip("pandas")
    from sklearn.neighbors import KNeighborsClassifier

    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    learner = ActiveLearner(estimator=KNeighborsClassifier(1), X_training=X.iloc[:2], y_training=np.array([0, 1]))
    learner.teach(X.iloc[2:], np.array([1, 1]))
    assert isinstance(learner.X_training, pd.DataFrame) and len(learner.X_training) == 4


def test_compat_imports_modal_expected_error_without_leaving_np_float():
    import importlib

    expected_error = importlib.import_module("modAL.expected_error")
    assert callable(expected_error.expected_error_reduction)
    assert compat.needed_patches() == [name for name, needed, _ in compat.PATCHES if needed()]
    if "np.float" in compat.needed_patches():
        assert "float" not in vars(np)  # the alias was there for modAL's import only
