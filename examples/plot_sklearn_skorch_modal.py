"""
Using it with scikit-learn, skorch and modAL
============================================

:class:`~modal_vlm.ClipPromptClassifier` keeps the habits of the three libraries it sits on
(see :doc:`/contracts` for every rule). This example runs one of each:

* **scikit-learn**: class names as labels, cross-validation, a readable ``repr``, the
  outlier-score convention of ``score_samples``;
* **skorch**: a validation split with validation accuracy per epoch, and the learning-rate
  schedule of ``fit`` and ``partial_fit``;
* **modAL**: a committee with a real cold start, and modAL's ranked batch-mode sampling on
  the image embeddings.
"""

# %%
# Data and estimator
# ------------------
import numpy as np
from sklearn.model_selection import cross_val_score

from modal_vlm import ClipPromptClassifier
from modal_vlm.datasets import load_cifar10_sample

X_pool, y_pool, X_test, y_test, class_names = load_cifar10_sample(12, 10, random_state=0)
shuffled = np.random.RandomState(0).permutation(len(y_pool))   # the sample is sorted by class
X_pool, y_pool = X_pool[shuffled], y_pool[shuffled]
names = np.asarray(class_names)

clf = ClipPromptClassifier(
    class_names,
    model_name="linear-conse-efficientnet-lite0-minilm",   # offline stand-in, not CLIP
    image_size=96,
    max_epochs=8,
    random_state=0,
    verbose=0,
)
print(clf)  # the parameters that differ from the defaults

# %%
# scikit-learn: class names as labels
# -----------------------------------
# ``y`` may hold entries of ``class_names`` (or indices into it). Predictions come back in
# the kind ``fit`` was given, and ``score`` accepts either.
clf.fit(X_pool[:60], names[y_pool[:60]])
print("classes_:", clf.classes_[:4], "...")
print("predictions:", clf.predict(X_test[:5]), " truth:", names[y_test[:5]])
print(f"test accuracy {clf.score(X_test, names[y_test]):.3f} (= {clf.score(X_test, y_test):.3f} on indices)")

# Every scikit-learn tool that clones and refits works on names, cross-validation included.
scores = cross_val_score(clf, X_pool[:60], names[y_pool[:60]], cv=2)
print("2-fold accuracy:", np.round(scores, 3))

# %%
# ``score_samples`` follows scikit-learn's outlier detectors: higher means more normal, here
# more likely one of ``class_names`` (the largest cosine to a class's text feature). Its negation is an
# out-of-distribution score.
print("in-distribution scores:", np.round(clf.score_samples(X_test[:5]), 3))

# %%
# skorch: validation accuracy per epoch
# -------------------------------------
# ``train_split=ValidSplit(...)`` holds labeled images out; ``valid_loss`` and ``valid_acc``
# are recorded for every epoch, and so is any scoring callback (here the training accuracy).
# Every ``fit`` runs the whole schedule (warm-up, then cosine); so does ``partial_fit``,
# which continues from the current prompt: a warm restart, never the cosine continued past
# its end. The rate of every epoch is in the history as ``lr``.
from skorch.callbacks import EpochScoring
from skorch.dataset import ValidSplit

watched = clf.set_params(train_split=ValidSplit(0.25, stratified=True, random_state=0),
                         callbacks=[EpochScoring("accuracy", on_train=True, name="train_acc")])
watched.fit(X_pool[:80], y_pool[:80])
for row in watched.history:
    print(f"epoch {row['epoch']}: lr {row['lr']:.2g}  train_acc {row['train_acc']:.2f}  "
          f"valid_acc {row['valid_acc']:.2f}  valid_loss {row['valid_loss']:.3f}")
watched.partial_fit(X_pool[:80], y_pool[:80])
print("partial_fit's rates:", [f"{lr:.2g}" for lr in watched.history[-8:, "lr"]])

# %%
# modAL: a committee with a real cold start
# -----------------------------------------
# Before any label every member predicts zero-shot from its template. Members that differ
# only in ``random_state`` then vote alike, and vote entropy returns the pool's first
# images; :func:`~modal_vlm.committee.prompt_committee` gives each member its own template.
from modAL.disagreement import vote_entropy, vote_entropy_sampling

from modal_vlm.committee import prompt_committee

base = clf.set_params(train_split=None, callbacks=None, max_epochs=4)
committee = prompt_committee(base, templates=["a photo of a {}.", "a blurry photo of a {}.",
                                              "a low resolution photo of the {}.", "a photo of the small {}."],
                             query_strategy=vote_entropy_sampling)
print("pool images the members disagree on at zero-shot:",
      int(np.count_nonzero(vote_entropy(committee, X_pool))), "of", len(X_pool))
idx, _ = committee.query(X_pool, n_instances=10)
print("first queries:", sorted(idx.tolist()), "classes", sorted(names[y_pool[idx]].tolist()))
committee.teach(X_pool[idx], y_pool[idx])
print(f"committee accuracy after 10 labels: {np.mean(committee.predict(X_test) == y_test):.3f}")

# %%
# modAL: ranked batch-mode sampling on the embeddings
# ---------------------------------------------------
# modAL's ``uncertainty_batch_sampling`` computes distances on ``X`` itself: on images it
# would compare pixels (or fail on paths). :func:`~modal_vlm.strategies.ranked_batch_query` runs it on
# the estimator's embeddings; :func:`~modal_vlm.on_embeddings` does the same for any modAL
# strategy of that kind.
from modAL.models import ActiveLearner

from modal_vlm.strategies import ranked_batch_query

learner = ActiveLearner(estimator=base, query_strategy=ranked_batch_query,
                        X_training=X_pool[idx], y_training=y_pool[idx])
pool = np.delete(np.arange(len(X_pool)), idx)
batch, _ = learner.query(X_pool[pool], n_instances=10)
print("ranked batch:", pool[batch].tolist())
