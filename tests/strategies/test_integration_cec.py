"""CEC with the offline reference model on the shared CIFAR-10 data: class coverage."""
import numpy as np
import pytest
from modAL.models import ActiveLearner

from modal_vlm import ClipPromptClassifier
from modal_vlm.datasets import load_image_folder
from modal_vlm.strategies import cec_query

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("seed", [0, 1])
def test_cec_covers_the_classes_from_a_zero_shot_start(cifar10, seed):
    X, y, names = load_image_folder(cifar10 / "train", max_per_class=40, random_state=seed)
    clf = ClipPromptClassifier(names, model_name="conse-efficientnet-lite0-minilm", image_size=160,
                               ctx_init="a photo of a", max_epochs=20, verbose=0, random_state=seed)
    learner = ActiveLearner(estimator=clf, query_strategy=cec_query)
    pool = np.arange(len(y))
    for _ in range(3):
        idx, _ = learner.query(X[pool], n_instances=10, random_state=seed)
        learner.teach(X[pool][idx], y[pool][idx])
        pool = np.delete(pool, idx)
    covered = len(set(learner.y_training.tolist()))
    assert covered >= 8, f"CEC labeled only {covered} of 10 classes in 30 queries"
