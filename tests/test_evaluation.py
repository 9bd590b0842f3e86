"""``modal_vlm.evaluation``: calibration, the accuracy estimate, the stopping signal, suspect
labels and the loop monitor that ties them together (no backbone: a table classifier)."""
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from modal_vlm.evaluation.calibration import margin_scale, rescale
from modal_vlm.evaluation import (AccuracyEstimate, HeldOutPairs, LoopMonitor, TemperatureScaling, assess,
                                  audit_accuracy, audit_count, expected_calibration_error, flip_labels, is_stable,
                                  prediction_agreement, prediction_powered_accuracy, suspect_order, suspicion)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def calibrated_world(n, n_classes=4, scale=2.0, seed=0):
    """Logits and labels drawn from softmax(logits): the logits' own probabilities are calibrated."""
    rng = np.random.default_rng(seed)
    logits = scale * rng.normal(size=(n, n_classes))
    p = softmax(logits)
    y = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1)
    return logits, y


# -- calibration --------------------------------------------------------------------------

@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_temperature_scaling_recovers_the_distortion_and_keeps_predictions(true_t):
    logits, y = calibrated_world(4000)
    distorted = softmax(logits / true_t)
    scaler = TemperatureScaling().fit(distorted, y)
    assert scaler.fitted_ and scaler.n_samples_ == 4000
    assert scaler.temperature_ == pytest.approx(1 / true_t, rel=0.08)
    calibrated = scaler.transform(distorted)
    assert np.allclose(calibrated.sum(axis=1), 1) and (calibrated.argmax(1) == distorted.argmax(1)).all()
    assert expected_calibration_error(y, calibrated) < 0.03
    if true_t != 1.0:
        assert expected_calibration_error(y, distorted) > 0.08


def test_temperature_scaling_needs_enough_pairs_and_valid_input():
    proba = softmax(np.random.default_rng(0).normal(size=(5, 3)))
    scaler = TemperatureScaling().fit(proba, np.array([0, 1, 2, 0, 1]))
    assert not scaler.fitted_ and scaler.temperature_ == 1.0
    assert np.allclose(scaler.transform(proba), proba)
    with pytest.raises(ValueError, match="not fitted yet"):
        TemperatureScaling().transform(proba)
    with pytest.raises(ValueError, match=r"y must hold class positions 0..2"):
        TemperatureScaling().fit(proba, np.array([0, 1, 2, 3, 1]))
    with pytest.raises(ValueError, match=r"y must have shape \(5,\)"):
        TemperatureScaling().fit(proba, np.array([0, 1]))
    with pytest.raises(ValueError, match="proba holds negative, NaN or infinite values"):
        TemperatureScaling().fit(np.full((5, 3), np.nan), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="min_samples must be an integer >= 1"):
        TemperatureScaling(min_samples=0).fit(proba, np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="sample_weight must be finite"):
        TemperatureScaling().fit(proba, np.zeros(5, dtype=int), sample_weight=[-1] * 5)


def test_temperature_stays_in_range_when_every_pair_is_right():
    proba = np.tile([[0.6, 0.3, 0.1]], (30, 1))
    scaler = TemperatureScaling().fit(proba, np.zeros(30, dtype=int))
    assert scaler.temperature_ == pytest.approx(0.05, rel=0.01)   # as sharp as allowed, not 0


def test_expected_calibration_error_by_hand():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    # bin 14: confidence 0.95, accuracy 1; bin 8: confidence 0.55, accuracy 0.5
    assert expected_calibration_error(y, proba) == pytest.approx((2 * 0.05 + 2 * 0.05) / 4)
    assert np.isnan(expected_calibration_error([], np.zeros((0, 2))))


# -- the accuracy estimate ----------------------------------------------------------------

