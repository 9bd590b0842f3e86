"""
Comparing query strategies
==========================

Every query strategy of :mod:`modal_vlm.strategies` has modAL's signature, so comparing them
is one loop with the strategy swapped. This example runs random sampling, entropy sampling,
entropy with PCB's class balancing (:func:`modal_vlm.pcb`) and CEC
(:func:`modal_vlm.cec_query`) on the same pool, from the same zero-shot start, and plots
their learning curves.

One seed and three short rounds keep it fast; a real comparison follows the protocol (8 rounds
of one label per class, at least 3 seeds, 200 epochs) and reports the mean and the area under
the learning curve.
"""

# %%
# Data and classifier
# -------------------
import matplotlib.pyplot as plt
import numpy as np
from modAL.models import ActiveLearner
from sklearn.base import clone

from modal_vlm import ClipPromptClassifier, cec_query, pcb, random_query
from modal_vlm.strategies import entropy_query
from modal_vlm.datasets import load_cifar10_sample

X_pool, y_pool, X_test, y_test, class_names = load_cifar10_sample()

base = ClipPromptClassifier(
    class_names,
    model_name="linear-conse-efficientnet-lite0-minilm",   # offline stand-in, not CLIP
    image_size=96,
    random_state=0,
    verbose=0,
)

# %%
# One active-learning run per strategy
# ------------------------------------
# Each run starts from a fresh ``clone`` of the same estimator. Clones share the embedding
# cache, so the pool and the test set are encoded only once for all four runs.
strategies = {
    "random": random_query,
    "entropy": entropy_query,
    "entropy + PCB": pcb(entropy_query),
    "CEC": cec_query,
}


def run(strategy, n_rounds=3, budget=len(class_names)):
    learner = ActiveLearner(estimator=clone(base), query_strategy=strategy)
    unlabeled = np.arange(len(X_pool))
    curve = [(0, learner.score(X_test, y_test))]          # zero-shot
    for _ in range(n_rounds):
        query_idx, _ = learner.query(X_pool[unlabeled], n_instances=budget, random_state=0)
        picked = unlabeled[query_idx]
        learner.teach(X_pool[picked], y_pool[picked])
        unlabeled = np.delete(unlabeled, query_idx)
        curve.append((len(learner.y_training), learner.score(X_test, y_test)))
    return np.array(curve), np.bincount(learner.y_training, minlength=budget)


results = {}
for name, strategy in strategies.items():
    curve, counts = run(strategy)
    results[name] = curve
    print(f"{name:>14}: final accuracy {curve[-1, 1]:.3f}, "
          f"mean over rounds {curve[1:, 1].mean():.3f}, labels per class {counts.tolist()}")

# %%
# Learning curves
# ---------------
# With one seed and three rounds of ten labels the differences between these curves are
# mostly noise: this example shows *how* to compare, not which strategy wins. The
# :doc:`benchmark results </results>` compare the strategies under the protocol (CIFAR-10,
# 8 rounds, 5 seeds); ``modal-vlm run --strategy cec random entropy ...`` runs such a
# comparison, resumably (:doc:`/experiments`).
fig, ax = plt.subplots(figsize=(5.5, 3.8))
for name, curve in results.items():
    ax.plot(curve[:, 0], curve[:, 1], marker="o", label=name)
ax.axhline(results["random"][0, 1], color="grey", linestyle="--", label="zero-shot")
ax.set_xlabel("labeled images")
ax.set_ylabel("test accuracy")
ax.legend()
fig.tight_layout()
