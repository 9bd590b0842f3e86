import numpy as np
import pytest


class FakeClassifier:
    """Stands in for ClipPromptClassifier: X is an index array into fixed features/probas."""

    def __init__(self, features, proba, text_features=None):
        self.features, self.proba = np.asarray(features, np.float32), np.asarray(proba, np.float32)
        self.text_features = text_features
        self.classes_ = np.arange(self.proba.shape[1])
        self.calls = {"transform": 0, "predict_proba": 0}

    def transform(self, X):
        self.calls["transform"] += 1
        return self.features[np.asarray(X)]

    def predict_proba_from_features(self, F):
        self.calls["predict_proba"] += 1
        # The row of each feature vector; a perturbed one (DropQuery's dropout) gets its nearest row's.
        F = np.asarray(F, np.float32)
        distances = ((F[:, None, :] - self.features[None, :, :]) ** 2).sum(-1)
        return self.proba[distances.argmin(1)]

    def class_text_features(self):
        return np.asarray(self.text_features, np.float32)

    def predict_proba(self, X):
        self.calls["predict_proba"] += 1
        return self.proba[np.asarray(X)]


@pytest.fixture
def fake_classifier():
    """The FakeClassifier class itself, for fakes with hand-made features and probabilities."""
    return FakeClassifier


@pytest.fixture
def fake():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(40, 5))
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    logits = rng.normal(size=(40, 4)) * 2
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    T = rng.normal(size=(4, 5))
    return FakeClassifier(F, P, T / np.linalg.norm(T, axis=1, keepdims=True)), np.arange(40)
