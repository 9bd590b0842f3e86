"""
How good is my model? Estimates without a test set
==================================================

A real folder of images has no test set, yet a person labeling it wants to know how good the
model is now, whether more labels still help, and which of their labels look wrong.
:class:`~modal_vlm.evaluation.LoopMonitor` answers from the labels the loop collects anyway:

* every new label is first *scored* by the model that has not learned it yet
  (test-then-train), which gives honest pairs of confidence and correctness for free;
* a small random share of each batch (the *audit* picks) keeps those pairs unbiased whatever
  the query strategy prefers; their labels still train the next model;
* the pairs calibrate the confidence (temperature scaling), estimate the accuracy on the
  unlabeled pool with an interval, and flag labels the model confidently disagreed with;
* successive models are compared on a fixed *stop set* of unlabeled images: when their
  predictions stop moving (Cohen's kappa), more labels of this kind change little.

The test set below is used only to check these numbers. The measured coverage of the interval,
the calibration error and the stopping trade-off are in :doc:`/trust`.
"""

# %%
# Data, classifier, and a careless oracle
# ---------------------------------------
# The CIFAR-10 sample that ships with modal-vlm and the default offline model (not CLIP). The
# oracle gets 10 % of its answers wrong (:func:`~modal_vlm.evaluation.flip_labels`), as a tired
# person might.
import matplotlib.pyplot as plt
import numpy as np
from modAL.models import ActiveLearner

from modal_vlm import ClipPromptClassifier, cec_query
from modal_vlm.datasets import load_cifar10_sample
from modal_vlm.evaluation import LoopMonitor, expected_calibration_error, flip_labels

X_pool, y_true, X_test, y_test, class_names = load_cifar10_sample()
y_oracle = flip_labels(y_true, 0.1, len(class_names), random_state=0)

clf = ClipPromptClassifier(class_names, model_name="linear-conse-efficientnet-lite0-minilm", image_size=96,
                           max_epochs=50, random_state=0, verbose=0)
learner = ActiveLearner(estimator=clf, query_strategy=cec_query)

# %%
# The loop, with the monitor beside it
# ------------------------------------
# Per round: the monitor draws the audit picks, CEC chooses the rest, the monitor scores all
# of them *before* ``teach``, and after it reports the estimate, the stopping signal and the
# suspect labels (ids are pool positions here).
monitor = LoopMonitor(audit_fraction=0.2, random_state=0).start(learner.estimator, X_pool)
labeled = np.zeros(0, dtype=int)
rows = []
for round_ in range(1, 7):
    unlabeled = np.setdiff1d(np.arange(len(X_pool)), labeled)
    audit = unlabeled[monitor.audit_positions(round_, len(unlabeled), 10)]
    rest = np.setdiff1d(unlabeled, audit)
    picked, _ = learner.query(X_pool[rest], n_instances=10 - len(audit), random_state=round_)
    new = np.concatenate([rest[picked], audit])
    monitor.observe(learner.estimator, X_pool[new], y_oracle[new], ids=new, audit=np.isin(new, audit))
    learner.teach(X_pool[new], y_oracle[new])
    labeled = np.concatenate([labeled, new])
    report = monitor.update(learner.estimator, X_pool[np.setdiff1d(unlabeled, new)])
    rows.append({"labels": len(labeled), "truth": learner.score(X_test, y_test), **report})
    estimate = report["estimate"]
    print(f"{len(labeled):3d} labels: test accuracy {rows[-1]['truth']:.3f}; estimate "
          + ("-" if estimate is None else f"{estimate['accuracy']:.3f} ({estimate['low']:.3f}-{estimate['high']:.3f})")
          + f"; kappa with the previous model {report['kappa']}; stable: {report['stable']}")

# %%
# The estimate beside the truth
# -----------------------------
# The band is the 90 % interval made from the labels alone.
x = [r["labels"] for r in rows if r["estimate"]]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([r["labels"] for r in rows], [r["truth"] for r in rows], marker="o", label="test accuracy (hidden)")
ax.plot(x, [r["estimate"]["accuracy"] for r in rows if r["estimate"]], linestyle=":", label="estimate")
ax.fill_between(x, [r["estimate"]["low"] for r in rows if r["estimate"]],
                [r["estimate"]["high"] for r in rows if r["estimate"]], alpha=0.2, label="90 % interval")
ax.set_xlabel("labels")
ax.set_ylabel("accuracy")
ax.legend()

# %%
# Calibrated confidence
# ---------------------
# The raw softmax of a prompt-tuned CLIP-like model is far too sure of itself; the monitor's
# temperature, fitted on the test-then-train pairs, brings the shown confidence in line.
proba = learner.predict_proba(X_test)
print(f"temperature {monitor.calibrator_.temperature_:.2f}; expected calibration error on the test set: "
      f"raw {expected_calibration_error(y_test, proba):.3f}, "
      f"calibrated {expected_calibration_error(y_test, monitor.calibrate(proba)):.3f}")

# %%
# Suspect labels
# --------------
# The labels the models put in another class (the model before it learned them, the current one
# and the zero-shot one), against the oracle's actual slips.
flipped = set(labeled[y_oracle[labeled] != y_true[labeled]].tolist())
suspects = rows[-1]["suspect_labels"]
print(f"{len(flipped)} slips among {len(labeled)} labels; {len(suspects)} flagged, "
      f"{len(flipped & set(suspects))} of them real slips")
for i in suspects[:5]:
    print(f"  image {i}: labeled {class_names[y_oracle[i]]!r}, truly {class_names[y_true[i]]!r}")
