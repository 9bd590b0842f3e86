"""A pool handed over by its precomputed embeddings, in memory or memory-mapped from disk.

Query strategies normally embed the pool themselves (``classifier.transform(X_pool)``, through
the embedding cache). A pool of 10^7 images does not fit in memory that way (20 GB in
float32), so :class:`EmbeddingPool` carries the embeddings beside the pool's items: the
strategies read them in blocks (:class:`~modal_vlm.embeddings.disk.DiskMatrix`) and take
probabilities from the classifier's ``predict_proba_from_features`` block by block, never
calling ``transform`` on the pool.

It is a 1-d numpy array of the pool's items (image paths, or ids), so modAL's
``learner.query(pool)`` and ``pool[indices]`` work as for any array and return plain items.
"""
from __future__ import annotations

import os

import numpy as np

from ..exceptions import NotInCacheError


class EmbeddingPool(np.ndarray):
    """The items of an unlabeled pool together with their embeddings, row by row.

    Parameters
    ----------
    embeddings : array-like of shape (n, d), numpy.memmap, or path to a ``.npy`` file
        The pool's image embeddings (as ``ClipPromptClassifier.transform`` returns them). A
        path or a :class:`numpy.memmap` is read in blocks and never loaded whole; float16
        halves the disk and page-cache footprint.
    items : array-like of shape (n,), optional
        What indexing the pool returns (image paths for ``learner.teach``); default
        ``arange(n)``.

    Attributes
    ----------
    embeddings : numpy.ndarray or numpy.memmap of shape (m, d)
        The embeddings; row ``i`` of the pool is row ``rows[i]`` of it.
    rows : ndarray of int or None
        Which rows of :attr:`embeddings` the pool holds after :meth:`drop`; None for all.

    Raises
    ------
    ValueError
        ``embeddings`` is not 2-d or ``items`` has another length.

    See Also
    --------
    EmbeddingPool.from_cache : The pool of images already in an on-disk embedding cache.

    Notes
    -----
    Only indexing is overridden: ``pool[idx]`` returns a plain array of items. Arrays
    derived otherwise (``np.delete(pool, idx)``, arithmetic) carry no embeddings, and a
    strategy treats them as plain images; use :meth:`drop` to remove queried samples.

    Examples
    --------
    >>> import numpy as np
    >>> pool = EmbeddingPool(np.eye(3, 4, dtype=np.float16), items=["a.png", "b.png", "c.png"])
    >>> len(pool), tuple(pool.features().shape), pool[[2, 0]].tolist()
    (3, (3, 4), ['c.png', 'a.png'])
    >>> rest = pool.drop([0])
    >>> rest.tolist(), rest.features()[0].tolist()
    (['b.png', 'c.png'], [0.0, 1.0, 0.0, 0.0])
    """

    def __new__(cls, embeddings, items=None):
        if isinstance(embeddings, (str, os.PathLike)):
            embeddings = np.load(embeddings, mmap_mode="r")
        if not isinstance(embeddings, np.ndarray):
            embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be 2-d (n, d), got shape {embeddings.shape}.")
        items = np.arange(len(embeddings)) if items is None else np.asarray(items)
        if items.ndim != 1 or len(items) != len(embeddings):
            raise ValueError(f"items must be 1-d with one entry per embedding ({len(embeddings)}), "
                             f"got shape {items.shape}.")
        pool = items.view(cls)
        pool.embeddings, pool.rows = embeddings, None
        return pool

    def __array_finalize__(self, obj):
        # A derived array's rows need not line up with the embeddings: it carries none.
        self.embeddings, self.rows = None, None

    def __reduce__(self):  # ndarray's own would drop the embeddings
        return _rebuild, (self.embeddings, np.asarray(self), self.rows)

    def features(self):
        """The embeddings as the strategies read them: a float32 tensor for an in-memory
        array, a block reader (:class:`~modal_vlm.embeddings.disk.DiskMatrix`) for a
        memory-mapped one.

        Returns
        -------
        torch.Tensor or DiskMatrix of shape (len(pool), d)
            Row ``i`` is the embedding of ``pool[i]``.

        Raises
        ------
        ValueError
            The array was derived from a pool (e.g. ``np.delete(pool, idx)``) and carries no
            embeddings.
        """
        from .disk import DiskMatrix, as_tensor

        if self.embeddings is None:
            raise ValueError("this array was derived from an EmbeddingPool and carries no embeddings; "
                             "use pool.drop(indices) to remove rows.")
        if isinstance(self.embeddings, np.memmap):
            return DiskMatrix(self.embeddings, self.rows)
        return as_tensor(self.embeddings if self.rows is None else self.embeddings[self.rows])

    def __getitem__(self, key):
        return np.asarray(self)[key]

    def drop(self, indices) -> "EmbeddingPool":
        """The pool without the rows ``indices`` (e.g. the samples just labeled).

        Parameters
        ----------
        indices : array-like of int
            Rows to remove.

        Returns
        -------
        EmbeddingPool
            The remaining rows; a memory-mapped pool stays memory-mapped (its embeddings are
            a row selection read on demand).
        """
        keep = np.ones(len(self), dtype=bool)
        keep[np.asarray(indices, dtype=np.intp)] = False
        rows = np.flatnonzero(keep) if self.rows is None else self.rows[keep]
        pool = np.asarray(self)[keep].view(EmbeddingPool)
        pool.embeddings, pool.rows = self.embeddings, rows
        return pool

    @classmethod
    def from_cache(cls, X, model_key: str, cache_dir, path=None, dtype="float16") -> "EmbeddingPool":
        """The pool of images ``X`` from an on-disk embedding cache, without loading the cache.

        Reads the cache's shards one at a time and writes the embeddings of ``X``, in
        ``X``'s order, to ``path`` (a memory-mapped ``.npy``), so that the strategies can use
        pools larger than memory. Every image must be in the cache (encode it first, e.g.
        with ``modal-vlm encode``).

        Parameters
        ----------
        X : images
            The pool, as the classifier takes it (usually image paths).
        model_key : str
            The embedding cache key, ``ClipPromptClassifier(...).embedding_key_``.
        cache_dir : str or path-like
            The embedding cache folder (``cache_dir=`` of the classifier).
        path : str or path-like, optional
            Where to write the pool's ``.npy``; None keeps it in memory.
        dtype : str, default="float16"
            Storage dtype of the embeddings.

        Returns
        -------
        EmbeddingPool
            Items ``X``, embeddings memory-mapped from ``path``.

        Raises
        ------
        NotInCacheError
            Some images are not in the cache (a ``KeyError``); the message names the first ones.
        """
        from .cache import iter_disk_shards
        from .inputs import as_image_items

        keys = np.array([item.fingerprint() for item in as_image_items(X)], dtype="V16")
        unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        by_key = np.argsort(inverse, kind="stable")  # rows of X grouped by unique key
        first = np.cumsum(counts) - counts
        embeddings = None
        filled = np.zeros(len(keys), dtype=bool)
        for shard_keys, shard_embeddings in iter_disk_shards(cache_dir, model_key):
            at = np.minimum(np.searchsorted(unique, shard_keys), len(unique) - 1)
            hit = np.flatnonzero(unique[at] == shard_keys)
            if not len(hit):
                continue
            if embeddings is None:
                shape = (len(keys), shard_embeddings.shape[1])
                embeddings = (np.zeros(shape, dtype) if path is None
                              else np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape))
            # Every row of X showing this image (duplicates included) gets the embedding.
            c = counts[at[hit]]
            source = np.repeat(hit, c)
            within = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
            rows = by_key[np.repeat(first[at[hit]], c) + within]
            embeddings[rows] = shard_embeddings[source]
            filled[rows] = True
        if not filled.all():
            missing = np.flatnonzero(~filled)
            raise NotInCacheError(f"{len(missing)} of {len(keys)} images are not in the cache {cache_dir} for "
                                  f"{model_key!r} (e.g. X[{missing[0]}]); encode them first (modal-vlm encode).")
        if path is not None:
            embeddings.flush()
            embeddings = np.load(path, mmap_mode="r")
        return cls(embeddings, X)


def _rebuild(embeddings, items, rows):
    pool = items.view(EmbeddingPool)
    pool.embeddings, pool.rows = embeddings, rows
    return pool
