import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from modal_vlm.datasets import (
    CIFAR10_SAMPLE,
    DIGIT_NAMES,
    OOD_LABEL,
    load_cifar10_sample,
    load_digits_images,
    load_image_folder,
    make_open_set,
)

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = Path(os.environ.get("MODAL_VLM_CIFAR10", REPO / "../shared/data/cifar10")).resolve()
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


def write_image(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color=(10, 20, 30)).save(path, format="PNG")


@pytest.fixture
def folder(tmp_path):
    """Two classes; odd-case suffixes, a nested image, and files that are not images."""
    for name in ["b2.PNG", "b1.jpg", "b3.JpEg"]:
        write_image(tmp_path / "bird" / name)
    for name in ["c1.png", "sub/c0.webp"]:
        write_image(tmp_path / "cat" / name)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    write_image(tmp_path / "cat" / "._c9.png")  # macOS resource fork
    (tmp_path / "loose.png").write_bytes(b"")  # files next to the class folders are ignored
    return tmp_path


def test_load_image_folder_lists_sorted_classes_and_files(folder):
    paths, y, class_names = load_image_folder(folder)
    assert class_names == ["bird", "cat"]
    assert [Path(p).relative_to(folder).as_posix() for p in paths] == [
        "bird/b1.jpg", "bird/b2.PNG", "bird/b3.JpEg", "cat/c1.png", "cat/sub/c0.webp",
    ]
    assert y.tolist() == [0, 0, 0, 1, 1]
    assert y.dtype == np.int64 and paths.dtype.kind == "U"


def test_load_image_folder_takes_classes_in_given_order(folder):
    paths, y, class_names = load_image_folder(folder, classes=["cat", "bird"])
    assert class_names == ["cat", "bird"]
    assert y.tolist() == [0, 0, 1, 1, 1]
    assert Path(paths[0]).parent.name == "cat"


def test_max_per_class_first_files_without_seed_random_subset_with_seed(folder):
    paths, y, _ = load_image_folder(folder, max_per_class=2)
    assert [Path(p).name for p in paths] == ["b1.jpg", "b2.PNG", "c1.png", "c0.webp"]
    all_paths, _, _ = load_image_folder(folder)
    draws = {tuple(load_image_folder(folder, max_per_class=1, random_state=seed)[0])
             for seed in range(20)}
    assert len(draws) > 1  # the seed matters...
    for draw in draws:  # ...and each draw holds one image per class
        assert set(draw) <= set(all_paths) and len(draw) == 2
    again = load_image_folder(folder, max_per_class=1, random_state=3)[0]
    assert again.tolist() == load_image_folder(folder, max_per_class=1, random_state=3)[0].tolist()


