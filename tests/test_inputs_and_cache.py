"""Every input kind, the content-keyed embedding cache, encode-once."""
import numpy as np
import pytest
import torch
from PIL import Image

from modal_vlm import clear_memory_cache
from modal_vlm.backbones import get_backbone
from modal_vlm.inputs import as_image_items


@pytest.fixture
def count_encodes():
    """Counts images passing through the tiny backbone's image encoder."""
    visual = get_backbone("tiny-vit").visual
    seen = []
    handle = visual.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    yield lambda: sum(seen)
    handle.remove()


def test_all_input_kinds_give_the_same_embeddings(make_clf, images, image_files):
    X, _ = images
    clf = make_clf()
    reference = clf.transform(X)
    assert reference.dtype == np.float32 and reference.shape == (12, 32)
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, rtol=1e-5)
    pil = [Image.fromarray(x) for x in X]
    preprocessed = torch.stack([clf.backbone_.preprocess(im) for im in pil])
    for other in (image_files, np.array(image_files), pil, list(X), preprocessed, preprocessed.numpy()):
        np.testing.assert_allclose(clf.transform(other), reference, atol=1e-5)


def test_grey_images_are_converted(make_clf, images):
    grey = images[0][..., 0]
    clf = make_clf()
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    np.testing.assert_allclose(clf.transform(grey), clf.transform(rgb), atol=1e-6)
    np.testing.assert_allclose(clf.transform(grey[..., None]), clf.transform(rgb), atol=1e-6)


def test_nested_lists_from_modal_vstack_are_pixels(make_clf, images):
    """modAL stacks lists of images into nested lists of ints; they still encode."""
    X, _ = images
    clf = make_clf()
    np.testing.assert_allclose(clf.transform(X[:3].tolist()), clf.transform(X[:3]), atol=1e-6)


@pytest.mark.parametrize("bad, error, match", [
    ([], ValueError, "X is empty"),
    ("one.jpg", ValueError, "single str"),
    (np.zeros((4, 10)), ValueError, "feature vectors are not images"),
    (np.zeros((2, 8, 8, 3), dtype=np.float32), ValueError, r"X\[0\]: a float image must be a preprocessed"),
    (np.full((2, 8, 8), 300), ValueError, "0..255"),
    ([np.zeros((8, 8, 4), np.uint8)], ValueError, r"\(H, W\) or \(H, W, 3\)"),
    ([object()], TypeError, "unsupported image type"),
])
def test_bad_inputs_name_the_problem(bad, error, match):
    with pytest.raises(error, match=match):
        items = as_image_items(bad)
        [item.fingerprint() for item in items]


def test_missing_and_unreadable_files_are_named(make_clf, tmp_path, image_files):
    clf = make_clf()
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        clf.transform(image_files[:2] + [str(tmp_path / "nope.jpg")])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot read image file.*broken.jpg"):
        clf.transform([str(broken)])


def test_each_image_is_encoded_once(make_clf, images, count_encodes):
    clear_memory_cache()
    X, y = images
    clf = make_clf(max_epochs=4)
    clf.transform(np.concatenate([X, X[:3]]))  # duplicates inside one call
    assert count_encodes() == 12
    clf.fit(X, y)
    clf.predict_proba(X)
    clf.fit(X, y)                       # another round
    from sklearn.base import clone

    clone(clf).fit(X[:6], y[:6]).predict(X)  # a clone shares the cache
    assert count_encodes() == 12


def test_content_not_identity_keys_the_cache(make_clf, images, count_encodes):
    clear_memory_cache()
    X, _ = images
    clf = make_clf()
    first = clf.transform(X[:4])
    changed = X[:4].copy()
    changed[0, 0, 0, 0] ^= 1
    second = clf.transform(changed)
    assert count_encodes() == 5
    np.testing.assert_array_equal(first[1:], second[1:])


def test_disk_cache_serves_a_new_process(make_clf, images, tmp_path, count_encodes):
    X, _ = images
    clear_memory_cache()
    expected = make_clf(cache_dir=tmp_path).transform(X)
    assert count_encodes() == 12
    clear_memory_cache()  # as if a new process started
    np.testing.assert_array_equal(make_clf(cache_dir=tmp_path).transform(X), expected)
    assert count_encodes() == 12
    assert len(list(tmp_path.glob("*/shard-*.npz"))) == 1


def test_a_disk_cache_is_read_only_where_the_requested_images_are(make_clf, images, tmp_path, monkeypatch,
                                                                  count_encodes):
    from modal_vlm import cache

    X, _ = images
    clear_memory_cache()
    for part in (X[:4], X[4:8], X[8:]):  # three shards
        make_clf(cache_dir=tmp_path).transform(part)
    expected = make_clf().transform(X)
    clear_memory_cache()  # a new process
    read = []
    real = cache._read_shard
    monkeypatch.setattr(cache, "_read_shard", lambda path, keys_only=False: read.append(keys_only) or real(path, keys_only))
    np.testing.assert_array_equal(make_clf(cache_dir=tmp_path).transform(X[5:7]), expected[5:7])
    assert sorted(read) == [False, True, True, True]  # every shard's keys, one shard's embeddings
    # A shard written since (here by another cache object, as by another process) is found too.
    cache.write_shard(tmp_path, make_clf().backbone_.key, [b"n" * 16], np.ones((1, expected.shape[1])))
    found, emb = cache.EmbeddingCache(make_clf().backbone_.key, tmp_path).get([b"n" * 16])
    assert found.tolist() == [True] and emb.tolist() == [[1.0] * expected.shape[1]]
    assert count_encodes() == 12
