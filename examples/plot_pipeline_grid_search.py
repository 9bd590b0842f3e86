"""
A scikit-learn Pipeline and GridSearchCV
========================================

:class:`~modal_vlm.ClipPromptClassifier` is a scikit-learn estimator: it can end a
:class:`~sklearn.pipeline.Pipeline`, and :class:`~sklearn.model_selection.GridSearchCV` can
tune it together with the steps before it. Every candidate is a ``clone``; clones share the
frozen backbone and the embedding cache, so an image is encoded once per distinct content,
not once per candidate and fold.

The pipeline here has one preprocessing step: whether to invert the digits (dark ink on a
light background, closer to the printed numbers of photographs) or pass them through. The
grid searches it together with the prompt learner's learning rate.
"""

# %%
# Data
# ----
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from modal_vlm import ClipPromptClassifier, entropy_query
from modal_vlm.datasets import load_digits_split

# 160 pool images: the first 60 are labeled (the grid search's training set), the other 100
# stay unlabeled for the active-learning query at the end; 200 test images.
X_pool, y_pool, X_test, y_test, class_names = load_digits_split(
    pool_size=160, test_size=200, random_state=0)
X_train, y_train = X_pool[:60], y_pool[:60]

# %%
# The pipeline
# ------------
# A step before the classifier receives the images and returns images (any input format
# the classifier accepts, here ``uint8`` arrays).


def invert(images):
    """Dark digits on a light background."""
    return 255 - images


pipe = Pipeline([
    ("invert", FunctionTransformer(invert)),
    ("clf", ClipPromptClassifier(
        class_names,
        model_name="conse-efficientnet-lite0-minilm",   # offline stand-in, not CLIP
        image_size=64,
        template="a photo of the number {}.",
        ctx_init="a photo of the number",
        max_epochs=10,
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
        "invert": [FunctionTransformer(invert), "passthrough"],
        "clf__lr": [0.01, 0.05],
    },
    cv=2,
)
search.fit(X_train, y_train)

results = search.cv_results_
for params, score, rank in zip(results["params"], results["mean_test_score"],
                               results["rank_test_score"]):
    step = "passthrough" if params["invert"] == "passthrough" else "invert"
    print(f"{step:>11}  lr={params['clf__lr']:<5}  cv accuracy {score:.3f}  rank {rank}")
print(f"test accuracy of the refitted best pipeline: {search.score(X_test, y_test):.3f}")

# %%
# The fitted pipeline in active learning
# --------------------------------------
# Query strategies accept a Pipeline ending in a ``ClipPromptClassifier`` (and modAL
# learners wrapping one): the earlier steps transform the pool, the classifier provides
# probabilities and embeddings. ``return_metrics=True`` returns ``(indices, metrics)``
# whatever the installed modAL version expects.
query_idx, metrics = entropy_query(search.best_estimator_, X_pool[60:], n_instances=5,
                                   return_metrics=True)
print("next images to label:", query_idx.tolist())
