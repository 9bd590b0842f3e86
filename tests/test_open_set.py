"""Realistic pools: "none of these classes" as a label (``modal_vlm.NONE``) through the
estimator, modAL's ``teach``, the strategies and the runner; open-set-aware selection; long tails."""
import numpy as np
import pytest
from modAL.models import ActiveLearner
from test_experiment import write_image_folder

import modal_vlm
from modal_vlm import NONE, ClipPromptClassifier
from modal_vlm.experiment import run_active_learning
from modal_vlm.runner import RunConfig, load_run_data
from modal_vlm.runner.curves import summarize
from modal_vlm.runner.pools import long_tail_counts, long_tailed, with_none_images
from modal_vlm.sentinels import UNLABELED, none_mask
from modal_vlm.strategies._pool import QueryPool

TINY = {"model_name": "tiny-vit", "n_ctx": 2, "max_epochs": 2, "batch_size": 4, "verbose": 0, "random_state": 0}


# -- the label ----------------------------------------------------------------------------

def test_none_is_a_public_integer_distinct_from_unlabeled():
    assert modal_vlm.NONE == -2 and "NONE" in modal_vlm.__all__ and NONE != UNLABELED


def test_none_mask_reads_numbers_and_the_text_numpy_stacks_them_to():
    assert none_mask(["cat", "-2", -2, np.int64(-2), "dog", -1]).tolist() == [False, True, True, True, False, False]
    assert none_mask(np.array([0, -2, 3])).tolist() == [False, True, False]
    # a class that is really called "-2" keeps its name
    assert none_mask(["-2", -2], class_names=["-2", "cat"]).tolist() == [False, True]


@pytest.mark.parametrize("by_name", [False, True])
def test_teach_none_through_modal_with_both_label_conventions(images, by_name):
    X, y = images
    names = ["cat", "dog", "car"]
    label = (lambda i: names[i]) if by_name else (lambda i: i)
    learner = ActiveLearner(estimator=ClipPromptClassifier(names, **TINY),
                            X_training=X[:3], y_training=[label(0), NONE, label(1)])
    # modAL stacks y with NumPy: beside names, NONE becomes the text "-2"
    learner.teach(X[3:5], np.array([NONE, label(2)]) if not by_name else np.array([NONE, "car"]))
    learner.teach(X[5:6], [NONE])
    assert np.asarray(learner.y_training).tolist().count(NONE if not by_name else "-2") == 3
    assert set(np.asarray(learner.predict(X)).tolist()) <= set(names if by_name else range(3))
    # the strategies see the "none" marks of the learner's labeled set
    pool = QueryPool(learner, X[6:])
    assert pool.labeled_none.tolist() == [False, True, False, True, False, True]
    assert pool.class_counts().tolist() == [1, 1, 1]


def test_supervised_fit_learns_nothing_from_none_but_keeps_them_labeled(images):
    X, y = images
    junk = np.zeros((4, 32, 32, 3), np.uint8)
    with_none = ClipPromptClassifier(["cat", "dog", "car"], **TINY).fit(
        np.concatenate([X[:6], junk]), np.r_[y[:6], [NONE] * 4])
    without = ClipPromptClassifier(["cat", "dog", "car"], **TINY).fit(X[:6], y[:6])
    np.testing.assert_allclose(with_none.predict_proba(X), without.predict_proba(X), atol=1e-6)
    assert with_none.fit_epochs_ == without.fit_epochs_


def test_a_fit_on_none_alone_is_the_zero_shot_model(images):
    X, _ = images
    clf = ClipPromptClassifier(["cat", "dog", "car"], **{**TINY, "ctx_init": None})  # noise until trained
    zero_shot = clf.predict_proba(X)
    clf.fit(X[:3], [NONE] * 3)
    np.testing.assert_allclose(clf.predict_proba(X), zero_shot, atol=1e-6)
    assert clf.fit_epochs_ == 0


def test_ueo_learns_from_none_with_the_weight_of_certain_ood(images):
    X, y = images
    clf = ClipPromptClassifier(["cat", "dog", "car"], **TINY, fit_mode="ueo", train_visual_norm=False)
    dataset = clf.get_dataset(X[:6], np.r_[y[:3], [NONE] * 3])
    np.testing.assert_allclose(dataset.weights[3:].numpy(), 1 / 3)
    assert np.all(dataset.weights[:3].numpy() > 1 / 3)
    plain = ClipPromptClassifier(["cat", "dog", "car"], **TINY, fit_mode="ueo", train_visual_norm=False)
    fitted = clf.fit(X[:6], np.r_[y[:3], [NONE] * 3])
    assert not np.allclose(fitted.predict_proba(X), plain.fit(X[:3], y[:3]).predict_proba(X))


def test_score_leaves_none_images_out(images):
    X, y = images
    clf = ClipPromptClassifier(["cat", "dog", "car"], **TINY)
    assert clf.score(X, np.r_[y[:6], [NONE] * 6]) == pytest.approx(clf.score(X[:6], y[:6]))
    with pytest.raises(ValueError, match="y holds only modal_vlm.NONE"):
        clf.score(X[:2], [NONE, NONE])


