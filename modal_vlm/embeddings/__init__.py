"""Images in, embeddings out: each image encoded once per backbone, and pools beyond memory.

- :mod:`~modal_vlm.embeddings.inputs`: what the classifier takes (paths, PIL images, arrays,
  tensors) as :class:`~modal_vlm.embeddings.inputs.ImageItem`\\ s with content fingerprints.
- :mod:`~modal_vlm.embeddings.encoding`: the image encoder kept busy (threads decoding ahead,
  batches) and the embedding key of a backbone's settings.
- :mod:`~modal_vlm.embeddings.cache`: the in-memory and on-disk embedding cache.
- :mod:`~modal_vlm.embeddings.pool`: :class:`EmbeddingPool`, a pool handed over by its
  precomputed embeddings, memory-mapped from disk if need be.
- :mod:`~modal_vlm.embeddings.disk`: :class:`~modal_vlm.embeddings.disk.DiskMatrix`, the
  row-block reader the strategies use on such a pool.

Importing this package loads numpy only (not torch).
"""
from .cache import EmbeddingCache, clear_memory_cache
from .pool import EmbeddingPool

__all__ = ["EmbeddingCache", "EmbeddingPool", "clear_memory_cache"]