def test_prediction_powered_interval_covers_the_truth():
    """Pool and labeled pairs from one calibrated world whose confidence is biased by +0.1:
    the rectifier removes the bias and the 90 % interval covers the pool's accuracy."""
    rng = np.random.default_rng(1)
    covered, widths = 0, []
    for trial in range(200):
        logits, y = calibrated_world(2020, seed=trial)
        p = softmax(logits)
        correct = p.argmax(1) == y
        shown = np.clip(p.max(1) + 0.1, 0, 1)   # an overconfident model
        labeled = rng.choice(2020, 20, replace=False)
        pool = np.setdiff1d(np.arange(2020), labeled)
        est = prediction_powered_accuracy(shown[pool], shown[labeled], correct[labeled], level=0.9)
        covered += est.low <= correct[pool].mean() <= est.high
        widths.append(est.high - est.low)
    assert 0.84 <= covered / 200 <= 0.97
    assert np.mean(widths) < 0.35


def test_estimates_need_two_pairs_and_a_valid_level():
    assert prediction_powered_accuracy([0.5] * 10, [0.5], [True]) is None
    assert audit_accuracy([]) is None
    with pytest.raises(ValueError, match=r"level must be a fraction in \(0, 1\)"):
        prediction_powered_accuracy([0.5], [0.5, 0.4], [True, False], level=90)
    with pytest.raises(ValueError, match="the same length"):
        prediction_powered_accuracy([0.5], [0.5, 0.4], [True])
    est = audit_accuracy([True] * 3 + [False])
    assert isinstance(est, AccuracyEstimate) and est.low < 0.75 < est.high <= 1 and est.n == 4


def test_audit_accuracy_is_wilsons_interval():
    est = audit_accuracy([True] * 15 + [False] * 9, level=0.95)
    assert (est.low, est.high) == pytest.approx((0.4271, 0.7884), abs=1e-3)   # Wilson, n = 24, z = 1.96


# -- the stopping signal ------------------------------------------------------------------

def test_agreement_is_cohens_kappa():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 300)
    b = np.where(rng.random(300) < 0.2, rng.integers(0, 4, 300), a)
    result = prediction_agreement(a, b)
    assert result["kappa"] == pytest.approx(cohen_kappa_score(a, b), abs=1e-6)
    assert result["changed"] == pytest.approx(np.mean(a != b), abs=1e-6) and result["n"] == 300
    assert prediction_agreement([2, 2, 2], [2, 2, 2]) == {"kappa": 1.0, "changed": 0.0, "n": 3}
    with pytest.raises(ValueError, match="the same length"):
        prediction_agreement([1, 2], [1])


def test_stable_needs_a_full_window_at_the_threshold():
    assert not is_stable([None, 0.999, 0.999], threshold=0.99, window=3)
    assert is_stable([None, 0.5, 0.999, 0.999, 0.999], threshold=0.99, window=3)
    assert not is_stable([None, 0.999, 0.999, 0.95], threshold=0.99, window=3)
    assert is_stable([None, 0.96, 0.97, 0.98], threshold=0.97, window=3)
    assert not is_stable([None] + [0.99] * 4) and is_stable([None] + [0.99] * 4 + [0.9])   # defaults: 5 rounds, 0.95


# -- suspect labels -----------------------------------------------------------------------

def test_suspects_are_the_confident_disagreements_most_suspect_first():
    proba = np.array([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.3, 0.4, 0.3], [0.02, 0.02, 0.96]])
    y = np.array([0, 0, 0, 1])
    assert suspicion(proba, y).round(3).tolist() == [0.0, pytest.approx(0.944, abs=1e-3), 0.25,
                                                     pytest.approx(0.979, abs=1e-3)]
    assert suspect_order(proba, y, ratio=0.25).tolist() == [3, 1]
    assert suspect_order(proba, y, ratio=1.0).tolist() == [3, 1, 2]
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        suspect_order(proba, y, ratio=0)


