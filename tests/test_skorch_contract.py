"""The skorch contract: validation splits and scoring callbacks, the learning-rate schedule
across fit / partial_fit, user schedulers, optimizers and batch sizes."""
import numpy as np
import pytest
import torch
from skorch.callbacks import BatchScoring, EarlyStopping, EpochScoring, LRScheduler
from skorch.dataset import ValidSplit


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), np.arange(24) % 3


def schedule(lr, max_epochs, warmup_epochs=1, warmup_lr=1e-5):
    return [warmup_lr] * warmup_epochs + [lr * 0.5 * (1 + np.cos(np.pi * t / max_epochs))
                                          for t in range(max_epochs - warmup_epochs)]


def test_valid_split_records_validation_loss_and_accuracy_per_epoch(make_clf, data):
    X, y = data
    clf = make_clf(train_split=ValidSplit(4, stratified=True)).fit(X, y)
    assert len(clf.history) == 3
    valid_acc = clf.history[:, "valid_acc"]
    assert all(0.0 <= acc <= 1.0 for acc in valid_acc)
    assert all(np.isfinite(clf.history[:, "valid_loss"]))
    assert sum(b["train_batch_size"] for b in clf.history[-1, "batches"] if "train_batch_size" in b) == 18


def test_valid_acc_matches_a_refit_on_the_training_part(make_clf, data):
    X, y = data
    split = ValidSplit(4, stratified=True)
    clf = make_clf(train_split=split, max_epochs=2).fit(X, y)
    train_idx, valid_idx = (np.asarray(part.indices) for part in split(clf.get_dataset(X, y), y))
    # the last epoch's model is the fitted one: its accuracy on the held-out images
    assert clf.history[-1, "valid_acc"] == pytest.approx(clf.score(X[valid_idx], y[valid_idx]))
    assert len(train_idx) == 18


@pytest.mark.parametrize("on_train", [True, False])
def test_epoch_scoring_accuracy(make_clf, data, on_train):
    X, y = data
    callbacks = [EpochScoring("accuracy", on_train=on_train, lower_is_better=False, name="acc")]
    clf = make_clf(train_split=ValidSplit(4, stratified=True), callbacks=callbacks).fit(X, y)
    assert all(0.0 <= acc <= 1.0 for acc in clf.history[:, "acc"])
    if not on_train:
        np.testing.assert_allclose(clf.history[:, "acc"], clf.history[:, "valid_acc"])


def test_epoch_scoring_on_train_with_class_names(make_clf, data):
    X, y = data
    names = np.array(["cat", "dog", "car"])
    callbacks = [EpochScoring("accuracy", on_train=True, lower_is_better=False, name="train_acc")]
    by_name = make_clf(callbacks=callbacks).fit(X, names[y])
    by_index = make_clf(callbacks=callbacks).fit(X, y)
    # scored on indices during training, whatever the labels: names would score 0
    assert by_name.history[:, "train_acc"] == by_index.history[:, "train_acc"]
    assert max(by_name.history[:, "train_acc"]) > 0
    refit = by_name.fit(X, names[y])  # a second fit on names: classes_ are names between the fits
    assert refit.history[:, "train_acc"] == by_index.history[:, "train_acc"]


def test_batch_scoring(make_clf, data):
    X, y = data
    clf = make_clf(callbacks=[BatchScoring("accuracy", on_train=True, name="batch_acc")]).fit(X, y)
    assert 0.0 <= clf.history[-1, "batch_acc"] <= 1.0


def test_scoring_without_the_prediction_cache_is_rejected_before_training(make_clf, data):
    X, y = data
    clf = make_clf().fit(X, y)
    before = clf.predict_proba(X)
    bad = EpochScoring("accuracy", use_caching=False)
    with pytest.raises(ValueError, match="use_caching=True"):
        clf.set_params(callbacks=[bad]).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_valid_split_in_the_ueo_modes_scores_labeled_samples_only(make_clf, data):
    X, y = data
    semi = np.where(np.arange(24) < 12, y, -1)
    clf = make_clf(fit_mode="ueo", train_visual_norm=False, train_split=ValidSplit(4, stratified=True)).fit(X, semi)
    assert all(0.0 <= acc <= 1.0 for acc in clf.history[:, "valid_acc"])


def test_every_fit_runs_the_whole_schedule(make_clf, data):
    X, y = data
    clf = make_clf(max_epochs=4, lr=0.01).fit(X, y)
    assert clf.history[:, "lr"] == pytest.approx(schedule(0.01, 4))
    clf.partial_fit(X, y)  # a warm restart, not the cosine continued past its end
    assert clf.history[:, "lr"] == pytest.approx(schedule(0.01, 4) * 2)
    clf.set_params(lr=0.1, max_epochs=2, warmup_epochs=0).partial_fit(X, y)  # the new settings
    assert clf.history[-2:, "lr"] == pytest.approx(schedule(0.1, 2, warmup_epochs=0))
    warm = make_clf(max_epochs=4, lr=0.01, warm_start=True).fit(X, y).fit(X, y)
    assert warm.history[:, "lr"] == pytest.approx(schedule(0.01, 4) * 2)


