"""Encode an image collection into the on-disk embedding cache, in-process or with Ray.

Encoding is the cost floor of active learning on a large collection: one forward pass per
image. :func:`encode_to_cache` splits the images into shards of ``shard_size`` and encodes
each shard with a :class:`ShardEncoder`, in this process or as one Ray actor per worker
(Ray Data ``map_batches``; GPU actors where the cluster has GPUs). Every shard is written into
the same cache folder that ``ClipPromptClassifier(cache_dir=...)`` reads (keys: image content
fingerprints and the backbone's key), so the estimator, the strategies and ``modal-vlm run``
then find the embeddings instead of encoding again.

A job is resumable: each finished shard leaves a marker in ``<cache_dir>/jobs/<job id>/``
(the id hashes the backbone key, the image list and the shard size), and running the same job
again skips the marked shards. Images already in the cache are not encoded twice. Images that
cannot be read are reported by path in :attr:`EncodeReport.bad_images`; their shard stays
unmarked, so a later run retries them.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._files import IMAGE_EXTENSIONS, find_images
from ..backbones import get_backbone
from ..embeddings.cache import KEY_BYTES, STORAGE_DTYPES, iter_disk_shards, write_shard
from ..embeddings.encoding import check_finite_embeddings, draft_size, embedding_key, encode_items
from ..embeddings.inputs import ImageItem

#: Images per shard: the unit of work of a worker and of resuming.
SHARD_SIZE = 1024


@dataclass
class EncodeReport:
    """What :func:`encode_to_cache` did.

    Parameters
    ----------
    n_images : int
        Image files in the job.
    n_shards : int
        Shards of the job.
    n_shards_skipped : int
        Shards finished by an earlier run of the same job, not read again.
    n_encoded : int
        Images encoded by this run.
    n_cached : int
        Images of this run's shards found in the cache already (not encoded again).
    bad_images : list of (str, str)
        ``(path, reason)`` of every image that could not be read.
    seconds : float
        Wall-clock time of the run, model loading included.
    encode_seconds : float
        Time the workers spent in their shards (reading, preprocessing, encoding, writing),
        summed over workers: ``n_encoded / encode_seconds`` is one worker's throughput.
    workers : int
        Encoder workers (1 in-process).
    cache_key : str
        The embedding key the embeddings are cached under
        (:func:`~modal_vlm.embeddings.encoding.embedding_key`).
    """

    n_images: int
    n_shards: int
    n_shards_skipped: int = 0
    n_encoded: int = 0
    n_cached: int = 0
    bad_images: list = field(default_factory=list)
    seconds: float = 0.0
    encode_seconds: float = 0.0
    workers: int = 1
    cache_key: str = ""

    @property
    def images_per_second(self) -> float:
        """Images encoded per second of wall-clock time.

        Returns
        -------
        float
            ``n_encoded / seconds`` (0 before any time passed).
        """
        return self.n_encoded / self.seconds if self.seconds > 0 else 0.0


def image_files(images) -> list[str]:
    """The image files named by ``images``: files as given, folders searched recursively.

    Parameters
    ----------
    images : str, path-like or sequence of them
        Image files and folders (suffixes in ``IMAGE_EXTENSIONS`` of ``modal_vlm._files``;
        hidden files and folders are skipped).

    Returns
    -------
    list of str
        Files given directly, in order, then each folder's images, sorted.

    Raises
    ------
    FileNotFoundError
        A path that does not exist.
    """
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    files = []
    for entry in images:
        path = Path(entry)
        if path.is_dir():
            files += find_images(path)
        elif path.exists():
            files.append(str(path))
        else:
            raise FileNotFoundError(f"No such image file or folder: {str(entry)!r}")
    return files


def _job_dir(cache_dir, cache_key: str, paths, shard_size: int) -> Path:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{cache_key}\n{shard_size}\n".encode())
    for path in paths:
        digest.update(os.path.abspath(path).encode() + b"\n")
    return Path(cache_dir) / "jobs" / digest.hexdigest()


def _marker(job_dir, shard: int) -> Path:
    return Path(job_dir) / f"shard-{shard:06d}.json"


class ShardEncoder:
    """Encodes shards of image files into the cache; one per worker (a Ray actor) or in-process.

    Decoding, preprocessing and the forward pass are the library's own
    (:meth:`~modal_vlm.embeddings.inputs.ImageItem.to_tensor` with reduced-size JPEG decoding,
    :func:`~modal_vlm.embeddings.encoding.encode_items`), under the classifier's embedding key
    (:func:`~modal_vlm.embeddings.encoding.embedding_key`, default settings), so the embeddings equal
    ``ClipPromptClassifier.transform``'s.

    Parameters
    ----------
    model_name : str
        The backbone, as for :func:`~modal_vlm.backbones.get_backbone`.
    pretrained : str or None
        Its weights (open_clip tag or file).
    image_size : int or None
        Its input resolution.
    device : str
        Torch device of the encoder.
    cache_dir : str or path-like
        The embedding cache folder.
    dtype : {"float32", "float16"}
        Storage dtype of the shards written.
    batch_size : int
        Images per forward pass.
    job_dir : str or path-like
        Where finished shards are marked.
    num_threads : int, optional
        Torch threads of this worker (Ray CPU actors use one each); None leaves torch's default.
    """

    def __init__(self, model_name, pretrained, image_size, device, cache_dir, dtype, batch_size, job_dir,
                 num_threads=None):
        import torch

        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.backbone = get_backbone(model_name, pretrained, device, image_size)
        self.key = embedding_key(self.backbone)
        self.cache_dir, self.dtype, self.batch_size, self.job_dir = cache_dir, dtype, batch_size, job_dir
        known = [keys for keys, _ in iter_disk_shards(cache_dir, self.key, keys_only=True)]
        self.known = np.unique(np.concatenate(known)) if known else np.empty(0, f"V{KEY_BYTES}")

    def _is_known(self, key: bytes) -> bool:
        at = np.searchsorted(self.known, np.void(key))
        return bool(at < len(self.known) and self.known[at] == np.void(key))

    def encode(self, shard: int, paths) -> dict:
        """Encode one shard's images into the cache and mark it finished (if all were read).

        Parameters
        ----------
        shard : int
            The shard's number in the job.
        paths : sequence of str
            Its image files.

        Returns
        -------
        dict
            ``shard``, ``encoded`` and ``cached`` counts, ``bad``: list of ``[path, reason]``,
            ``seconds`` spent.
        """
        began = time.perf_counter()
        keys, items, bad, cached, seen = [], [], [], 0, set()
        for path in paths:
            item = ImageItem(str(path), "path")
            try:
                key = item.fingerprint()
            except OSError as exc:
                bad.append([str(path), str(exc)])
                continue
            if key in seen or self._is_known(key):
                cached += 1
                continue
            seen.add(key)
            keys.append(key)
            items.append(item)
        good_keys, good_paths, decoded, decode_size = [], [], [], draft_size(self.backbone)
        for key, item in zip(keys, items):
            try:  # read and preprocess here, so one unreadable file costs only itself
                decoded.append(ImageItem(item.to_tensor(self.backbone.preprocess, decode_size=decode_size), "tensor"))
                good_keys.append(key)
                good_paths.append(item.value)
            except (OSError, ValueError) as exc:
                bad.append([item.value, str(exc)])
        if good_keys:
            embeddings = encode_items(self.backbone, decoded, batch_size=self.batch_size, num_workers=0)
            check_finite_embeddings(torch.from_numpy(embeddings), good_paths)
            write_shard(self.cache_dir, self.key, good_keys, embeddings, self.dtype)
        result = {"shard": int(shard), "encoded": len(good_keys), "cached": cached, "bad": bad,
                  "seconds": time.perf_counter() - began}
        if not bad:
            marker = _marker(self.job_dir, shard)
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            os.replace(tmp, marker)
        return result

    def __call__(self, batch: dict) -> dict:
        """Ray Data ``map_batches`` entry point: encode a batch of ``shard`` / ``paths`` rows.

        Parameters
        ----------
        batch : dict of array-like
            Columns ``shard`` (int) and ``paths`` (a list of files per row).

        Returns
        -------
        dict of ndarray
            One row per shard: ``shard``, ``encoded``, ``cached``, ``seconds``, and ``bad``
            as a JSON list of ``[path, reason]``.
        """
        results = [self.encode(int(shard), list(paths)) for shard, paths in zip(batch["shard"], batch["paths"])]
        return {"shard": np.array([r["shard"] for r in results]),
                "encoded": np.array([r["encoded"] for r in results]),
                "cached": np.array([r["cached"] for r in results]),
                "seconds": np.array([r["seconds"] for r in results]),
                "bad": np.array([json.dumps(r["bad"]) for r in results], dtype=object)}


def _ray_results(pending, shards, encoder_kwargs, ray_address, num_workers, progress):
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = bool(progress)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus and encoder_kwargs["device"] == "cpu":
        encoder_kwargs = {**encoder_kwargs, "device": "cuda"}
    workers = num_workers or gpus or max(1, int(resources.get("CPU", 1)))
    uses_gpu = encoder_kwargs["device"] != "cpu"
    dataset = ray.data.from_items([{"shard": s, "paths": shards[s]} for s in pending],
                                  override_num_blocks=len(pending))
    encoded = dataset.map_batches(
        ShardEncoder, fn_constructor_kwargs={**encoder_kwargs, "num_threads": 1 if not uses_gpu else None},
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=1 if uses_gpu else 0,
        num_cpus=1)
    results = [{**row, "bad": json.loads(row["bad"])} for row in encoded.iter_rows()]
    return results, workers


def encode_to_cache(images, model_name: str, cache_dir, *, pretrained=None, image_size=None, device="cpu",
                    dtype="float32", ray_address=None, num_workers=None, shard_size=SHARD_SIZE,
                    batch_size=64, progress=True) -> EncodeReport:
    """Encode image files into the embedding cache that ``cache_dir=`` reads; resumable.

    Parameters
    ----------
    images : str, path-like or sequence of them
        Image files and folders (searched recursively).
    model_name : str
        The backbone, as ``ClipPromptClassifier(model_name=...)``.
    cache_dir : str or path-like
        The embedding cache folder; pass the same to ``ClipPromptClassifier(cache_dir=...)``,
        ``modal-vlm run --cache-dir`` or :meth:`~modal_vlm.embeddings.EmbeddingPool.from_cache`.
    pretrained, image_size : optional
        As for the classifier; they change the cache key.
    device : str, default="cpu"
        Torch device of the in-process encoder; Ray workers use a GPU each where the cluster
        has GPUs.
    dtype : {"float32", "float16"}, default="float32"
        Storage dtype of the cached embeddings (float16 halves the disk footprint; read back
        as float32).
    ray_address : str, optional
        Encode on a Ray cluster: ``"auto"`` (a running cluster), ``"local"`` (start one here)
        or ``"ray://host:port"``; a Ray already initialised in this process is used as it is.
        None encodes in this process.
    num_workers : int, optional
        Ray encoder actors; default one per GPU, else one per CPU of the cluster.
    shard_size : int, default=1024
        Images per shard (the unit of work and of resuming).
    batch_size : int, default=64
        Images per forward pass.
    progress : bool, default=True
        Show progress (a bar in-process, Ray Data's bars with Ray).

    Returns
    -------
    EncodeReport
        Counts, unreadable images by path, timing.

    Raises
    ------
    ValueError
        No image files, or an invalid ``dtype`` / ``shard_size``.
    FileNotFoundError
        A path in ``images`` that does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> folder = tempfile.mkdtemp()
    >>> for i in range(3):
    ...     Image.new("RGB", (32, 32), (80 * i, 0, 0)).save(f"{folder}/{i}.png")
    >>> report = encode_to_cache(folder, "tiny-vit", f"{folder}/cache", progress=False)
    >>> report.n_encoded, report.bad_images
    (3, [])
    >>> encode_to_cache(folder, "tiny-vit", f"{folder}/cache", progress=False).n_shards_skipped
    1
    """
    start = time.perf_counter()
    if np.dtype(dtype) not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}.")
    if int(shard_size) < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}.")
    paths = image_files(images)
    if not paths:
        raise ValueError(f"No image files found in {images!r} (suffixes {sorted(IMAGE_EXTENSIONS)}).")
    key = embedding_key(get_backbone(model_name, pretrained, device, image_size))
    job_dir = _job_dir(cache_dir, key, paths, int(shard_size))
    shards = [paths[i:i + int(shard_size)] for i in range(0, len(paths), int(shard_size))]
    pending = [s for s in range(len(shards)) if not _marker(job_dir, s).exists()]
    report = EncodeReport(n_images=len(paths), n_shards=len(shards), cache_key=key,
                          n_shards_skipped=len(shards) - len(pending))
    kwargs = dict(model_name=model_name, pretrained=pretrained, image_size=image_size, device=device,
                  cache_dir=str(cache_dir), dtype=str(np.dtype(dtype)), batch_size=int(batch_size),
                  job_dir=str(job_dir))
    if not pending:
        results = []
    elif ray_address is None:
        from tqdm.auto import tqdm

        encoder = ShardEncoder(**kwargs)
        results = [encoder.encode(s, shards[s]) for s in tqdm(pending, desc="encoding shards", unit="shard",
                                                              disable=not progress, leave=False)]
    else:
        results, report.workers = _ray_results(pending, shards, kwargs, ray_address, num_workers, progress)
    for result in results:
        report.n_encoded += int(result["encoded"])
        report.n_cached += int(result["cached"])
        report.encode_seconds += float(result["seconds"])
        report.bad_images += [tuple(entry) for entry in result["bad"]]
    report.bad_images.sort()
    report.seconds = time.perf_counter() - start
    return report
