"""The encoding pipeline: decoding threads, reduced-size JPEG decoding, channels-last,
mixed precision, and the cache keys that keep their numbers apart."""
import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from torchvision import transforms

from modal_vlm.embeddings import clear_memory_cache
from modal_vlm.backbones import get_backbone
from modal_vlm.backbones.base import resize_target
from modal_vlm.embeddings.encoding import (
    DRAFT_MARGIN, _batch_on, draft_size, embedding_key, encode_batches, encode_items, preprocessed,
)
from modal_vlm.embeddings.inputs import _open_image, as_image_items


def decode_threads():
    return [t for t in threading.enumerate() if t.name.startswith("modal-vlm-decode")]


def photo(width, height, seed=0):
    """A smooth colour image with some texture (a JPEG of it is photo-like enough here)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
    grain = rng.integers(-8, 9, (height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


@pytest.fixture
def mixed_files(tmp_path, image_files):
    """PNG files (CIFAR-size) and JPEG files of several sizes, interleaved."""
    paths = []
    for i, png in enumerate(image_files[:8]):
        jpeg = tmp_path / f"photo{i}.jpg"
        photo(64 + 96 * (i % 3), 48 + 64 * (i % 3), seed=i).save(jpeg, quality=90)
        paths += [png, str(jpeg)]
    return paths


def reference_embeddings(backbone, items):
    """The encoding before the pipeline: serial, contiguous, float32 under no_grad."""
    with torch.no_grad():
        batch = torch.stack([item.to_tensor(backbone.preprocess) for item in items])
        return torch.nn.functional.normalize(backbone.visual(batch), dim=-1).numpy()


def test_embeddings_do_not_depend_on_threads_or_batches_and_match_the_serial_encoder(mixed_files):
    backbone, items = get_backbone("tiny-vit"), as_image_items(mixed_files)
    serial = encode_items(backbone, items, num_workers=0, batch_size=5, jpeg_draft=False)
    for workers in (1, 3):
        np.testing.assert_array_equal(
            encode_items(backbone, items, num_workers=workers, batch_size=5, jpeg_draft=False), serial)
    np.testing.assert_allclose(serial, reference_embeddings(backbone, items), atol=1e-6)


def test_order_is_kept_when_later_images_decode_first(tmp_path, image_files):
    """Large files first, small ones after: the small finish first, the rows stay in order."""
    large = []
    for i in range(3):
        large.append(str(tmp_path / f"large{i}.png"))
        photo(900, 600, seed=i).save(large[-1])
    items = as_image_items(large + image_files[:6])
    backbone = get_backbone("tiny-vit")
    together = encode_items(backbone, items, num_workers=4, batch_size=4)
    one_by_one = np.concatenate([encode_items(backbone, [item], num_workers=0) for item in items])
    np.testing.assert_allclose(together, one_by_one, atol=1e-6)


@pytest.mark.parametrize("name, content, error, match", [
    ("nope.png", None, FileNotFoundError, "nope.png"),
    ("broken.jpg", b"not an image", ValueError, "Cannot read image file.*broken.jpg"),
])
def test_a_bad_file_is_named_and_the_threads_end(tmp_path, image_files, name, content, error, match):
    bad = tmp_path / name
    if content is not None:
        bad.write_bytes(content)
    before = threading.active_count()
    with pytest.raises(error, match=match):
        encode_items(get_backbone("tiny-vit"), as_image_items(image_files[:7] + [str(bad)] + image_files),
                     num_workers=3, batch_size=4)
    assert decode_threads() == [] and threading.active_count() == before


def test_a_missing_file_is_named_while_fingerprinting_and_the_threads_end(make_clf, tmp_path, image_files):
    with pytest.raises(FileNotFoundError, match="gone.png"):
        make_clf(encode_workers=3).transform(image_files + [str(tmp_path / "gone.png")] + image_files)
    assert decode_threads() == []


def test_batches_before_a_bad_file_are_delivered(tmp_path, image_files):
    backbone = get_backbone("tiny-vit")
    items = as_image_items(image_files[:8] + [str(tmp_path / "missing.png")])
    batches = encode_batches(backbone, items, batch_size=4, num_workers=2)
    assert next(batches).shape == (4, 32) and next(batches).shape == (4, 32)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        next(batches)
    assert decode_threads() == []


def test_an_abandoned_encoding_ends_its_threads(image_files):
    batches = encode_batches(get_backbone("tiny-vit"), as_image_items(image_files * 8), batch_size=4,
                             num_workers=3)
    next(batches)
    assert decode_threads()
    batches.close()
    assert decode_threads() == []


def test_invalid_settings_fail_at_once(images):
    backbone, items = get_backbone("tiny-vit"), as_image_items(images[0])
    for kwargs, match in (({"num_workers": -1}, "num_workers"), ({"num_workers": 1.5}, "num_workers"),
                          ({"encode_dtype": "half"}, "encode_dtype"), ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=match):
            encode_batches(backbone, items, **kwargs)  # before any image is decoded
    with pytest.raises(ValueError, match="num_workers"):
        preprocessed(items, backbone.preprocess, num_workers=-2)


def test_the_encoder_gets_channels_last_batches_in_inference_mode(images):
    backbone = get_backbone("tiny-vit")
    seen = []
    handle = backbone.visual.register_forward_pre_hook(lambda module, args: seen.append(
        (args[0].is_contiguous(memory_format=torch.channels_last), torch.is_inference_mode_enabled())))
    try:
        encode_items(backbone, as_image_items(images[0]), batch_size=5)
    finally:
        handle.remove()
    assert seen == [(True, True)] * 3
    conv_weights = [p for p in backbone.visual.parameters() if p.ndim == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)


def test_batches_reach_the_device_as_channels_last_copies():
    tensors = [torch.randn(3, 8, 8) for _ in range(3)]
    batch = _batch_on(tensors, torch.device("cpu"))
    assert batch.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(batch, torch.stack(tensors), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned-memory path needs a CUDA device")
def test_batches_reach_a_gpu_through_pinned_memory():
    tensors = [torch.randn(3, 8, 8) for _ in range(3)]
    batch = _batch_on(tensors, torch.device("cuda"))
    assert batch.is_cuda and batch.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(batch.cpu(), torch.stack(tensors), rtol=0, atol=0)


def test_mixed_precision_changes_the_numbers_slightly(images):
    backbone, items = get_backbone("tiny-vit"), as_image_items(images[0])
    full = encode_items(backbone, items)
    half = encode_items(backbone, items, encode_dtype="bfloat16")
    assert not np.array_equal(full, half)  # autocast took effect
    assert (full * half).sum(axis=1).min() > 0.999
    np.testing.assert_array_equal(encode_items(backbone, items, encode_dtype="float32"), full)


# -- reduced-size JPEG decoding ---------------------------------------------------------------

@pytest.mark.parametrize("size", [(2000, 1500), (1500, 2000), (1001, 999), (640, 427), (130, 129), (64, 40)])
def test_reduced_decoding_never_goes_below_the_requested_size(tmp_path, size):
    path = tmp_path / "photo.jpg"
    photo(*size).save(path, quality=85)
    full_short = min(size)
    for decode_size in (20, 32, 64, 100, 160, 250):
        decoded = _open_image(str(path), decode_size)
        assert min(decoded.size) >= min(decode_size, full_short)
        scale = size[0] / decoded.size[0]
        assert scale == pytest.approx(round(scale), rel=0.02) and round(scale) in (1, 2, 4, 8)
        assert (full_short // decode_size >= 2) == (round(scale) >= 2)  # reduced whenever it can be
        assert abs(decoded.size[0] / decoded.size[1] - size[0] / size[1]) < 0.03  # aspect ratio kept


def test_only_jpeg_files_are_decoded_at_reduced_size(tmp_path):
    image = photo(800, 600)
    image.save(tmp_path / "photo.png")
    image.save(tmp_path / "photo.webp", quality=90)
    for name in ("photo.png", "photo.webp"):
        assert _open_image(str(tmp_path / name), 64).size == (800, 600)


def test_reduced_decoding_keeps_the_embeddings(tmp_path):
    backbone = get_backbone("tiny-vit")
    assert draft_size(backbone) == DRAFT_MARGIN * 32 and draft_size(backbone, jpeg_draft=False) is None
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"photo{i}.jpg"))
        photo(1600, 1200, seed=i).save(paths[-1], quality=90)
    items = as_image_items(paths)
    full = encode_items(backbone, items, jpeg_draft=False)
    reduced = encode_items(backbone, items)
    assert not np.array_equal(full, reduced)  # the reduced decoding took effect
    assert (full * reduced).sum(axis=1).min() > 0.99
    np.testing.assert_allclose(full, reference_embeddings(backbone, items), atol=1e-6)


def test_resize_size_is_derived_from_the_preprocess():
    assert get_backbone("tiny-vit").resize_size == 32
    from open_clip.transform import image_transform

    for mode, expected in (("shortest", 224), ("longest", 224), ("squash", 224)):
        assert resize_target(image_transform(224, is_train=False, resize_mode=mode)) == expected
    assert resize_target(transforms.Compose([transforms.Resize((256, 320)), transforms.ToTensor()])) == 320
    assert resize_target(transforms.Compose([transforms.CenterCrop(224), transforms.Resize(224)])) is None
    assert resize_target(lambda image: image) is None


# -- the classifier and its cache keys --------------------------------------------------------

def test_settings_that_change_the_numbers_have_their_own_cache_key(make_clf, images):
    backbone = get_backbone("tiny-vit")
    keys = {embedding_key(backbone, encode_dtype=dtype, jpeg_draft=draft)
            for dtype in (None, "bfloat16", "float16") for draft in (True, False)}
    assert len(keys) == 6 and backbone.key in keys
    assert embedding_key(backbone, encode_dtype="float32") == embedding_key(backbone)

    clear_memory_cache()
    seen = []
    handle = backbone.visual.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    try:
        X = images[0]
        full = make_clf().transform(X)
        np.testing.assert_array_equal(make_clf(encode_workers=0, encode_batch_size=5).transform(X), full)
        assert sum(seen) == 12  # thread count and batch size reuse the cache
        half = make_clf(encode_dtype="bfloat16").transform(X)
        assert sum(seen) == 24 and not np.array_equal(half, full)
        make_clf(jpeg_draft=False).transform(X)
        assert sum(seen) == 36
    finally:
        handle.remove()


def test_classifier_parameters_are_validated_and_cloned(make_clf, images):
    X, y = images
    clf = make_clf(encode_dtype="bfloat16", jpeg_draft=False, encode_workers=2)
    assert clone(clf).get_params()["encode_dtype"] == "bfloat16"
    assert {k: clone(clf).get_params()[k] for k in ("jpeg_draft", "encode_workers")} == \
        {"jpeg_draft": False, "encode_workers": 2}
    for bad, match in (({"encode_dtype": "fp16"}, "encode_dtype"), ({"encode_workers": -1}, "num_workers")):
        with pytest.raises(ValueError, match=match):
            make_clf(**bad).fit(X, y)
        with pytest.raises(ValueError, match=match):
            make_clf(**bad).transform(X)


@pytest.mark.parametrize("native", [True, False])
def test_emulated_mixed_precision_is_announced(images, monkeypatch, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encode_items(get_backbone("tiny-vit"), as_image_items(images[0][:2]), encode_dtype="bfloat16")
    emulated = [w for w in caught if "no native support" in str(w.message)]
    assert len(emulated) == (0 if native else 1)