def test_labels_that_are_neither_a_class_nor_none_are_refused(images):
    X, y = images
    with pytest.raises(ValueError, match=r"Unknown labels \[-3\]"):
        ClipPromptClassifier(["cat", "dog", "car"], **TINY).fit(X[:3], [0, -3, 1])
    with pytest.raises(ValueError, match="mixes class names with numbers"):
        ClipPromptClassifier(["cat", "dog", "car"], **TINY).fit(X[:3], ["cat", 1, NONE])


# -- pools and the runner -------------------------------------------------------------------

def test_long_tail_counts_decay_by_a_constant_factor():
    counts = long_tail_counts(200, 10, 100)
    assert counts[0] == 200 and counts[-1] == 2 and np.all(np.diff(counts) < 0)
    y = np.repeat(np.arange(3), 10)
    kept = long_tailed(y, 10, order=[2, 0, 1], random_state=0)
    assert np.bincount(y[kept]).tolist() == [3, 1, 10]
    for bad in (0.5, True, "10"):
        with pytest.raises(ValueError, match="long_tail"):
            long_tailed(y, bad)
    with pytest.raises(ValueError, match="order must list each class"):
        long_tailed(y, 10, order=[0, 1])


def test_run_with_images_of_none_of_the_classes(images):
    X, y = images
    junk = np.random.default_rng(1).integers(0, 40, (6, 32, 32, 3), dtype=np.uint8)
    X_pool, y_pool = with_none_images(X[:9], y[:9], junk[:4])
    X_test, y_test = with_none_images(X[9:], y[9:], junk[4:])
    clf = ClipPromptClassifier(["cat", "dog", "car"], **TINY)
    history = run_active_learning(clf, "cec", X_pool, y_pool, X_test, y_test, rounds=3, budget=3, random_state=0)
    picked = np.concatenate([r["queried"] for r in history[1:]])
    assert history[-1]["n_none"] == int(np.sum(y_pool[picked] == NONE)) and history[-1]["n_labeled"] == 9
    assert sum(history[-1]["class_counts"]) == 9 - history[-1]["n_none"]
    assert 0 <= history[-1]["auroc"] <= 1 and "fpr_at_95_tpr" in history[0]
    # accuracies over the known test images only
    assert history[0]["accuracy"] == pytest.approx(np.mean(clf.predict(X[9:]) == y[9:]))
    row = summarize([{"strategy": "cec", "seed": 0, **r} for r in history])[0]
    assert row["none_share_mean"] == pytest.approx(history[-1]["n_none"] / 9)
    assert row["final_balanced_accuracy_mean"] == pytest.approx(history[-1]["mean_per_class_accuracy"])


def test_ueo_runs_learn_from_the_images_not_yet_labeled(images, monkeypatch):
    X, y = images
    seen = []
    fit = ClipPromptClassifier.fit

    def spy(self, X_, y_, X_unlabeled=None, **kwargs):
        seen.append(None if X_unlabeled is None else len(X_unlabeled))
        return fit(self, X_, y_, X_unlabeled=X_unlabeled, **kwargs)

    monkeypatch.setattr(ClipPromptClassifier, "fit", spy)
    clf = ClipPromptClassifier(["cat", "dog", "car"], **TINY, fit_mode="ueo", train_visual_norm=False)
    history = run_active_learning(clf, "random", X[:9], y[:9], X[9:], y[9:], rounds=2, budget=3, random_state=0)
    assert seen == [6, 3]
    seen.clear()
    run_active_learning(clf, "random", X[:9], y[:9], X[9:], y[9:], rounds=2, budget=3, random_state=0,
                        history=history[:2])
    assert seen == [6, 3]   # a resumed run refits round 1 as the uninterrupted run did


def test_run_data_with_none_images_and_a_long_tail(tmp_path):
    data_dir = write_image_folder(tmp_path / "data", ["a", "b", "c"], 12)
    none_dir = write_image_folder(tmp_path / "junk", ["screens", "blurred"], 5, seed=1)
    config = RunConfig(data=str(data_dir), none_data=str(none_dir), test_size=0.2, long_tail=4).validate()
    data = load_run_data(config)
    assert np.sum(data.y_pool == NONE) == 8 and np.sum(data.y_test == NONE) == 2
    counts = np.bincount(data.y_pool[data.y_pool >= 0]).tolist()
    assert counts == long_tail_counts(counts[0], 3, 4).tolist() and counts[0] > counts[-1]
    summary = data.summary()
    assert summary["pool_none"] == 8 and summary["test_none"] == 2 and summary["source"]["none_data"]
    with pytest.raises(ValueError, match="long_tail"):
        RunConfig(data=str(data_dir), long_tail=0.5).validate()
    with pytest.raises(FileNotFoundError, match="none_data folder"):
        load_run_data(RunConfig(data=str(data_dir), none_data=str(tmp_path / "nowhere")))
    (tmp_path / "config.toml").write_text('data = "data"\nnone_data = "junk"\nlong_tail = 4\n')
    assert RunConfig.from_toml(tmp_path / "config.toml").none_data == str(tmp_path / "junk")


def test_cli_passes_none_data_and_long_tail(tmp_path):
    from modal_vlm.cli import build_parser, run_config

    args = build_parser().parse_args(["run", "--data", "d", "--none-data", "junk", "--long-tail", "100",
                                      "--out", str(tmp_path / "run")])
    config = run_config(args)
    assert config.none_data == "junk" and config.long_tail == 100
