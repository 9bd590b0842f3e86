"""
Plugging in a custom query strategy
===================================

A modAL query strategy is a function ``strategy(classifier, X_pool, n_instances=1, **kw)``
that returns the pool indices to label. Inside, ``classifier`` is the modAL learner:
``classifier.predict_proba(X_pool)`` gives the class probabilities and
``classifier.estimator.transform(X_pool)`` the L2-normalised image embeddings of the
:class:`~modal_vlm.ClipPromptClassifier`. Both come from the embedding cache, so a custom
strategy costs no extra encoding. What a strategy may ask of the estimator is spelled out as
protocols (:class:`~modal_vlm.strategies.EmbeddingClassifier` and its siblings, see
:ref:`strategies-contract`): any estimator with those methods works in its place.

The strategy below is *information density* (Settles & Craven, 2008): entropy weighted by
how typical an image is of the pool, its mean cosine similarity to the other pool images.
It plugs into modAL as is and composes with :func:`modal_vlm.pcb`'s class balancing.
"""

# %%
# The strategy
# ------------
import matplotlib.pyplot as plt
import numpy as np
from modAL.models import ActiveLearner
from sklearn.base import clone

from modal_vlm import ClipPromptClassifier, pcb
from modal_vlm.datasets import load_cifar10_sample


def density_weighted_entropy(classifier, X_pool, n_instances=1, beta=1.0, **kwargs):
    """Entropy times (mean cosine similarity to the pool) ** beta; the top n_instances."""
    proba = classifier.predict_proba(X_pool)
    entropy = -(proba * np.log(proba + 1e-12)).sum(axis=1)
    features = classifier.estimator.transform(X_pool)       # (n, d), L2-normalised, cached
    density = np.clip(features @ features.mean(axis=0), 0, None)   # mean cosine similarity
    score = entropy * density ** beta
    return np.argsort(-score)[:n_instances]


# %%
# ``features @ features.mean(axis=0)`` is the mean cosine similarity without forming the
# ``n x n`` similarity matrix, so the strategy scales linearly with the pool.
#
# The return value: modAL 0.4.1 (what ``pip`` resolves beside skorch >= 1.0) expects the
# indices; modAL 0.4.2+ expects ``(indices, metrics)``.
#
# Data and classifier
# -------------------
X_pool, y_pool, X_test, y_test, class_names = load_cifar10_sample()

clf = ClipPromptClassifier(
    class_names,
    model_name="linear-conse-efficientnet-lite0-minilm",   # offline stand-in, not CLIP
    image_size=96,
    random_state=0,
    verbose=0,
)

# %%
# Active learning with it, plain and class-balanced
# -------------------------------------------------
# ``pcb(strategy)`` lets the strategy propose 10 % of the pool as candidates and picks a
# batch balanced over the model's pseudo-labels. Keyword arguments of ``learner.query``
# (here ``beta``, and the ``random_state`` of PCB's random picks) reach the strategy.
curves = {}
for name, strategy in [("density-weighted entropy", density_weighted_entropy),
                       ("+ PCB", pcb(density_weighted_entropy))]:
    learner = ActiveLearner(estimator=clone(clf), query_strategy=strategy)
    unlabeled = np.arange(len(X_pool))
    curve = [(0, learner.score(X_test, y_test))]
    for _ in range(3):
        query_idx, _ = learner.query(X_pool[unlabeled], n_instances=len(class_names), beta=1.0,
                                     random_state=0)
        picked = unlabeled[query_idx]
        learner.teach(X_pool[picked], y_pool[picked])
        unlabeled = np.delete(unlabeled, query_idx)
        curve.append((len(learner.y_training), learner.score(X_test, y_test)))
    curves[name] = np.array(curve)
    print(f"{name:>24}: accuracy {curves[name][-1, 1]:.3f}, labels per class "
          f"{np.bincount(learner.y_training, minlength=len(class_names)).tolist()}")

fig, ax = plt.subplots(figsize=(5, 3.5))
for name, curve in curves.items():
    ax.plot(curve[:, 0], curve[:, 1], marker="o", label=name)
ax.set_xlabel("labeled images")
ax.set_ylabel("test accuracy")
ax.legend()
fig.tight_layout()
