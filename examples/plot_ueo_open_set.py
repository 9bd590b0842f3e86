"""
UEO on an open-set pool: accuracy and OOD scores
================================================

In practice an unlabeled pool holds images of classes nobody named: out-of-distribution
(OOD) images. UEO (Liang et al., ICML 2024) trains on such a pool anyway: its loss sharpens
the predictions of confident (likely known) images and flattens those of uncertain (likely
unknown) ones.

Here six CIFAR-10 classes are *known* (named to the model) and four are *unknown*. A few
images of the known classes are labeled; the rest of the pool, unknown classes included, is unlabeled
(``y == -1``). We compare plain prompt tuning on the labels with ``fit_mode="ueo"`` on
labels plus pool, on the test accuracy over known classes and on the OOD detection of the
unknown ones (:meth:`~modal_vlm.ClipPromptClassifier.score_samples`, higher = more likely known).
"""

# %%
# An open-set split
# -----------------
# :func:`~modal_vlm.datasets.make_open_set` re-labels the known classes ``0 .. 5`` and marks
# the unknown ones with ``-1`` (:data:`~modal_vlm.datasets.OOD_LABEL`).
import matplotlib.pyplot as plt
import numpy as np

from modal_vlm import ClipPromptClassifier
from modal_vlm.datasets import load_cifar10_sample, make_open_set
from modal_vlm.metrics import evaluate_open_set

X_train, y_train, X_test, y_test, class_names = load_cifar10_sample()
split = make_open_set((X_train, y_train), (X_test, y_test), class_names,
                      known=6, setting="open")
print("known:", split.known_classes, " unknown:", split.unknown_classes)
print(f"pool: {len(split.y_pool)} images, {np.mean(split.y_pool == -1):.0%} of them unknown")

# %%
# A few labels, the rest unlabeled
# --------------------------------
# Five labeled images per known class; every other pool image gets ``y = -1``
# (scikit-learn's semi-supervised convention). With modAL the same is
# ``learner.teach(X_new, y_new, X_unlabeled=X_pool)``.
rng = np.random.RandomState(0)
labeled = np.concatenate([rng.choice(np.flatnonzero(split.y_pool == c), 5, replace=False)
                          for c in range(len(split.known_classes))])
X_labeled, y_labeled = split.X_pool[labeled], split.y_pool[labeled]
y_semi = np.full(len(split.y_pool), -1)
y_semi[labeled] = y_labeled

# %%
# Two classifiers: labels only, and UEO
# -------------------------------------
# The UEO modes also adapt the image encoder's normalisation layers by default
# (``train_visual_norm``); images then pass through the encoder in every epoch, the slow
# path on a CPU. ``train_visual_norm=False`` tunes the prompt only, from cached embeddings,
# which keeps this example fast.
common = dict(
    model_name="linear-conse-efficientnet-lite0-minilm",     # offline stand-in, not CLIP
    image_size=96,
    random_state=0,
    verbose=0,
)
supervised = ClipPromptClassifier(split.known_classes, **common).fit(X_labeled, y_labeled)
ueo = ClipPromptClassifier(split.known_classes, fit_mode="ueo", train_visual_norm=False,
                           **common).fit(split.X_pool, y_semi)

# %%
# Accuracy on the known classes, AUROC and FPR at 95 % TPR on the unknown ones
# ----------------------------------------------------------------------------
# :func:`~modal_vlm.metrics.evaluate_open_set` scores the predictions of the known test
# images and the separation of known from unknown ones by the OOD score (higher = more
# likely known).
scores = {}
for name, clf in [("labels only", supervised), ("UEO", ueo)]:
    scores[name] = clf.score_samples(split.X_test)
    metrics = evaluate_open_set(split.y_test, clf.predict(split.X_test), scores[name])
    print(f"{name:>11}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))

# %%
# OOD score histograms
# --------------------
is_known = split.y_test != -1
fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
for ax, (name, score) in zip(axes, scores.items()):
    bins = np.linspace(score.min(), score.max(), 25)
    ax.hist(score[is_known], bins=bins, alpha=0.6, label="known classes (ID)")
    ax.hist(score[~is_known], bins=bins, alpha=0.6, label="unknown classes (OOD)")
    ax.set_title(name)
    ax.set_xlabel("in-distribution score: max cosine to a class")
axes[0].set_ylabel("test images")
axes[0].legend()
fig.tight_layout()