def test_load_image_folder_errors_name_the_folder(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="'dog'"):
        load_image_folder(folder, classes=["cat", "dog"])
    with pytest.raises(ValueError, match="repeated"):
        load_image_folder(folder, classes=["cat", "cat"])
    with pytest.raises(TypeError, match="one string"):
        load_image_folder(folder, classes="cat")
    with pytest.raises(ValueError, match="max_per_class"):
        load_image_folder(folder, max_per_class=0)
    (folder / "empty_class").mkdir()
    (folder / "empty_class" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty_class"):
        load_image_folder(folder)


def test_load_image_folder_without_class_folders(tmp_path):
    write_image(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="flat.*no class sub-folders"):
        load_image_folder(tmp_path / "flat")


def test_load_digits_images():
    images, y, class_names = load_digits_images(size=32, max_per_class=3)
    assert images.shape == (30, 32, 32) and images.dtype == np.uint8
    assert class_names == list(DIGIT_NAMES) and class_names[0] == "zero"
    assert np.bincount(y).tolist() == [3] * 10
    assert images.max() > 200  # rescaled from 0..16 to 0..255
    # At the native size nothing is resized: only the 0..16 -> 0..255 rescaling remains.
    native, y_native, _ = load_digits_images(size=8)
    digits = load_digits()
    assert np.array_equal(native, np.rint(digits.images * 255 / 16).astype(np.uint8))
    assert np.array_equal(y_native, digits.target)



def test_cifar10_sample_is_the_shared_files_decoded(cifar10):
    X_pool, y_pool, X_test, y_test, class_names = load_cifar10_sample()
    assert X_pool.shape == (1000, 32, 32, 3) and X_test.shape == (500, 32, 32, 3)
    assert X_pool.dtype == np.uint8 and y_pool.dtype == np.int64
    assert np.bincount(y_pool).tolist() == [100] * 10 and np.bincount(y_test).tolist() == [50] * 10
    assert class_names == sorted(p.name for p in (cifar10 / "train").iterdir())
    # The first files of each class, bytes unchanged: decoding them gives the same pixels.
    for X, y, split, index in ((X_pool, y_pool, "train", 99), (X_test, y_test, "test", 0)):
        first = np.flatnonzero(y == 3)[index]
        source = cifar10 / split / class_names[3] / f"{index:04d}.jpg"
        assert np.array_equal(X[first], np.asarray(Image.open(source).convert("RGB")))
    assert CIFAR10_SAMPLE.stat().st_size < 2_000_000   # package data stays small


def test_cifar10_sample_subsets_follow_the_module_rule():
    X_pool, y_pool, X_test, y_test, _ = load_cifar10_sample(5, 2)
    assert np.bincount(y_pool).tolist() == [5] * 10 and np.bincount(y_test).tolist() == [2] * 10
    full_pool, full_y, _, _, _ = load_cifar10_sample()
    assert np.array_equal(X_pool[:5], full_pool[:5])           # None: the first images
    seeded = load_cifar10_sample(5, 2, random_state=0)
    assert np.bincount(seeded[1]).tolist() == [5] * 10
    assert not np.array_equal(seeded[0], X_pool)               # a seed: a random subset
    assert np.array_equal(load_cifar10_sample(5, 2, random_state=0)[0], seeded[0])


# Five classes, four training and two test samples each; X encodes "class/index".
NAMES = ["cat", "dog", "frog", "ship", "truck"]
Y_TRAIN = np.repeat(np.arange(5), 4)
X_TRAIN = np.array([f"{NAMES[c]}/{i}" for i, c in enumerate(Y_TRAIN)])
Y_TEST = np.repeat(np.arange(5), 2)
X_TEST = np.array([f"test-{NAMES[c]}/{i}" for i, c in enumerate(Y_TEST)])


def split(**kwargs):
    return make_open_set((X_TRAIN, Y_TRAIN), (X_TEST, Y_TEST), NAMES, **kwargs)


def pool_class_names(s):
    return sorted({x.split("/")[0] for x in s.X_pool})


@pytest.mark.parametrize(
    "setting, pool_classes",
    [
        ("closed", ["cat", "dog", "frog"]),
        ("partial", ["cat", "dog"]),
        ("open", ["cat", "dog", "frog", "ship", "truck"]),
        ("open-partial", ["cat", "dog", "ship", "truck"]),
    ],
)
def test_make_open_set_settings(setting, pool_classes):
    s = split(known=3, setting=setting)
    assert s.setting == setting
    assert s.known_classes == ["cat", "dog", "frog"] and s.unknown_classes == ["ship", "truck"]
    assert pool_class_names(s) == pool_classes
    # Pool labels: known classes re-indexed, unknown ones OOD_LABEL.
    expected = {"cat": 0, "dog": 1, "frog": 2, "ship": OOD_LABEL, "truck": OOD_LABEL}
    assert s.y_pool.tolist() == [expected[x.split("/")[0]] for x in s.X_pool]
    # The test split is the same in every setting: all samples, unknown ones as OOD.
    assert s.X_test.tolist() == X_TEST.tolist()
    assert s.y_test.tolist() == [0, 0, 1, 1, 2, 2, -1, -1, -1, -1]


def test_make_open_set_named_classes_and_partial_pool():
    s = split(known=["truck", "cat"], setting="open-partial", pool_known=["cat"])
    assert s.known_classes == ["truck", "cat"] and s.pool_classes == ["cat"]
    assert s.unknown_classes == ["dog", "frog", "ship"]
    assert pool_class_names(s) == ["cat", "dog", "frog", "ship"]
    assert set(s.y_pool.tolist()) == {1, OOD_LABEL}
    assert s.y_test.tolist() == [1, 1, -1, -1, -1, -1, -1, -1, 0, 0]


def test_make_open_set_is_seeded_and_deterministic():
    choices = {tuple(split(known=3, random_state=seed).known_classes) for seed in range(10)}
    assert len(choices) > 1
    a = split(known=3, setting="open-partial", pool_known=2, random_state=7)
    b = split(known=3, setting="open-partial", pool_known=2, random_state=7)
    assert a.known_classes == b.known_classes and a.pool_classes == b.pool_classes
    assert a.X_pool.tolist() == b.X_pool.tolist()
    assert set(a.pool_classes) <= set(a.known_classes)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"known": 3, "setting": "semi-open"}, ValueError, "setting must be one of"),
        ({"known": 5, "setting": "open"}, ValueError, "needs unknown classes"),
        ({"known": 3, "setting": "open", "pool_known": 1}, ValueError, "partial"),
        ({"known": 0}, ValueError, "between 1 and 5"),
        ({"known": ["cat", "lion"]}, ValueError, "distinct names"),
        ({"known": ["cat", "cat"]}, ValueError, "distinct names"),
        ({"known": "cat"}, TypeError, "one string"),
        ({"known": ["cat", "dog"], "setting": "partial", "pool_known": ["frog"]},
         ValueError, "pool_known"),
    ],
)
def test_make_open_set_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        split(**kwargs)


def test_make_open_set_rejects_misaligned_data():
    with pytest.raises(ValueError, match="len"):
        make_open_set((X_TRAIN[:-1], Y_TRAIN), (X_TEST, Y_TEST), NAMES, known=2)
    for bad_labels in (Y_TRAIN + 1, NAMES[:1] * len(Y_TRAIN)):
        with pytest.raises(ValueError, match=r"labels must be integers in \[0, 5\)"):
            make_open_set((X_TRAIN, bad_labels), (X_TEST, Y_TEST), NAMES, known=2)


def test_closed_world_data_allows_closed_settings():
    s = split(known=5, setting="partial", pool_known=2)
    assert s.unknown_classes == [] and OOD_LABEL not in s.y_test
    assert pool_class_names(s) == ["cat", "dog"]


@pytest.mark.skipif(not CIFAR10.is_dir(), reason=f"shared CIFAR-10 data not found at {CIFAR10} "
                    "(set MODAL_VLM_CIFAR10 to its folder)")
def test_cifar10_open_set():
    train = load_image_folder(CIFAR10 / "train", max_per_class=5, random_state=0)
    test = load_image_folder(CIFAR10 / "test", max_per_class=3)
    assert train[2] == test[2] == CIFAR10_CLASSES
    assert len(train[0]) == 50 and all(Path(p).suffix == ".jpg" for p in train[0])
    with Image.open(train[0][0]) as image:
        assert image.size == (32, 32)
    s = make_open_set(train[:2], test[:2], train[2], known=6, setting="open")
    assert s.known_classes == CIFAR10_CLASSES[:6]
    assert len(s.X_pool) == 50 and (s.y_pool == OOD_LABEL).sum() == 20
    assert (s.y_test == OOD_LABEL).sum() == 12 and s.y_test.max() == 5
