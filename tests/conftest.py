"""Shared fixtures: tiny images for unit tests, the shared CIFAR-10 folder for integration."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASS_NAMES = ["cat", "dog", "car"]
CIFAR10 = Path(os.environ.get("MODAL_VLM_CIFAR10",
                              Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"))


def pytest_configure(config):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def class_names():
    return list(CLASS_NAMES)


@pytest.fixture
def images():
    """12 random 32x32 RGB images (uint8) and labels cycling over 3 classes."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), np.arange(12) % 3


@pytest.fixture
def image_files(tmp_path, images):
    """The same images written as PNG files (lossless), with their paths."""
    X, _ = images
    paths = []
    for i, pixels in enumerate(X):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def make_clf():
    """Factory of small, quiet, seeded classifiers on the tiny test backbone."""
    from modal_vlm import ClipPromptClassifier

    def make(**params):
        defaults = dict(model_name="tiny-vit", n_ctx=4, max_epochs=3, batch_size=4, verbose=0, random_state=0)
        return ClipPromptClassifier(params.pop("class_names", CLASS_NAMES), **{**defaults, **params})

    return make


@pytest.fixture(scope="session")
def cifar10():
    """Path of the shared CIFAR-10 subset; skips where the shared data folder is absent."""
    if not (CIFAR10 / "test").is_dir():
        pytest.skip(f"shared CIFAR-10 data not found at {CIFAR10} (set MODAL_VLM_CIFAR10)")
    return CIFAR10
