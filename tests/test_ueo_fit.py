"""UEO and InfoMax fit modes of ClipPromptClassifier (unit level, tiny backbone)."""
import numpy as np
import pytest
import torch
from modAL.models import ActiveLearner

from modal_vlm.model.losses import infomax_loss, ueo_loss, ueo_sample_weights
from modal_vlm.model.training_data import SemiSupervisedBatchSampler, norm_adapted_copy

UEO = dict(fit_mode="ueo", unlabeled_batch_size=4, ctx_init="a photo of a", class_specific_ctx=False)


def semi_labels(y):
    y = y.copy()
    y[6:] = -1
    return y


def test_minus_one_labels_and_X_unlabeled_are_the_same_training(make_clf, images):
    X, y = images
    a = make_clf(train_visual_norm=False, **UEO).fit(X, semi_labels(y))
    b = make_clf(train_visual_norm=False, **UEO).fit(X[:6], y[:6], X_unlabeled=X[6:])
    np.testing.assert_allclose(a.history[:, "train_loss"], b.history[:, "train_loss"], rtol=1e-6)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-6)


def test_unlabeled_term_changes_the_fit(make_clf, images):
    X, y = images
    supervised = make_clf(train_visual_norm=False, **{**UEO, "fit_mode": "supervised"}).fit(X[:6], y[:6])
    semi = make_clf(train_visual_norm=False, **UEO).fit(X[:6], y[:6], X_unlabeled=X[6:])
    assert not np.allclose(supervised.predict_proba(X), semi.predict_proba(X))
    without = make_clf(train_visual_norm=False, lambda_ueo=0.0, **UEO).fit(X[:6], y[:6], X_unlabeled=X[6:])
    np.testing.assert_allclose(without.predict_proba(X), supervised.predict_proba(X), atol=1e-5)


def test_fully_unsupervised_fit(make_clf, images):
    X, _ = images
    clf = make_clf(**UEO)
    zero_shot = clf.predict_proba(X)
    clf.fit(X, np.full(len(X), -1))
    assert len(clf.history) == 3
    assert not np.allclose(clf.predict_proba(X), zero_shot)


def test_get_loss_is_ce_plus_lambda_ueo_with_zero_shot_weights(make_clf, images):
    X, y = images
    clf = make_clf(lambda_ueo=0.5, ueo_temperature=0.5, train_visual_norm=False, **UEO)
    labels = semi_labels(y)
    clf.initialize()
    dataset = clf.get_dataset(X, labels)
    frozen = torch.from_numpy(clf.frozen_transform(X))
    expected_w = ueo_sample_weights(frozen @ clf.module_.zero_shot_features.T, 0.5)
    torch.testing.assert_close(dataset.weights, expected_w)
    logits = torch.randn(12, 3)
    batch = {"x": frozen, "weight": dataset.weights}
    expected = (torch.nn.functional.cross_entropy(logits[:6], torch.as_tensor(y[:6]))
                + 0.5 * ueo_loss(logits[6:] * 100 / clf.module_.logit_scale, expected_w[6:]))
    torch.testing.assert_close(clf.get_loss(logits, torch.as_tensor(labels), X=batch), expected)
    infomax = make_clf(fit_mode="infomax", train_visual_norm=False).initialize()
    batch = {"x": frozen, "weight": infomax.get_dataset(X, np.full(12, -1)).weights}
    torch.testing.assert_close(infomax.get_loss(logits, torch.full((12,), -1), X=batch),
                               infomax_loss(logits * 100 / infomax.module_.logit_scale))


def test_visual_norm_training_changes_only_norm_affines_and_never_serves_stale_embeddings(make_clf, images):
    X, y = images
    clf = make_clf(**UEO)  # train_visual_norm="auto" -> True in UEO mode
    frozen_before = clf.transform(X)
    shared = {n: p.clone() for n, p in clf.backbone_.named_parameters()}
    clf.fit(X, semi_labels(y))
    adapted = clf.module_.visual
    changed = {n for n, p in adapted.named_parameters() if not torch.equal(p, shared[f"visual.{n}"])}
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert all(n.split(".")[-1] in ("weight", "bias") and ("ln" in n or "norm" in n) for n in trainable)
    assert all(torch.equal(p, shared[n]) for n, p in clf.backbone_.named_parameters())  # shared model untouched
    after = clf.transform(X)
    assert not np.allclose(after, frozen_before)
    np.testing.assert_array_equal(clf.frozen_transform(X), frozen_before)
    reference = torch.nn.functional.normalize(adapted(torch.stack(
        [clf.backbone_.preprocess(__import__("PIL.Image").Image.fromarray(x)) for x in X])), dim=-1)
    np.testing.assert_allclose(after, reference.detach().numpy(), atol=1e-5)


