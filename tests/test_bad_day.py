"""Rows of issue 25's bad-day trial for the estimator, the cache and the experiment runner:
each damaged file, odd input or odd setting is accepted correctly or refused with an error
naming it, and nothing is changed."""
import warnings

import numpy as np
import pytest
from PIL import Image
from test_experiment import write_image_folder

from modal_vlm.runner import RunConfig, run_experiment

TINY = {"model_name": "tiny-vit", "n_ctx": 2, "max_epochs": 1, "batch_size": 4}


def image_folder(root, classes, per_class=4):
    return write_image_folder(root, classes=classes, per_class=per_class)


# -- bad day 3: class names that differ only in case or spacing ----------------------------

@pytest.mark.trial("bad-day 3")
@pytest.mark.parametrize("names, match", [
    (["cat", "Cat"], "'cat' and 'Cat' differ only in case or spacing"),
    (["cat", "cat "], r"surrounding spaces: \['cat '\]"),
    (["big cat", "big  cat", "dog"], "'big cat' and 'big  cat' differ only in case or spacing"),
])
def test_estimator_refuses_class_names_that_differ_only_in_case_or_spacing(make_clf, images, names, match):
    X, _ = images
    clf = make_clf(class_names=names)
    with pytest.raises(ValueError, match=match):
        clf.predict_proba(X)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, np.arange(len(X)) % 2)
    assert not clf.initialized_


@pytest.mark.trial("bad-day 3")
def test_runner_refuses_class_folders_that_differ_only_in_case(tmp_path):
    data = image_folder(tmp_path / "data", ["cat", "Cat", "dog"])
    config = RunConfig(data=str(data), seeds=(0,), rounds=1, classifier=TINY)
    with pytest.raises(ValueError, match=r"class folders of .*data 'Cat' and 'cat' differ only in case"):
        run_experiment(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.trial("bad-day 3")
@pytest.mark.parametrize("classes, match", [(["cat", "Cat"], "differ only in case"),
                                            (["cat ", "dog"], "surrounding spaces"),
                                            (["None of these classes", "dog"], "the app's answer")])
def test_labeling_app_uses_the_same_rule(tmp_path, classes, match):
    from modal_vlm.labeling.project import open_project

    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match=match):
        open_project(tmp_path / "p", tmp_path / "images", classes, model="tiny-vit")
    assert not (tmp_path / "p").exists()


# -- bad day 1: damaged embedding-cache shards, a full disk --------------------------------

def _shards(cache_dir):
    return sorted(cache_dir.glob("*/shard-*.npz"))


def _damage(shard, how):
    if how == "empty":
        shard.write_bytes(b"")
    elif how == "truncated":
        shard.write_bytes(shard.read_bytes()[:100])
    elif how == "garbage":   # np.load reads it as a pickle: "Cannot load file containing pickled data"
        shard.write_bytes(b"\x80\x04not a shard at all" * 20)
    elif how == "foreign":
        np.savez(shard, weights=np.zeros(3))
    elif how == "wrong-width":
        with np.load(shard) as data:
            np.savez(shard, keys=data["keys"], embeddings=np.zeros((len(data["keys"]), 5), np.float32))
    elif how == "not-finite":
        with np.load(shard) as data:
            np.savez(shard, keys=data["keys"], embeddings=np.full(data["embeddings"].shape, np.nan, np.float32))


@pytest.mark.trial("bad-day 1")
@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "foreign", "wrong-width", "not-finite"])
def test_damaged_cache_shard_is_set_aside_and_its_images_encoded_again(make_clf, images, tmp_path, how):
    from modal_vlm.embeddings import clear_memory_cache

    X, y = images
    clear_memory_cache()
    expected = make_clf(cache_dir=tmp_path / "cache").transform(X)
    (shard,) = _shards(tmp_path / "cache")
    _damage(shard, how)
    clear_memory_cache()   # a later process: everything comes from the disk
    clf = make_clf(cache_dir=tmp_path / "cache")
    with pytest.warns(RuntimeWarning, match=rf"shard {shard} cannot be read .*moved it aside"):
        np.testing.assert_allclose(clf.transform(X), expected, atol=1e-6)
    assert shard.with_name(shard.name + ".damaged").exists() and not shard.exists()
    clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the re-encoded shard is read, the damaged one never again
        np.testing.assert_allclose(make_clf(cache_dir=tmp_path / "cache").fit(X, y).transform(X), expected, atol=1e-6)


