"""What the frozen encoders give the estimators: the backbone, the cached image embeddings
and the class text features.

This is the side of :class:`~modal_vlm.ClipPromptClassifier` (and of its sibling
:class:`~modal_vlm.ClipLinearProbe`) that the query strategies read: ``transform``,
``predict_proba_from_features`` and ``class_text_features`` are the methods of the
strategies' contract (:mod:`modal_vlm.strategies`, "The contract" in the strategies guide).
How embeddings are keyed and cached: :doc:`/estimator`.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from skorch.dataset import Dataset

from ..backbones import get_backbone
from ..embeddings.cache import EmbeddingCache
from ..embeddings.encoding import embedding_key, embedding_width, encode_images


class FrozenEncodersMixin:
    """The estimators' frozen image and text encoders: ``backbone_``, image embeddings
    encoded once and cached (:meth:`transform`), and the class text features (the learned
    prompts', zero-shot before any fit)."""

    @property
    def backbone_(self):
        return get_backbone(self.model_name, self.pretrained, self.device, self.image_size)

    def transform(self, X) -> np.ndarray:
        """L2-normalised image embeddings (cached), of the UEO-adapted encoder if any.

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.

        Returns
        -------
        ndarray of float32 of shape (n_samples, D)
            One unit-norm row per image.

        Examples
        --------
        >>> import numpy as np
        >>> from modal_vlm import ClipPromptClassifier
        >>> F = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0).transform(
        ...     np.zeros((3, 32, 32, 3), dtype=np.uint8))
        >>> F.shape[0], bool(np.allclose(np.linalg.norm(F, axis=1), 1, atol=1e-5))
        (3, True)
        """
        if self.initialized_ or hasattr(self, "_pending_state_"):
            self.check_is_fitted()  # a module built from the current parameters
        backbone, visual = self.backbone_, None
        key = self._embedding_key(backbone)
        if getattr(self, "module_", None) is not None and self.module_.visual is not None:
            visual = self.module_.visual  # adapted by UEO: its own cache key
            digest = hashlib.blake2b(digest_size=8)
            for param in visual.parameters():
                if param.requires_grad:
                    digest.update(param.detach().cpu().numpy().tobytes())
            key = f"{key}|norm-adapted-{digest.hexdigest()}"
        return self._encode(backbone, X, key, visual)

    def frozen_transform(self, X) -> np.ndarray:
        """Embeddings of the frozen (zero-shot) image encoder, whatever UEO adapted.

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.

        Returns
        -------
        ndarray of float32 of shape (n_samples, D)
            Equal to :meth:`transform`'s unless UEO adapted the encoder.
        """
        backbone = self.backbone_
        return self._encode(backbone, X, self._embedding_key(backbone))

    def _embedding_key(self, backbone) -> str:
        return embedding_key(backbone, encode_dtype=self.encode_dtype, jpeg_draft=self.jpeg_draft)

    @property
    def embedding_key_(self) -> str:
        """The cache key of the frozen encoder's embeddings (:doc:`/estimator`)."""
        return self._embedding_key(self.backbone_)

    def _encode(self, backbone, X, key, visual=None) -> np.ndarray:
        self._check_prediction_params()  # encode_batch_size and friends, named as the user set them
        cache = EmbeddingCache(key, self.cache_dir, width=embedding_width(backbone))
        return encode_images(backbone, X, cache=cache,
                             batch_size=self.encode_batch_size, verbose=self.verbose, visual=visual,
                             encode_dtype=self.encode_dtype, jpeg_draft=self.jpeg_draft,
                             num_workers=self.encode_workers)

    def predict_proba_from_features(self, features) -> np.ndarray:
        """Class probabilities from :meth:`transform`'s embeddings (one pass for strategies).

        Parameters
        ----------
        features : array-like of shape (n_samples, D)
            Image embeddings, finite.

        Returns
        -------
        ndarray of float32 of shape (n_samples, n_classes)
            The same as ``predict_proba`` on the images.
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise ValueError(f"features must be 2-d (n, D), got shape {features.shape}.")
        bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
        if len(bad):
            raise ValueError(f"features rows {bad[:10].tolist()} hold NaN or infinite values.")
        return super().predict_proba(Dataset(features, None))

    def zero_shot_proba(self, X) -> np.ndarray:
        """Class probabilities of the zero-shot model: the hand-written prompts (``template``) on
        the frozen image encoder, whatever was learned since.

        An opinion of every image that no label shaped: the trust tools weigh it in when they
        look for labels a person got wrong (:mod:`modal_vlm.evaluation.suspects`).

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.

        Returns
        -------
        ndarray of float32 of shape (n_samples, n_classes)
            ``predict_proba`` of the estimator before any label.

        Examples
        --------
        >>> import numpy as np
        >>> from modal_vlm import ClipPromptClassifier
        >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
        >>> X = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
        >>> bool(np.allclose(clf.zero_shot_proba(X), clf.predict_proba(X), atol=1e-6))   # before any label
        True
        """
        self.check_is_fitted()
        zero_shot = self.module_.zero_shot_features
        features = torch.from_numpy(self.frozen_transform(X)).to(zero_shot.device, zero_shot.dtype)
        with torch.no_grad():
            logits = self.module_.logit_scale * features @ zero_shot.T
            return torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float32)

    def class_text_features(self) -> np.ndarray:
        """The normalised class text features predictions use (zero-shot before ``fit``).

        Returns
        -------
        ndarray of float32 of shape (n_classes, D)
            One unit-norm row per class, in the order of ``class_names``.

        Examples
        --------
        >>> from modal_vlm import ClipPromptClassifier
        >>> ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit").class_text_features().shape
        (2, 32)
        """
        self.check_is_fitted()
        with torch.no_grad():
            return self.module_.text_features().detach().cpu().numpy().astype(np.float32)
