"""
Zero-shot, then active learning with modAL
==========================================

A :class:`~modal_vlm.ClipPromptClassifier` predicts before it has seen a single label
(zero-shot, from the text prompts of the class names), so a modAL
:class:`~modAL.models.ActiveLearner` can start with an empty labeled set: the query strategy
chooses the very first images to label from the zero-shot predictions.

Here the strategy is CEC (:func:`modal_vlm.cec_query`: calibrated entropy, neighbour-aware
uncertainty and uncertainty-weighted clustering), the oracle is simulated by the true labels
of the pool, and every round labels ten images and re-trains the prompt.
"""

# %%
# Data: a pool of unlabeled photos and a test set
# -----------------------------------------------
# :func:`~modal_vlm.datasets.load_cifar10_sample` returns the CIFAR-10 sample that ships with
# modal-vlm: 32x32 RGB ``uint8`` photos of ten classes, 100 pool and 50 test images per class.
import matplotlib.pyplot as plt
import numpy as np
from modAL.models import ActiveLearner

from modal_vlm import ClipPromptClassifier, cec_query
from modal_vlm.datasets import load_cifar10_sample

# y_pool plays the oracle: it is read only for the queried images.
X_pool, y_pool, X_test, y_test, class_names = load_cifar10_sample()

fig, axes = plt.subplots(1, 10, figsize=(8, 1.3))
for ax, c in zip(axes, range(len(class_names))):
    ax.imshow(X_pool[np.flatnonzero(y_pool == c)[0]])
    ax.set_title(class_names[c], fontsize=7)
    ax.axis("off")

# %%
# The classifier
# --------------
# ``model_name="linear-conse-efficientnet-lite0-minilm"`` is the default offline model
# (installed with the ``offline`` extra, no download). It is *not* CLIP; for real work use an
# open_clip model, e.g. ``model_name="ViT-B-32", pretrained="openai"`` (the default). The
# learner keeps its defaults: the prompt starts at the zero-shot template and training stays
# close to it (KgCoOp), so the first labels do not pull accuracy below zero-shot.
clf = ClipPromptClassifier(
    class_names,
    model_name="linear-conse-efficientnet-lite0-minilm",
    image_size=96,              # CIFAR's photos are 32 px: a small input keeps encoding fast
    random_state=0,
    verbose=0,
)

# %%
# Zero-shot predictions
# ---------------------
# Before ``fit`` the classifier is usable: ``predict_proba`` compares each image embedding
# with the embeddings of "a photo of a airplane.", ... Every image is encoded once;
# later rounds, ``transform`` and the query strategy reuse the cached embeddings.
zero_shot_accuracy = clf.score(X_test, y_test)
print(f"zero-shot test accuracy: {zero_shot_accuracy:.3f} (chance: 0.100)")

# %%
# The modAL loop
# --------------
# No initial labels: CEC's first query uses the zero-shot probabilities (cold start).
# ``learner.teach`` re-trains a fresh prompt on all labels gathered so far. ``random_state``
# seeds the query's k-means, so the run is reproducible.
learner = ActiveLearner(estimator=clf, query_strategy=cec_query)

n_rounds, budget = 5, len(class_names)
unlabeled = np.arange(len(X_pool))
n_labeled, accuracy = [0], [zero_shot_accuracy]
for round_ in range(1, n_rounds + 1):
    query_idx, _ = learner.query(X_pool[unlabeled], n_instances=budget, random_state=round_)
    picked = unlabeled[query_idx]
    learner.teach(X_pool[picked], y_pool[picked])           # the oracle's answers
    unlabeled = np.delete(unlabeled, query_idx)
    n_labeled.append(len(learner.y_training))
    accuracy.append(learner.score(X_test, y_test))
    print(f"round {round_}: {n_labeled[-1]:3d} labels, test accuracy {accuracy[-1]:.3f}, "
          f"labels per class {np.bincount(learner.y_training, minlength=budget).tolist()}")

# %%
# The learning curve
# ------------------
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(n_labeled, accuracy, marker="o")
ax.axhline(zero_shot_accuracy, color="grey", linestyle="--", label="zero-shot")
ax.set_xlabel("labeled images")
ax.set_ylabel("test accuracy")
ax.set_title("CEC from a zero-shot start")
ax.legend()
fig.tight_layout()
