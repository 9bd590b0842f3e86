"""
A scikit-learn Pipeline and GridSearchCV
========================================

:class:`~modal_vlm.ClipPromptClassifier` is a scikit-learn estimator: it can end a
:class:`~sklearn.pipeline.Pipeline`, and :class:`~sklearn.model_selection.GridSearchCV` can
tune it together with the steps before it. Every candidate is a ``clone``; clones share the
frozen backbone and the embedding cache, so an image is encoded once per distinct content,
not once per candidate and fold.

The pipeline here has one preprocessing step: whether to turn the photos grey or pass them
through in colour. The grid searches it together with the weight of the prompt learner's
KgCoOp regulariser (``lambda_kg``: 0 is plain CoOp).
"""

# %%
# Data
# ----
import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from modal_vlm import ClipPromptClassifier
from modal_vlm.strategies import entropy_query
from modal_vlm.datasets import load_cifar10_sample

# 16 pool images per class: the first 6 per class are labeled (the grid search's training
# set), the other 100 stay unlabeled for the active-learning query at the end; 200 test images.
X_pool, y_pool, X_test, y_test, class_names = load_cifar10_sample(16, 20, random_state=0)
train = np.concatenate([np.flatnonzero(y_pool == c)[:6] for c in range(len(class_names))])
X_train, y_train = X_pool[train], y_pool[train]
X_unlabeled = np.delete(X_pool, train, axis=0)

# %%
# The pipeline
# ------------
# A step before the classifier receives the images and returns images (any input format
# the classifier accepts: here RGB ``uint8`` arrays in, grey ``(n, H, W)`` arrays out).


def grey(images):
    """Luminance only: does colour matter to the model?"""
    return (images @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)


pipe = Pipeline([
    ("colour", FunctionTransformer(grey)),
    ("clf", ClipPromptClassifier(
        class_names,
        model_name="linear-conse-efficientnet-lite0-minilm",   # offline stand-in, not CLIP
        image_size=96,
        max_epochs=20,          # fewer than the default schedule: 9 fits stay quick on a CPU
        random_state=0,
        verbose=0,
    )),
])

# %%
# The grid search
# ---------------
# Nested parameters use scikit-learn's ``step__param`` syntax; skorch's own nested ones work
# too (``clf__optimizer__momentum``). Keep ``n_jobs=1`` (the default) on a CPU: the
# embedding cache lives in this process and every candidate reuses it.
search = GridSearchCV(
    pipe,
    param_grid={
        "colour": [FunctionTransformer(grey), "passthrough"],
        "clf__lambda_kg": [0.0, 8.0],
    },
    cv=2,
)
search.fit(X_train, y_train)

results = search.cv_results_
for params, score, rank in zip(results["params"], results["mean_test_score"],
                               results["rank_test_score"]):
    step = "colour" if params["colour"] == "passthrough" else "grey"
    print(f"{step:>6}  lambda_kg={params['clf__lambda_kg']:<4}  cv accuracy {score:.3f}  rank {rank}")
print(f"test accuracy of the refitted best pipeline: {search.score(X_test, y_test):.3f}")

# %%
# The fitted pipeline in active learning
# --------------------------------------
# Query strategies accept a Pipeline ending in a ``ClipPromptClassifier`` (and modAL
# learners wrapping one): the earlier steps transform the pool, the classifier provides
# probabilities and embeddings. ``return_metrics=True`` returns ``(indices, metrics)``
# whatever the installed modAL version expects.
query_idx, metrics = entropy_query(search.best_estimator_, X_unlabeled, n_instances=5,
                                   return_metrics=True)
print("next images to label:", query_idx.tolist())