def test_a_label_the_current_model_still_rejects_is_more_suspect():
    held_out = np.array([[0.4, 0.6], [0.4, 0.6], [0.4, 0.6]])   # doubted before it was learned, all three
    current = np.array([[0.9, 0.1], [0.1, 0.9], [np.nan, np.nan]])   # learned, still rejected, not scored
    y = np.array([0, 0, 0])
    score = suspicion(held_out, y, [current])
    assert score.round(3).tolist() == [pytest.approx(1 - np.sqrt(2 / 3), abs=1e-3),
                                       pytest.approx(1 - np.sqrt(2 / 3 / 9), abs=1e-3),
                                       pytest.approx(1 / 3, abs=1e-3)]   # the held-out ratio alone
    assert suspect_order(held_out, y, ratio=0.45, others=[current]).tolist() == [1]
    assert suspect_order(held_out, y, ratio=0.45).tolist() == []   # the held-out doubt alone is not enough
    pairs = HeldOutPairs(held_out, y)
    found = assess(pairs, held_out, opinions=[(current, 1.0)])
    assert found.suspects.tolist() == [1] and found.suspicion[2] == pytest.approx(1 / 3, abs=1e-3)
    with pytest.raises(ValueError, match=r"opinions\[0\] must hold one row per pair"):
        assess(pairs, held_out, opinions=[(current[:2], 1.0)])
    # Each opinion counts once in the geometric mean: the zero-shot model's too.
    zero_shot = np.array([[0.2, 0.8], [0.9, 0.1], [0.2, 0.8]])
    three = suspicion(held_out, y, [current, zero_shot])
    assert three[0] == pytest.approx(1 - (2 / 3 * 1 * 0.25) ** (1 / 3))
    assert three[2] == pytest.approx(1 - (2 / 3 * 0.25) ** (1 / 2))   # two opinions where the current one is missing


def test_flipped_labels_are_seeded_counted_and_never_the_true_class():
    y = np.arange(200) % 5
    noisy = flip_labels(y, 0.1, 5, random_state=3)
    flipped = noisy != y
    assert flipped.sum() == 20 and set(noisy[flipped]) <= set(range(5))
    assert (flip_labels(y, 0.1, 5, random_state=3) == noisy).all()
    assert not (flip_labels(y, 0.1, 5, random_state=4) == noisy).all()
    assert (flip_labels(y, 0.0, 5) == y).all()
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match=r"label noise must be a fraction in \[0, 1\)"):
            flip_labels(y, bad, 5)


# -- audit picks and the monitor ----------------------------------------------------------

def test_audit_share_holds_over_rounds_and_leaves_the_strategy_a_pick():
    for fraction, budget in [(0.2, 10), (0.25, 10), (0.3, 7), (0.1, 3)]:
        counts = [audit_count(fraction, r, budget) for r in range(1, 41)]
        assert sum(counts) == int(np.floor(40 * fraction * budget + 1e-9)) and max(counts) < budget
    assert [audit_count(0.0, r, 10) for r in (1, 2)] == [0, 0]
    with pytest.raises(ValueError, match="leaves rounds with no pick for the query strategy"):
        audit_count(0.95, 1, 10)
    with pytest.raises(ValueError, match=r"audit_fraction must be a fraction in \[0, 1\)"):
        audit_count(1.0, 1, 10)


class TableClassifier:
    """A classifier whose probabilities are a fixed table, indexed by the image (an int);
    ``shift`` moves it towards the truth, as training would."""

    def __init__(self, logits, y, shift=0.0):
        self.logits, self.y, self.shift = logits, y, shift
        self.classes_ = np.arange(logits.shape[1])

    def predict_proba(self, X):
        rows = np.asarray(X, dtype=int)
        z = self.logits[rows].copy()
        z[np.arange(len(rows)), self.y[rows]] += self.shift
        return softmax(4 * z)   # overconfident


