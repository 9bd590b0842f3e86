"""The estimators' scikit-learn tags: what is true of a classifier that takes images.

:doc:`/contracts` ("Tags") says what each tag changes for scikit-learn's checks.
"""
from __future__ import annotations

from sklearn.utils import Tags, TransformerTags


def image_classifier_tags(tags: Tags) -> Tags:
    """Set ``tags`` (an estimator's ``super().__sklearn_tags__()``) for images in, zero-shot
    predictions before any label and embeddings out; returns them."""
    tags.requires_fit = False  # zero-shot predictions before any label
    # Images in: paths (1-d, strings), grey (n, H, W) and RGB (n, H, W, 3) pixel arrays,
    # (n, 3, H, W) tensors; never a 2-d feature matrix.
    tags.input_tags.two_d_array = False
    tags.input_tags.one_d_array = tags.input_tags.three_d_array = tags.input_tags.string = True
    tags.classifier_tags.poor_score = True  # a frozen image encoder: no promise on toy data
    # transform() gives the embeddings, float32 whatever the input: a classifier with a
    # transform, not a scikit-learn transformer (no fit_transform, no set_output).
    tags.transformer_tags = TransformerTags(preserves_dtype=[])
    return tags
