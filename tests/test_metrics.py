import math

import numpy as np
import pytest

from modal_vlm.metrics import classification_metrics, evaluate_open_set, ood_metrics

ID_SCORES = np.arange(1.0, 21.0)  # 20 ID samples: TPR >= 0.95 means accepting 19 of them


def test_ood_metrics_by_hand():
    ood = np.array([1.5, 2.5, 0.5, 30.0])
    scores = np.concatenate([ID_SCORES, ood])
    is_id = np.arange(24) < 20
    result = ood_metrics(scores, is_id)
    # Pairs (ID, OOD) ranked correctly: 19 + 18 + 20 + 0 of 20 * 4.
    assert result["auroc"] == pytest.approx(57 / 80)
    # TPR >= 0.95 needs the threshold at 2 or below; then 2.5 and 30 are accepted.
    assert result["fpr_at_95_tpr"] == pytest.approx(0.5)


def test_tied_scores_are_accepted_together():
    scores = np.concatenate([ID_SCORES, [2.0, 0.0]])
    result = ood_metrics(scores, np.arange(22) < 20)
    # The OOD sample at 2.0 ties with the 19th ID sample: a tie counts half in AUROC,
    # and the threshold 2 that reaches TPR 0.95 accepts it.
    assert result["auroc"] == pytest.approx((18.5 + 20) / 40)
    assert result["fpr_at_95_tpr"] == pytest.approx(0.5)


def test_all_scores_tied():
    assert ood_metrics(np.full(4, 0.3), np.array([True, True, False, False])) == {
        "auroc": 0.5,
        "fpr_at_95_tpr": 1.0,
    }


def test_perfect_and_reversed_scores():
    is_id = np.array([True, True, False, False])
    assert ood_metrics([0.9, 0.8, 0.2, 0.1], is_id) == {"auroc": 1.0, "fpr_at_95_tpr": 0.0}
    assert ood_metrics([0.1, 0.2, 0.8, 0.9], is_id) == {"auroc": 0.0, "fpr_at_95_tpr": 1.0}


@pytest.mark.parametrize(
    "scores, is_id, match",
    [
        ([0.1, 0.2], [True, True], "both ID and OOD"),
        ([0.1, 0.2], [False, False], "both ID and OOD"),
        ([0.1, 0.2, 0.3], [True, False], "same length"),
        ([0.1, math.nan], [True, False], "finite"),
        ([0.1, 0.2], [1, -1], "boolean"),
    ],
)
def test_ood_metrics_rejects_degenerate_input(scores, is_id, match):
    with pytest.raises(ValueError, match=match):
        ood_metrics(scores, is_id)


def test_classification_metrics_by_hand():
    y_true = [0, 0, 0, 0, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 3]  # class 3 never occurs in y_true
    result = classification_metrics(y_true, y_pred)
    assert result["accuracy"] == pytest.approx(4 / 7)
    assert result["mean_per_class_accuracy"] == pytest.approx((3 / 4 + 1 + 0) / 3)


def test_classification_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        classification_metrics([], [])
    with pytest.raises(ValueError, match="same length"):
        classification_metrics([0, 1], [0])


def test_evaluate_open_set_by_hand():
    y_true = np.array([0, 0, 1, 1, -1, -1])
    y_pred = np.array([0, 1, 1, 1, 0, 1])
    scores = np.array([0.9, 0.4, 0.8, 0.7, 0.5, 0.3])
    result = evaluate_open_set(y_true, y_pred, scores)
    assert result["accuracy"] == pytest.approx(3 / 4)
    assert result["mean_per_class_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    # ID 0.4 is below OOD 0.5: 7 of 8 pairs ranked right; TPR 1 needs threshold 0.4.
    assert result["auroc"] == pytest.approx(7 / 8)
    assert result["fpr_at_95_tpr"] == pytest.approx(1 / 2)


def test_evaluate_open_set_other_ood_label_and_closed_set():
    result = evaluate_open_set([0, 1, 99], [0, 0, 1], [0.9, 0.8, 0.1], ood_label=99)
    assert result["auroc"] == 1.0
    closed = evaluate_open_set([0, 1], [0, 0], [0.9, 0.8])
    assert closed["accuracy"] == 0.5
    assert math.isnan(closed["auroc"]) and math.isnan(closed["fpr_at_95_tpr"])


def test_evaluate_open_set_rejects_bad_input():
    with pytest.raises(ValueError, match="no in-distribution"):
        evaluate_open_set([-1, -1], [0, 1], [0.5, 0.4])
    with pytest.raises(ValueError, match="same length"):
        evaluate_open_set([0, 1], [0, 1], [0.5])