@pytest.mark.trial("bad-day 1")
def test_full_disk_keeps_the_embeddings_in_memory_and_leaves_no_temporary_file(make_clf, images, tmp_path,
                                                                               monkeypatch):
    import errno

    from modal_vlm.embeddings import cache, encoding

    X, _ = images
    expected = make_clf().transform(X)
    from modal_vlm.embeddings import clear_memory_cache

    clear_memory_cache()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.np, "savez", disk_full)
    clf = make_clf(cache_dir=tmp_path / "cache")
    with pytest.warns(RuntimeWarning, match=r"cannot write to the embedding cache .*No space left on device.*"
                                            r"12 embeddings are kept in memory"):
        np.testing.assert_allclose(clf.transform(X), expected, atol=1e-6)
    assert not list((tmp_path / "cache").rglob("*.tmp")) and not _shards(tmp_path / "cache")
    monkeypatch.setattr(encoding, "_encode_batch", lambda *a, **k: pytest.fail("encoded again"))
    np.testing.assert_allclose(clf.transform(X), expected, atol=1e-6)   # from memory


@pytest.mark.trial("bad-day 1")
def test_shards_are_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    import os

    from modal_vlm.embeddings import cache

    order = []
    monkeypatch.setattr(cache.os, "fsync", lambda fd: order.append("fsync"))
    replace = os.replace
    monkeypatch.setattr(cache.os, "replace", lambda a, b: order.append("rename") or replace(a, b))
    cache.write_shard(tmp_path, "key", [b"k" * 16], np.ones((1, 4)))
    assert order[:2] == ["fsync", "rename"]


# -- bad day 6: a file rewritten with the same size and mtime -------------------------------

@pytest.mark.trial("bad-day 6")
def test_file_rewritten_with_same_size_and_mtime_is_encoded_again(make_clf, tmp_path):
    import os

    rng = np.random.default_rng(0)
    path = tmp_path / "photo.bmp"   # BMP: the same size in bytes whatever the pixels
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    stat = os.stat(path)
    clf = make_clf()   # a long-lived process (the label server): the in-memory cache stays
    before = clf.transform([str(path)])
    replacement = tmp_path / "new.bmp"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(replacement)
    path.write_bytes(replacement.read_bytes())                         # `cp -p`: same size ...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))            # ... and the old mtime
    assert os.stat(path).st_size == stat.st_size and os.stat(path).st_mtime_ns == stat.st_mtime_ns
    after = clf.transform([str(path)])
    np.testing.assert_allclose(after, clf.transform([str(replacement)]), atol=1e-6)
    assert not np.allclose(after, before)


# -- bad day 7: damaged run files ------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run (tiny model, one strategy and seed, 2 rounds) and its config."""
    root = tmp_path_factory.mktemp("finished")
    data = image_folder(root / "data", ["cat", "dog"], per_class=6)
    config = RunConfig(data=str(data), seeds=(0,), rounds=2, classifier=TINY)
    run_experiment(config, root / "run", progress=False)
    return config, root / "run"