def run_loop(monitor, clf, y, rounds, budget=10, history=None, start_round=1, learn=0.1):
    """A hand-written loop: random picks (audit share first), teach = a shift towards the truth."""
    X_pool = np.arange(len(y))
    monitor.start(clf, X_pool, history or [])
    labeled = [i for r in history or [] for i in r["queried"]]
    records = list(history or [])
    if not records:
        records.append({"round": 0, "queried": [], "queried_labels": [], **monitor.update(clf, X_pool)})
    for round_ in range(start_round, rounds + 1):
        unlabeled = np.setdiff1d(X_pool, labeled)
        audit = unlabeled[monitor.audit_positions(round_, len(unlabeled), budget)]
        rest = np.setdiff1d(unlabeled, audit)
        rng = np.random.default_rng(round_)
        new = np.concatenate([rng.choice(rest, budget - len(audit), replace=False), audit])
        observed = monitor.observe(clf, X_pool[new], y[new], ids=new, audit=np.isin(new, audit))
        clf.shift += learn   # "teach"
        labeled += new.tolist()
        records.append({"round": round_, "queried": new.tolist(), "queried_labels": y[new].tolist(), **observed,
                        **monitor.update(clf, np.setdiff1d(X_pool, labeled))})
    return records


def test_monitor_records_what_a_resumed_loop_replays_to_the_same_values():
    logits, y = calibrated_world(3000, n_classes=5, seed=2)
    straight = run_loop(LoopMonitor(random_state=0, stop_set_size=500), TableClassifier(logits, y), y, rounds=6)
    assert straight[0]["estimate"] is None and straight[0]["kappa"] is None and not straight[0]["stable"]
    assert [len(r["audit"]) for r in straight[1:]] == [2] * 6
    assert all(set(r["audit"]) <= set(r["queried"]) for r in straight[1:])
    est = straight[-1]["estimate"]
    assert est["n"] == 10 and 0 <= est["low"]   # audit pairs of rounds 2-6 (calibrated from round 2 on)
    assert 0 <= est["low"] <= est["accuracy"] <= est["high"] <= 1
    assert all(0 < r["kappa"] < 1 and 0 < r["changed"] < 1 for r in straight[1:])
    resumed = run_loop(LoopMonitor(random_state=0, stop_set_size=500), TableClassifier(logits, y, shift=0.3), y,
                       rounds=6, history=straight[:4], start_round=4)
    assert resumed == straight


def test_monitor_calibrates_an_overconfident_model():
    logits, y = calibrated_world(3000, n_classes=5, seed=3)
    clf = TableClassifier(logits, y)
    monitor = LoopMonitor(random_state=0)
    run_loop(monitor, clf, y, rounds=8, learn=0.0)   # a model that does not change: 80 pairs of it
    proba = clf.predict_proba(np.arange(3000))
    # The table is 4x too sharp: the temperature on its margin-scaled log-probabilities, times the scale.
    assert monitor.scale_ * monitor.calibrator_.temperature_ == pytest.approx(4, rel=0.25)
    assert monitor.scale_ == pytest.approx(margin_scale(clf.predict_proba(monitor.stop_set_)))
    assert (expected_calibration_error(y, proba) > 0.15
            and expected_calibration_error(y, monitor.calibrate(proba)) < 0.04)


def test_margin_scale_and_rescale():
    assert margin_scale([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]) == pytest.approx((np.log(5 / 3) + np.log(3)) / 2)
    assert margin_scale(np.zeros((0, 3))) == 1.0 and margin_scale([[0.5, 0.5]]) == 1.0   # nothing to normalise
    proba = softmax(np.random.default_rng(0).normal(size=(50, 4)))
    for scale in (0.3, 1.0, 4.0):
        scaled = rescale(proba, scale)
        assert np.allclose(scaled.sum(1), 1) and (scaled.argmax(1) == proba.argmax(1)).all()
        assert margin_scale(rescale(proba, margin_scale(proba))) == pytest.approx(1.0)   # scale-free
    assert np.allclose(rescale(proba[:2], [1.0, 2.0])[1], rescale(proba[1:2], 2.0)[0])   # one scale per row


class SharpeningClassifier(TableClassifier):
    """A model that grows sharper every round without learning anything: a prompt learner's
    probabilities sharpen as it trains."""

    def predict_proba(self, X):
        rows = np.asarray(X, dtype=int)
        return softmax((1 + self.shift) * self.logits[rows])


