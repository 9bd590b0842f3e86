"""Encoding into the on-disk cache: in-process and on a local Ray, resumable, bad images named."""
import numpy as np
import pytest
from PIL import Image

from modal_vlm import cli
from modal_vlm.embeddings import EmbeddingPool, clear_memory_cache
from modal_vlm.distributed import encode, encode_to_cache
from modal_vlm.embeddings import encoding
from modal_vlm.embeddings.cache import iter_disk_shards


@pytest.fixture(autouse=True)
def fresh_memory_cache():
    """Every test starts from an empty in-memory store (another test's float16 reads would
    otherwise serve its 'in-process' expectations)."""
    clear_memory_cache()


def cached_key(make_clf):
    return make_clf().embedding_key_


def transform_without_encoding(make_clf, paths, cache_dir, monkeypatch):
    """The classifier's embeddings of ``paths``, read from ``cache_dir``; encoding would fail."""
    clear_memory_cache()
    with monkeypatch.context() as m:
        def no_encoding(backbone, items, **kwargs):
            if items:
                pytest.fail("encoded")
            yield from ()

        m.setattr(encoding, "encode_batches", no_encoding)
        return make_clf(cache_dir=cache_dir).transform(paths)


def test_encoded_cache_serves_the_classifier_without_encoding(image_files, make_clf, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    report = encode_to_cache(image_files, "tiny-vit", cache_dir, shard_size=5, batch_size=4, progress=False)
    assert (report.n_images, report.n_shards, report.n_encoded, report.bad_images) == (12, 3, 12, [])
    expected = make_clf().transform(image_files)  # in-process encoder, memory only
    np.testing.assert_allclose(transform_without_encoding(make_clf, image_files, cache_dir, monkeypatch),
                               expected, atol=1e-6)


def test_folders_float16_and_a_memory_mapped_pool(image_files, make_clf, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    encode_to_cache(tmp_path, "tiny-vit", cache_dir, dtype="float16", progress=False)  # the folder
    assert {e.dtype for _, e in iter_disk_shards(cache_dir, cached_key(make_clf))} == {np.dtype(np.float16)}
    expected = make_clf().transform(image_files)
    np.testing.assert_allclose(transform_without_encoding(make_clf, image_files, cache_dir, monkeypatch),
                               expected, atol=2e-3)
    pool = EmbeddingPool.from_cache(image_files[::-1], cached_key(make_clf), cache_dir, tmp_path / "pool.npy")
    assert isinstance(pool.embeddings, np.memmap) and pool.embeddings.dtype == np.float16
    np.testing.assert_allclose(pool.features()[:].numpy(), expected[::-1], atol=2e-3)
    assert pool[[0]].tolist() == [image_files[-1]]
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "new.png")
    with pytest.raises(KeyError, match=r"1 of 13 images are not in the cache .* \(e.g. X\[12\]\)"):
        EmbeddingPool.from_cache(image_files + [str(tmp_path / "new.png")], cached_key(make_clf), cache_dir)


def test_unreadable_images_are_reported_by_name_and_retried(image_files, make_clf, tmp_path):
    cache_dir = tmp_path / "cache"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    files = image_files[:4] + [str(broken)]
    report = encode_to_cache(files, "tiny-vit", cache_dir, shard_size=3, progress=False)
    assert report.n_encoded == 4 and [path for path, _ in report.bad_images] == [str(broken)]
    assert "Cannot read image file" in report.bad_images[0][1]
    # The shard with the broken file stays unfinished: the next run retries it (only it).
    again = encode_to_cache(files, "tiny-vit", cache_dir, shard_size=3, progress=False)
    assert (again.n_shards_skipped, again.n_encoded, again.n_cached, len(again.bad_images)) == (1, 0, 1, 1)
    broken.write_bytes(open(image_files[5], "rb").read())  # fixed
    fixed = encode_to_cache(files, "tiny-vit", cache_dir, shard_size=3, progress=False)
    assert (fixed.n_encoded, fixed.bad_images) == (1, [])


def test_an_interrupted_job_resumes_with_the_unfinished_shards(image_files, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    calls = []
    real = encode.ShardEncoder.encode

    def interrupted_after_two(self, shard, paths):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(shard)
        return real(self, shard, paths)

    monkeypatch.setattr(encode.ShardEncoder, "encode", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        encode_to_cache(image_files, "tiny-vit", cache_dir, shard_size=3, progress=False)
    monkeypatch.setattr(encode.ShardEncoder, "encode", real)
    resumed = encode_to_cache(image_files, "tiny-vit", cache_dir, shard_size=3, progress=False)
    assert (resumed.n_shards, resumed.n_shards_skipped, resumed.n_encoded) == (4, 2, 6)
    # Another job over the same images (other shards) encodes nothing: they are cached.
    other = encode_to_cache(image_files, "tiny-vit", cache_dir, shard_size=5, progress=False)
    assert (other.n_encoded, other.n_cached) == (0, 12)


def test_cli_encode(image_files, tmp_path, capsys):
    argv = ["encode", str(tmp_path), "--model", "tiny-vit", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert cli.main(argv) == 0
    assert "12 images in 1 shards (0 finished earlier): 12 encoded" in capsys.readouterr().out
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "1 unreadable" in captured.out and f"unreadable image {tmp_path / 'bad.jpg'}" in captured.err
    assert cli.main(["encode", str(tmp_path / "missing"), "--cache-dir", str(tmp_path)]) == 2
    assert "No such image file or folder" in capsys.readouterr().err


def test_ray_workers_write_the_same_embeddings(image_files, make_clf, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is in the modal-vlm[ray] extra")  # in [test] too
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cache_dir = tmp_path / "cache"
        report = encode_to_cache(image_files, "tiny-vit", cache_dir, ray_address="auto", num_workers=2,
                                 shard_size=4, progress=False)
        assert (report.workers, report.n_shards, report.n_encoded, report.bad_images) == (2, 3, 12, [])
        expected = make_clf().transform(image_files)
        np.testing.assert_allclose(transform_without_encoding(make_clf, image_files, cache_dir, monkeypatch),
                                   expected, atol=1e-5)
        again = encode_to_cache(image_files, "tiny-vit", cache_dir, ray_address="auto", shard_size=4,
                                progress=False)
        assert (again.n_shards_skipped, again.n_encoded) == (3, 0)
    finally:
        ray.shutdown()