def test_prompt_only_ueo_keeps_the_cache(make_clf, images):
    X, y = images
    clf = make_clf(train_visual_norm=False, **UEO).fit(X, semi_labels(y))
    assert clf.module_.visual is None
    np.testing.assert_array_equal(clf.transform(X), clf.frozen_transform(X))


def test_modal_teach_passes_the_pool(make_clf, images):
    X, y = images
    learner = ActiveLearner(estimator=make_clf(train_visual_norm=False, **UEO))
    learner.teach(X[:3], y[:3], X_unlabeled=X[3:])
    assert len(learner.estimator.history) == 3
    reference = make_clf(train_visual_norm=False, **UEO).fit(X[:3], y[:3], X_unlabeled=X[3:])
    np.testing.assert_allclose(learner.predict_proba(X), reference.predict_proba(X), atol=1e-6)


def test_ood_score_follows_the_learned_prompt(make_clf, images):
    X, y = images
    clf = make_clf(fit_mode="ueo", train_visual_norm=False).fit(X[:6], y[:6], X_unlabeled=X[6:])
    cosine = clf.transform(X) @ clf.class_text_features().T
    np.testing.assert_allclose(clf.score_samples(X), cosine.max(1), atol=1e-6)
    clf.set_params(ood_score="max_probability")
    np.testing.assert_allclose(clf.score_samples(X), clf.predict_proba(X).max(1))


@pytest.mark.parametrize("params, fit_args, match", [
    (dict(fit_mode="bogus"), {}, "fit_mode must be one of"),
    (dict(), dict(y=np.r_[np.zeros(6), -np.ones(6)].astype(int)), "use fit_mode='ueo'"),
    (dict(), dict(X_unlabeled=np.zeros((2, 32, 32, 3), np.uint8)), "X_unlabeled is used by"),
    (dict(fit_mode="ueo", ueo_temperature=0), {}, "ueo_temperature"),
    (dict(fit_mode="ueo"), dict(y=np.r_[np.zeros(6), -3 * np.ones(6)].astype(int)), r"Unknown labels \[-3\]"),
])
def test_bad_ueo_settings(make_clf, images, params, fit_args, match):
    X, y = images
    kwargs = {"y": y, **fit_args}
    with pytest.raises(ValueError, match=match):
        make_clf(**params).fit(X, **kwargs)


def test_batch_sampler_pairs_labeled_with_streamed_unlabeled():
    labels = [0, 1, 2, -1, -1, -1, -1, -1]
    sampler = SemiSupervisedBatchSampler(labels, 2, 3, seed=0)
    batches = list(sampler) + list(sampler)
    assert len(sampler) == 2 and len(batches) == 4
    for batch in batches:
        assert len(set(batch)) == len(batch)
        assert 1 <= sum(i < 3 for i in batch) <= 2 and sum(i >= 3 for i in batch) == 3
    unlabeled = [i for batch in batches for i in batch if i >= 3]
    assert sorted(unlabeled[:5]) == [3, 4, 5, 6, 7]  # a full pass before any repeat
    only_unlabeled = SemiSupervisedBatchSampler([-1] * 5, 2, 2)
    assert sorted(i for b in only_unlabeled for i in b) == [0, 1, 2, 3, 4] and len(only_unlabeled) == 3


def test_norm_adapted_copy_for_batchnorm():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    adapted = norm_adapted_copy(net)
    assert [n for n, p in adapted.named_parameters() if p.requires_grad] == ["1.weight", "1.bias"]
    assert all(p.requires_grad for p in net.parameters())  # the original is untouched


def test_augmented_training_is_seeded_by_random_state_alone(make_clf, images):
    """Images trained through the encoder are augmented: with random_state the fit must not
    depend on torch's global generator (what ran before), nor change it."""
    import torch

    X, y = images
    fits = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        clf = make_clf(**UEO, train_visual_norm=True, max_epochs=2).fit(X, y)
        assert torch.equal(torch.get_rng_state(), state)
        fits.append(clf.predict_proba(X))
    np.testing.assert_array_equal(fits[0], fits[1])