def test_the_margin_scale_keeps_pairs_of_older_models_calibrating_the_current_one():
    logits, y = calibrated_world(3000, n_classes=5, seed=6)
    clf = SharpeningClassifier(logits, y)
    monitor = LoopMonitor(random_state=0, calibration_decay=1.0)
    run_loop(monitor, clf, y, rounds=8, learn=0.5)   # 5x sharper at the end than at the start
    proba = clf.predict_proba(np.arange(3000))
    pairs = monitor.pairs_
    unscaled = TemperatureScaling().fit(pairs.proba, pairs.labels)   # the pairs as older models gave them
    assert expected_calibration_error(y, monitor.calibrate(proba)) < 0.04
    assert expected_calibration_error(y, unscaled.transform(proba)) > 0.1


def test_monitor_flags_flipped_labels():
    logits, y = calibrated_world(3000, n_classes=5, scale=4.0, seed=4)
    y_given = flip_labels(y, 0.1, 5, random_state=0)
    clf = TableClassifier(logits, y)
    monitor = LoopMonitor(random_state=0)
    records = run_loop(monitor, clf, y_given, rounds=8)
    labeled = np.array([i for r in records for i in r["queried"]])
    flipped = set(labeled[y_given[labeled] != y[labeled]].tolist())
    suspects = set(records[-1]["suspect_labels"])
    assert flipped and len(suspects & flipped) >= len(flipped) / 2 and len(suspects & flipped) >= len(suspects) / 2
    # The flags weigh the current model's opinion of every labeled image in (a table has no zero-shot model).
    alone = assess(monitor.pairs_, np.zeros((0, 5)), scale=monitor.scale_)
    both = assess(monitor.pairs_, np.zeros((0, 5)), scale=monitor.scale_,
                  opinions=[(clf.predict_proba(labeled), monitor.scale_)])
    assert records[-1]["suspect_labels"] == labeled[both.suspects].tolist() != labeled[alone.suspects].tolist()


def test_monitor_checks_its_settings_and_labels():
    logits, y = calibrated_world(100, seed=5)
    clf = TableClassifier(logits, y)
    for params, message in [({"audit_fraction": 1.0}, r"audit_fraction must be a fraction in \[0, 1\)"),
                            ({"level": 1.5}, r"level must be a fraction in \(0, 1\)"),
                            ({"stop_set_size": 0}, "stop_set_size must be an integer >= 1"),
                            ({"kappa_window": 2.5}, "kappa_window must be an integer >= 1"),
                            ({"kappa_threshold": 2}, r"kappa_threshold must be a number in \[-1, 1\]"),
                            ({"suspect_ratio": 0}, r"suspect_ratio must be in \(0, 1\]")]:
        with pytest.raises(ValueError, match=message):
            LoopMonitor(**params).start(clf, np.arange(100))
    monitor = LoopMonitor(random_state=0).start(clf, np.arange(100))
    with pytest.raises(ValueError, match=r"labels \[7\] are not among the classifier's classes_"):
        monitor.observe(clf, np.arange(2), [0, 7])
    with pytest.raises(ValueError, match="the same 2 images"):
        monitor.observe(clf, np.arange(2), [0, 1], audit=[True])
    assert LoopMonitor(random_state=0).start(clf, np.arange(100)).stop_set_.tolist() == monitor.stop_set_.tolist()


def test_the_temperatures_uncertainty_shrinks_with_the_pairs():
    logits, y = calibrated_world(4000)
    proba = softmax(logits / 0.5)
    few, many = (TemperatureScaling().fit(proba[:n], y[:n]).log_temperature_se_ for n in (400, 4000))
    assert few / many == pytest.approx(np.sqrt(10), rel=0.25) and 0 < many < 0.1
    assert TemperatureScaling().fit(proba[:5], y[:5]).log_temperature_se_ == float("inf")