def _copy_run(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def _bytes(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _edit_json(path, edit):
    import json

    value = json.loads(path.read_text())
    path.write_text(json.dumps(edit(value)))


@pytest.mark.trial("bad-day 7")
@pytest.mark.parametrize("damage, match", [
    (lambda run: (run / "config.json").write_text((run / "config.json").read_text()[:50]),
     r"config.json is damaged \(not JSON"),
    (lambda run: (run / "rounds.json").write_text((run / "rounds.json").read_text()[:50]),
     r"rounds.json is damaged \(not JSON"),
    (lambda run: (run / "config.json").write_text("{}"), r"config.json is damaged \(no 'config' and 'data'"),
    (lambda run: (run / "rounds.json").write_text("{}"), r"rounds.json is damaged \(a JSON dict, not the list"),
    (lambda run: (run / "rounds.json").write_text("[1, 2]"), r"rounds.json record 0 is not a round record"),
    (lambda run: _edit_json(run / "rounds.json", lambda r: [*r[:1], {**r[1], "queried": [10 ** 6]}, *r[2:]]),
     r"rounds.json record 1 \(strategy 'cec', seed 0, round 1\) labels pool indices outside 0\.\.8: \[1000000\]"),
    (lambda run: _edit_json(run / "rounds.json", lambda r: r + [{**r[-1], "strategy": "badge"}]),
     r"rounds.json record 3 \(strategy 'badge', seed 0, round 2\) is not a run of this experiment"),
    (lambda run: _edit_json(run / "rounds.json", lambda r: [{k: v for k, v in r[0].items() if k != "round"}]),
     r"rounds.json record 0 has no valid 'round'"),
], ids=["config-truncated", "rounds-truncated", "config-empty-object", "rounds-object", "rounds-numbers",
        "queried-out-of-range", "foreign-strategy", "record-without-round"])
def test_damaged_run_files_are_named_and_nothing_changes(finished_run, tmp_path, damage, match):
    from modal_vlm.runner import RunDirectoryError

    config, source = finished_run
    run = _copy_run(source, tmp_path / "run")
    (run / "summary.json").unlink()   # an interrupted run: the next call would resume it
    damage(run)
    before = _bytes(run)
    with pytest.raises(RunDirectoryError, match=match + ".*Nothing was changed"):
        run_experiment(config, run, progress=False)
    assert _bytes(run) == before


@pytest.mark.trial("bad-day 7")
def test_history_with_an_index_outside_the_pool_is_a_clear_error(make_clf, images):
    from modal_vlm.experiment import run_active_learning

    X, y = images
    history = [{"round": 0, "queried": [], "n_labeled": 0}, {"round": 1, "queried": [99], "n_labeled": 1}]
    with pytest.raises(ValueError, match="round 1 labels indices outside the pool of 8"):
        run_active_learning(make_clf(), "random", X[:8], y[:8], X[8:], y[8:], rounds=2, budget=1, history=history)


# -- also: run output folders and the learning-curve plot -------------------------------------

@pytest.mark.trial("also: user files in --out")
@pytest.mark.parametrize("name", ["summary.json", "rounds.csv", "learning_curve.png"])
def test_a_folder_with_files_named_like_run_files_is_refused_without_overwrite(finished_run, tmp_path, name):
    from modal_vlm.runner import RunDirectoryError

    config, _ = finished_run
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("the user's own file")
    with pytest.raises(RunDirectoryError, match=rf"not a modal-vlm run \(no config.json\) but holds {name}"):
        run_experiment(config, out, progress=False)
    assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == "the user's own file"
    run_experiment(config, out, progress=False, overwrite=True)
    assert (out / "config.json").exists()


@pytest.mark.trial("also: plot-only failure")
def test_a_run_whose_plot_failed_makes_it_when_run_again(finished_run, tmp_path, monkeypatch):
    from modal_vlm import runner

    config, _ = finished_run

    def broken(*args, **kwargs):
        raise RuntimeError("the plot backend crashed")

    with monkeypatch.context() as patch:
        patch.setattr(runner, "plot_learning_curves", broken)
        with pytest.raises(RuntimeError, match="plot backend crashed"):
            run_experiment(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "summary.json").exists() and not (tmp_path / "run" / "learning_curve.png").exists()
    result = run_experiment(config, tmp_path / "run", progress=False)   # no --overwrite needed
    assert result.plot.exists()


@pytest.mark.trial("also: symlink loop in --data")
def test_a_symlink_loop_in_the_data_is_listed_not_dropped(tmp_path):
    import os

    from modal_vlm.runner import load_run_data

    data = image_folder(tmp_path / "data", ["cat", "dog"], per_class=6)
    os.symlink("loop.jpg", data / "cat" / "loop.jpg")
    os.symlink("nowhere.png", data / "dog" / "gone.png")
    with pytest.raises(ValueError, match=r"2 unreadable image file\(s\).*loop.jpg: \[Errno 40\] Too many levels of "
                                         r"symbolic links.*gone.png"):
        load_run_data(RunConfig(data=str(data)))
    with pytest.warns(UserWarning, match="skipped 2 unreadable image file"):
        skipped = load_run_data(RunConfig(data=str(data), on_bad_image="skip")).skipped
    assert sorted(os.path.basename(p) for p in skipped) == ["gone.png", "loop.jpg"]


@pytest.mark.trial("first-hour 7: plot")
def test_plot_says_its_band_is_one_std_and_names_the_data_folder(finished_run, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from modal_vlm.runner.curves import plot_learning_curves

    seen = {}
    save = Figure.savefig

    def savefig(figure, *args, **kwargs):
        axes = figure.axes[0]
        seen.update(legend=[t.get_text() for t in axes.get_legend().get_texts()], title=axes.get_title())
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    records = [{"strategy": "cec", "seed": s, "round": k, "n_labeled": 2 * k, "accuracy": 0.5 + 0.1 * k + 0.01 * s}
               for s in (0, 1) for k in range(3)]
    plot_learning_curves(records, tmp_path / "curve.png")
    assert "cec (mean of 2 seeds, band ± 1 std)" in seen["legend"]
    config, _ = finished_run
    run_experiment(config.override(seeds=(1,)), tmp_path / "run", progress=False)
    parent = config.data.rstrip("/").split("/")[-2]
    assert seen["title"] == f"{parent}/data: tiny-vit, 2 labels per round"


# -- bad day 4: EXIF orientation ---------------------------------------------------------------

@pytest.mark.trial("bad-day 4")
def test_phone_photos_reach_the_model_upright(make_clf, tmp_path):
    from PIL import ImageOps

    from modal_vlm.embeddings.inputs import ImageItem, _digest

    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))   # landscape pixels
    exif = stored.getexif()
    exif[0x0112] = 6   # "turn 90 degrees clockwise to show": a portrait photo from a phone
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "phone.jpg") as opened:
        shown = ImageOps.exif_transpose(opened)   # what a browser shows: 24 wide, 40 high
        assert shown.size == (24, 40)
        raw = np.asarray(opened.convert("RGB"))   # the stored pixels, sideways
    upright_pixels = np.asarray(shown.convert("RGB"))
    clf = make_clf()
    expected = clf.transform(upright_pixels[None])
    np.testing.assert_allclose(clf.transform([str(tmp_path / "phone.jpg")]), expected, atol=1e-5)
    with Image.open(tmp_path / "phone.jpg") as opened:
        np.testing.assert_allclose(clf.transform([opened]), expected, atol=1e-5)   # a PIL image too
    assert not np.allclose(clf.transform(raw[None]), expected, atol=1e-3)        # sideways is another image
    # The key of a file without EXIF is the digest of its bytes, as before.
    Image.fromarray(upright_pixels).save(tmp_path / "plain.png")
    data = (tmp_path / "plain.png").read_bytes()
    assert ImageItem(str(tmp_path / "plain.png"), "path").fingerprint() == _digest(b"file", data)
    assert ImageItem(str(tmp_path / "phone.jpg"), "path").fingerprint() != _digest(
        b"file", (tmp_path / "phone.jpg").read_bytes())


