"""Every input kind, the content-keyed embedding cache, encode-once."""
import numpy as np
import pytest
import torch
from PIL import Image

from modal_vlm import cec_query
from modal_vlm.embeddings import clear_memory_cache
from modal_vlm.backbones import get_backbone
from modal_vlm.embeddings.inputs import as_image_items


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
    ([np.zeros((8, 8, 5), np.uint8)], ValueError, r"\(H, W\), \(H, W, 3\) or RGBA \(H, W, 4\)"),
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


# -- bad pixels and ambiguous shapes (issue 11) ---------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_infinite_pixels_name_the_sample(make_clf, images, bad):
    X, y = images
    clf = make_clf()
    tensors = torch.stack([clf.backbone_.preprocess(Image.fromarray(x)) for x in X])
    tensors[5, 1, 2, 3] = bad
    for call in (clf.predict_proba, clf.transform, lambda X: clf.fit(X, y), lambda X: cec_query(clf, X)):
        with pytest.raises(ValueError, match=r"X\[5\]: the preprocessed tensor has 1 NaN or infinite value"):
            call(tensors)


def test_non_finite_embeddings_from_the_encoder_are_refused(make_clf, image_files):
    clear_memory_cache()
    clf = make_clf()
    visual = clf.backbone_.visual

    def nan_for_the_second(module, args, out):
        return out.index_fill(0, torch.tensor([1]), float("nan")) if len(out) > 1 else out

    handle = visual.register_forward_hook(nan_for_the_second)
    try:
        with pytest.raises(ValueError, match=r"NaN or infinite embeddings for X\[1\] \(.*img1.png\)"):
            clf.predict_proba(image_files[:3])
    finally:
        handle.remove()
    assert np.isfinite(clf.predict_proba(image_files[:3])).all()   # nothing bad was cached


def test_one_image_is_not_read_as_a_batch(make_clf, images):
    X, _ = images
    clf = make_clf()
    with pytest.raises(ValueError, match=r"shape \(32, 32, 3\): that is one image.*X\[None\]"):
        clf.predict_proba(X[0])
    preprocessed = clf.backbone_.preprocess(Image.fromarray(X[0]))
    with pytest.raises(ValueError, match=r"shape \(3, 32, 32\): that is one image"):
        clf.predict_proba(preprocessed)
    assert clf.predict_proba(X[0][None]).shape == (1, 3) and clf.predict_proba([X[0]]).shape == (1, 3)


def test_sixteen_bit_grey_png_is_scaled_not_saturated(make_clf, tmp_path):
    rng = np.random.default_rng(3)
    grey16 = rng.integers(0, 65536, (32, 32), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    grey8 = np.round(grey16 / 257).astype(np.uint8)
    clf = make_clf()
    expected = clf.transform(grey8[None])
    np.testing.assert_allclose(clf.transform([str(tmp_path / "grey16.png")]), expected, atol=1e-5)
    np.testing.assert_allclose(clf.transform([Image.fromarray(grey16)]), expected, atol=1e-5)


def test_rgba_arrays_are_treated_like_rgba_files(make_clf, tmp_path):
    rgba = np.random.default_rng(4).integers(0, 256, (2, 32, 32, 4), dtype=np.uint8)
    files = []
    for i, pixels in enumerate(rgba):
        Image.fromarray(pixels, mode="RGBA").save(tmp_path / f"rgba{i}.png")
        files.append(str(tmp_path / f"rgba{i}.png"))
    clf = make_clf()
    np.testing.assert_allclose(clf.transform(rgba), clf.transform(files), atol=1e-6)
    np.testing.assert_allclose(clf.transform(rgba), clf.transform(rgba[..., :3]), atol=1e-6)


def test_errors_name_files_plainly(make_clf, tmp_path, image_files):
    from modal_vlm.runner.data import unreadable_images

    clf = make_clf()
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    missing = str(tmp_path / "missing.png")
    for paths, message in ((np.array([missing]), f"Image file not found: {missing}"),
                           (np.array([str(broken)]), f"Cannot read image file {broken}: cannot identify image file$")):
        with pytest.raises((FileNotFoundError, ValueError)) as error:
            clf.transform(paths)
        assert str(error.value) == message.rstrip("$") and "np.str_" not in str(error.value)
    assert unreadable_images(np.array([str(broken)])) == {str(broken): "cannot identify image file"}


def test_a_disk_cache_is_read_only_where_the_requested_images_are(make_clf, images, tmp_path, monkeypatch,
                                                                  count_encodes):
    from modal_vlm.embeddings import cache

    X, _ = images
    clear_memory_cache()
    for part in (X[:4], X[4:8], X[8:]):  # three shards
        make_clf(cache_dir=tmp_path).transform(part)
    expected = make_clf().transform(X)
    clear_memory_cache()  # a new process
    read = []
    real = cache._read_shard
    monkeypatch.setattr(cache, "_read_shard", lambda path, keys_only=False, **kw: read.append(keys_only)
                        or real(path, keys_only, **kw))
    np.testing.assert_array_equal(make_clf(cache_dir=tmp_path).transform(X[5:7]), expected[5:7])
    assert sorted(read) == [False, True, True, True]  # every shard's keys, one shard's embeddings
    # A shard written since (here by another cache object, as by another process) is found too.
    cache.write_shard(tmp_path, make_clf().embedding_key_, [b"n" * 16], np.ones((1, expected.shape[1])))
    found, emb = cache.EmbeddingCache(make_clf().embedding_key_, tmp_path).get([b"n" * 16])
    assert found.tolist() == [True] and emb.tolist() == [[1.0] * expected.shape[1]]
    assert count_encodes() == 12