def test_partial_fit_continues_from_the_current_prompt(make_clf, data):
    X, y = data
    clf = make_clf().fit(X, y)
    trained = clf.module_.prompt_learner.ctx.detach().clone()
    clf.partial_fit(X, y)
    assert len(clf.history) == 6  # one history, continued
    assert not torch.equal(clf.module_.prompt_learner.ctx, trained)  # trained further
    refit = clf.fit(X, y)  # fit starts afresh: the first fit again (same seed)
    torch.testing.assert_close(refit.module_.prompt_learner.ctx, trained)


def test_lr_zero_trains_only_during_the_warm_up(make_clf, data):
    X, y = data
    clf = make_clf(lr=0.0, warmup_epochs=0).initialize()
    initial = clf.module_.prompt_learner.ctx.detach().clone()
    clf.fit(X, y)
    assert clf.history[:, "lr"] == [0.0, 0.0, 0.0]
    torch.testing.assert_close(clf.module_.prompt_learner.ctx, initial)  # fit re-initialises, same seed
    warm = make_clf(lr=0.0, warmup_epochs=1).fit(X, y)
    assert warm.history[:, "lr"] == [1e-5, 0.0, 0.0]


@pytest.mark.parametrize("name, value, match", [
    ("batch_size", 0, "batch_size must be an integer >= 1, or -1"),
    ("batch_size", -2, "batch_size must be"),
    ("batch_size", 2.5, "batch_size must be"),
    ("unlabeled_batch_size", 0, "unlabeled_batch_size must be"),
    ("encode_batch_size", -1, "encode_batch_size must be an integer >= 1"),
    ("lr", -0.1, "lr must be a number >= 0"),
    ("lr", float("nan"), "lr must be a number >= 0"),
    ("warmup_lr", -1e-5, "warmup_lr must be"),
    ("max_epochs", -1, "max_epochs must be an integer >= 0"),
    ("warmup_epochs", 1.5, "warmup_epochs must be"),
])
def test_bad_training_params_are_rejected_before_anything_changes(make_clf, data, name, value, match):
    X, y = data
    clf = make_clf().fit(X, y)
    before = clf.predict_proba(X)
    with pytest.raises(ValueError, match=match):
        clf.set_params(**{name: value}).fit(X, y)
    if name.endswith("batch_size"):
        with pytest.raises(ValueError, match=match):  # predictions use batches too
            clf.predict_proba(X)
    np.testing.assert_array_equal(clf.set_params(**{name: make_clf().get_params()[name]}).predict_proba(X), before)


def test_batch_size_minus_one_is_one_batch(make_clf, data):
    X, y = data
    clf = make_clf(batch_size=-1).fit(X, y)
    assert clf.history[:, "train_batch_count"] == [1, 1, 1]
    assert clf.predict_proba(X).shape == (24, 3)


def test_a_user_lr_scheduler_replaces_the_built_in_one(make_clf, data):
    X, y = data
    user = LRScheduler(policy=torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    clf = make_clf(lr=0.01, callbacks=[user]).fit(X, y)
    assert "lr_scheduler" not in dict(clf.callbacks_)
    assert "lr" not in clf.history[-1]
    assert clf.history[:, "event_lr"] == pytest.approx([0.01, 0.005, 0.0025])  # starts at lr, not stacked
    constant = make_clf(lr=0.01, callbacks__lr_scheduler=None).fit(X, y)
    assert constant.optimizer_.param_groups[0]["lr"] == 0.01


def test_other_optimizers_and_parameter_groups(make_clf, data):
    X, y = data
    adam = make_clf(optimizer=torch.optim.Adam, lr=0.01).fit(X, y)
    assert isinstance(adam.optimizer_, torch.optim.Adam)
    grouped = make_clf(lr=0.01, max_epochs=2, warmup_epochs=0,
                       optimizer__param_groups=[("prompt_learner.ctx", {"lr": 0.02})]).fit(X, y)
    assert grouped.optimizer_.param_groups[0]["lr"] == pytest.approx(2 * schedule(0.01, 2, 0)[-1])


def test_skorch_early_stopping_ends_the_fit_instead_of_interrupting_it(make_clf, data):
    # EarlyStopping stops training by raising KeyboardInterrupt, as Ctrl-C does; only Ctrl-C
    # undoes the fit.
    X, y = data
    stop = EarlyStopping(monitor="train_loss", patience=2, threshold=10.0, sink=lambda *_: None)
    clf = make_clf(max_epochs=20, callbacks=[stop]).fit(X, y)
    assert len(clf.history_) == 3 and clf.module_.prompt_trained   # fitted: stopped after 1 + patience epochs
    assert clf.fit_epochs_ == 20
