"""Scale-out: encoding an image collection into the embedding cache on a Ray cluster.

The core library does not import this package. :func:`encode_to_cache` (and ``modal-vlm
encode``) fills the on-disk cache that ``ClipPromptClassifier(cache_dir=...)`` reads, in this
process or with one Ray actor per worker (``pip install "modal-vlm[ray]"``); pools larger than
memory then go to the strategies as a memory-mapped :class:`~modal_vlm.embeddings.EmbeddingPool`.
"""
from .encode import SHARD_SIZE, EncodeReport, ShardEncoder, encode_to_cache, image_files

__all__ = ["SHARD_SIZE", "EncodeReport", "ShardEncoder", "encode_to_cache", "image_files"]