# -- also: parameters changed on a fitted estimator ---------------------------------------------

@pytest.mark.trial("also: set_params(class_names) on a fitted model")
def test_new_class_names_on_a_fitted_model_warn_at_set_params(make_clf, images):
    X, y = images
    clf = make_clf().fit(X, y)
    with pytest.warns(UserWarning, match=r"class_names changed since the prompt was learned.*zero-shot until the "
                                         r"next fit") as caught:
        clf.set_params(class_names=["cow", "horse", "sheep"])
    assert caught[0].filename == __file__   # the warning points at the user's call
    np.testing.assert_allclose(clf.predict_proba(X), make_clf(class_names=["cow", "horse", "sheep"]).predict_proba(X),
                               atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.set_params(lr=0.01)                             # other parameters: nothing to say
        make_clf().set_params(class_names=["a", "b"])       # not fitted: nothing to drop


@pytest.mark.trial("also: load_params n_ctx")
def test_load_params_checks_the_context_actually_learned(make_clf, images, tmp_path):
    X, y = images
    # With ctx_init="template" (the default) n_ctx is unused: the context is the template's
    # 4 tokens ("a photo of a") whatever n_ctx says, so a state saved with n_ctx=2 is the
    # same model in an n_ctx=4 estimator, and loads.
    saved = make_clf(n_ctx=2).fit(X, y)
    saved.save_params(f_params=tmp_path / "template.pt")
    loaded = make_clf(n_ctx=4)
    loaded.load_params(f_params=tmp_path / "template.pt")
    assert loaded.module_.prompt_learner.n_ctx == saved.module_.prompt_learner.n_ctx == 4
    np.testing.assert_allclose(loaded.predict_proba(X), saved.predict_proba(X), atol=1e-6)
    # Where n_ctx is the context's length (ctx_init=None), another length is refused.
    make_clf(n_ctx=2, ctx_init=None).fit(X, y).save_params(f_params=tmp_path / "random.pt")
    other = make_clf(n_ctx=4, ctx_init=None)
    with pytest.raises(ValueError, match=r"does not fit this model: n_ctx: 2 -> 4"):
        other.load_params(f_params=tmp_path / "random.pt")
