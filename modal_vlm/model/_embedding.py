"""The frozen encoders and their embeddings, as the estimators serve them: cached image
embeddings (``transform``), and what the query strategies read besides ``predict_proba``
(``predict_proba_from_features``, ``class_text_features``).

A mixin of :class:`~modal_vlm.ClipPromptClassifier` (and so of
:class:`~modal_vlm.ClipLinearProbe`), as scikit-learn's ``KNeighborsMixin`` is of its
neighbours estimators: the methods read the estimator's parameters (``model_name``,
``pretrained``, ``device``, ``image_size``, the ``encode_*`` settings, ``cache_dir``) and its
``module_``.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from skorch.dataset import Dataset

from ..backbones import get_backbone
from ..cache import EmbeddingCache
from ..encoding import embedding_key, embedding_width, encode_images


class EmbeddingMixin:
    """Cached embeddings of the frozen image encoder, and predictions from them."""

    @property
    def backbone_(self):
        return get_backbone(self.model_name, self.pretrained, self.device, self.image_size)

    def transform(self, X) -> np.ndarray:
        """L2-normalised image embeddings ``(n, D)`` of the frozen image encoder (cached).

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors (see :mod:`modal_vlm.inputs`).

        Returns
        -------
        ndarray of float32 of shape (n_samples, D)
            One row per image, unit L2 norm. After a UEO fit that adapted the encoder's
            normalisation layers (``train_visual_norm``), the adapted encoder's embeddings.

        Examples
        --------
        >>> import numpy as np
        >>> from modal_vlm import ClipPromptClassifier
        >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
        >>> X = np.zeros((3, 32, 32, 3), dtype=np.uint8)
        >>> F = clf.transform(X)
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
            L2-normalised embeddings; equal to :meth:`transform`'s unless the image encoder
            was adapted.
        """
        backbone = self.backbone_
        return self._encode(backbone, X, self._embedding_key(backbone))

    def _embedding_key(self, backbone) -> str:
        return embedding_key(backbone, encode_dtype=self.encode_dtype, jpeg_draft=self.jpeg_draft)

    @property
    def embedding_key_(self) -> str:
        """The key the frozen encoder's embeddings are cached under (in memory and in
        ``cache_dir``): :func:`modal_vlm.encoding.embedding_key` of the backbone and the
        encoding settings; what :meth:`modal_vlm.EmbeddingPool.from_cache` and ``modal-vlm
        encode`` use."""
        return self._embedding_key(self.backbone_)

    def _encode(self, backbone, X, key, visual=None) -> np.ndarray:
        self._check_prediction_params()  # encode_batch_size and friends, named as the user set them
        cache = EmbeddingCache(key, self.cache_dir, width=embedding_width(backbone))
        return encode_images(backbone, X, cache=cache,
                             batch_size=self.encode_batch_size, verbose=self.verbose, visual=visual,
                             encode_dtype=self.encode_dtype, jpeg_draft=self.jpeg_draft,
                             num_workers=self.encode_workers)

    def predict_proba_from_features(self, features) -> np.ndarray:
        """Class probabilities from embeddings returned by :meth:`transform`.

        Query strategies use it to get embeddings and probabilities in one pass over the pool.

        Parameters
        ----------
        features : array-like of shape (n_samples, D)
            Image embeddings, as :meth:`transform` returns them.

        Returns
        -------
        ndarray of float32 of shape (n_samples, n_classes)
            The same probabilities as ``predict_proba`` on the images.

        Raises
        ------
        ValueError
            If ``features`` is not 2-d or holds NaN or infinite values.
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise ValueError(f"features must be 2-d (n, D), got shape {features.shape}.")
        bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
        if len(bad):
            raise ValueError(f"features rows {bad[:10].tolist()} hold NaN or infinite values.")
        return super().predict_proba(Dataset(features, None))

    def class_text_features(self) -> np.ndarray:
        """The normalised class text features the classifier predicts with, ``(n_classes, D)``.

        The ``template`` prompts before the first ``fit`` (zero-shot), the learned prompts
        after; ``predict_proba`` is the softmax of ``logit_scale * transform(X) @ T.T``.

        Returns
        -------
        ndarray of float32 of shape (n_classes, D)
            One unit-norm row per class, in the order of ``class_names``.

        Examples
        --------
        >>> from modal_vlm import ClipPromptClassifier
        >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
        >>> clf.class_text_features().shape
        (2, 32)
        """
        self.check_is_fitted()
        with torch.no_grad():
            return self.module_.text_features().detach().cpu().numpy().astype(np.float32)
