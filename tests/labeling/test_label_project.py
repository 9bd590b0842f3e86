"""The labeling app's parts without the web: the project directory, the label store, the
folder scan and the worker's progress."""
import json
import os

import pytest
from conftest import SHAPES, draw_shapes

from modal_vlm.labeling import DEFAULT_MODEL, DEFAULT_STRATEGY, Decision, LabelStore, Project, open_project
from modal_vlm.labeling.scan import resolve_inside, scan_images
from modal_vlm.labeling.store import SCHEMA_VERSION, LabelConflict, UnknownImage
from modal_vlm.labeling.session import epochs_for


def test_defaults_are_the_offline_model_and_cec():
    assert DEFAULT_MODEL == "linear-conse-efficientnet-lite0-minilm" and DEFAULT_STRATEGY == "cec"


def test_a_project_saved_before_the_learner_setting_stays_prompt_tuned(shapes, tmp_path):
    folder, _ = shapes
    project, _ = open_project(tmp_path / "p", folder, SHAPES, model="tiny-vit")
    saved = json.loads(project.settings_file.read_text())
    assert saved["learner"] == "linear"                    # today's default
    del saved["learner"]                                   # as written before the setting existed
    project.settings_file.write_text(json.dumps(saved))
    resumed, _ = open_project(tmp_path / "p")
    assert resumed.settings.learner == "prompt"


def test_new_project_and_resume(shapes, tmp_path):
    folder, _ = shapes
    project, notes = open_project(tmp_path / "p", folder, SHAPES, model="tiny-vit")
    assert notes[0].startswith("new project")
    saved = json.loads(project.settings_file.read_text())
    assert saved["classes"] == list(SHAPES) and saved["images_dir"] == str(folder.resolve())
    assert project.settings.images_per_batch == 8          # 3 classes: at least 8
    resumed, notes = open_project(tmp_path / "p")          # no folder, no classes: resume
    assert resumed.settings == project.settings and notes == []
    resumed, notes = open_project(tmp_path / "p", folder, SHAPES, strategy="entropy", batch_size=4)
    assert resumed.settings.strategy == "entropy" and resumed.settings.images_per_batch == 4
    assert sorted(note.split(":")[0] for note in notes) == ["batch_size", "strategy"]
    assert Project.load(tmp_path / "p").settings.strategy == "entropy"


@pytest.mark.parametrize("arguments, message", [
    ({"classes": ["cat"]}, "at least 2 names"),
    ({"classes": ["cat", "cat"]}, r"duplicates: \['cat'\]"),
    ({"classes": ["cat", " dog"]}, "without surrounding spaces"),
    ({"strategy": "magic"}, "Unknown strategy 'magic'"),
    ({"model": "no-such-model"}, "unknown model 'no-such-model'"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"train_steps": 1.5}, "train_steps must be an integer"),
    ({"fit_mode": "magic"}, "fit_mode must be one of"),
])
def test_invalid_settings_are_refused_and_nothing_is_written(shapes, tmp_path, arguments, message):
    folder, _ = shapes
    arguments = {"classes": SHAPES, "model": "tiny-vit", **arguments}
    with pytest.raises(ValueError, match=message):
        open_project(tmp_path / "p", folder, **arguments)
    assert not (tmp_path / "p").exists()


def test_resume_errors_name_the_problem(shapes, tmp_path):
    folder, _ = shapes
    project, _ = open_project(tmp_path / "p", folder, SHAPES, model="tiny-vit")
    with pytest.raises(ValueError, match="holds no project yet"):
        open_project(tmp_path / "q")
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ValueError, match="labels .*images, not .*other"):
        open_project(tmp_path / "p", other)
    with pytest.raises(ValueError, match="seed is 0; it cannot change"):
        open_project(tmp_path / "p", seed=3)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and holds no labeling project"):
        open_project(tmp_path / "busy", folder, SHAPES)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_project(tmp_path / "r", tmp_path / "missing", SHAPES)
    project.settings_file.write_text("{broken")
    with pytest.raises(ValueError, match="cannot read"):
        open_project(tmp_path / "p")


def test_classes_may_grow_but_not_lose_labels(shapes, tmp_path):
    folder, _ = shapes
    project, _ = open_project(tmp_path / "p", folder, SHAPES, model="tiny-vit")
    store = LabelStore(project.database)
    store.sync_images({"a.png": None})
    store.record(1, Decision("class", "square"), SHAPES, source="review")
    store.close()
    grown, notes = open_project(tmp_path / "p", classes=[*SHAPES, "star"])
    assert grown.settings.classes == (*SHAPES, "star") and notes[0].startswith("classes")
    open_project(tmp_path / "p", classes=["square", "star"])    # circle, triangle: no labels
    with pytest.raises(ValueError, match=r"classes \['square'\] have labels"):
        open_project(tmp_path / "p", classes=["circle", "star"])


def test_store_is_append_only_and_one_transaction_per_label(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    assert store.sync_images({"a.png": None, "b.png": None, "c.png": "broken"}) == \
        {"added": 3, "missing": 0, "unreadable": 1}
    batch = store.create_batch([(1, "cat", 0.9), (2, "dog", 0.6)], strategy="cec", model_round=0)
    with pytest.raises(LabelConflict, match="still open"):
        store.create_batch([(3, "cat", 0.5)], strategy="cec", model_round=0)
    assert store.record(1, Decision("class", "cat"), ["cat", "dog"], batch_id=batch) is False
    assert store.record(1, Decision("class", "dog"), ["cat", "dog"], batch_id=batch) is False  # changed mind
    with pytest.raises(LabelConflict, match="not in batch"):
        store.record(3, Decision("skip"), ["cat", "dog"], batch_id=batch)
    with pytest.raises(UnknownImage):
        store.record(7, Decision("skip"), ["cat", "dog"])
    for bad in (Decision("class", "cow"), Decision("ood", "cat"), Decision("maybe")):
        with pytest.raises(ValueError):
            store.record(2, bad, ["cat", "dog"], batch_id=batch)
    assert store.record(2, Decision("class", "dog"), ["cat", "dog"], batch_id=batch) is True
    summary = store.batches()[0]
    assert (summary["n_judged"], summary["n_right"]) == (2, 1)     # the latest decision counts
    assert [e["label"] for e in store.history(1)] == ["cat", "dog"]
    with pytest.raises(ValueError):
        store.record_many([(2, Decision("class", "cat")), (3, Decision("class", "cow"))], ["cat", "dog"])
    with pytest.raises(UnknownImage):
        store.record_many([(2, Decision("class", "cat")), (9, Decision("ood"))], ["cat", "dog"])
    assert len(store.events()) == 3                                # all or nothing
    counts = store.counts(["cat", "dog"])
    assert counts["per_class"] == {"cat": 0, "dog": 2} and counts["unreadable"] == 1
    assert counts["unlabeled"] == 0 and counts["images"] == 3
    assert store.sync_images({"a.png": None}) == {"added": 0, "missing": 2, "unreadable": 0}
    assert store.labels()[1]["status"] == "missing"                # the label stays
    store.close()


def test_a_store_of_schema_1_is_migrated_and_keeps_its_labels(tmp_path):
    import sqlite3

    path = tmp_path / "labels.sqlite"
    store = LabelStore(path)
    store.sync_images({"a.png": None, "b.png": None})
    batch = store.create_batch([(1, "cat", 0.9), (2, "dog", 0.6)], strategy="cec", model_round=0,
                               scores=[{"audit": True, "model_labels": 0, "proba": [0.9, 0.1],
                                        "temperature": None}] * 2)
    store.record(1, Decision("class", "cat"), ["cat", "dog"], batch_id=batch)
    store.close()
    with sqlite3.connect(path) as db:   # as a store of schema 1 was written: no margin scale
        db.execute("ALTER TABLE batch_scores DROP COLUMN scale")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    store = LabelStore(path)
    assert store._scalar("SELECT value FROM meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
    assert [row["scale"] for row in store.batch_scores()] == [None, None]   # read as scale 1
    assert [e["label"] for e in store.events()] == ["cat"]
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(ValueError, match=f"has label-store schema {SCHEMA_VERSION + 1}; this modal-vlm reads "
                                         f"schemas 1 to {SCHEMA_VERSION}"):
        LabelStore(path)


def test_wal_and_durability_settings(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    assert store._scalar("PRAGMA journal_mode") == "wal"
    assert store._scalar("PRAGMA synchronous") == 2               # FULL
    store.close()


def test_scan_finds_images_and_refuses_the_rest(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    truth = draw_shapes(root, per_class=2, layout="folders")
    (root / "notes.txt").write_text("not an image suffix")
    (root / ".hidden.png").write_bytes((root / "circle" / "00.png").read_bytes())
    (root / ".thumbnails").mkdir()
    (root / ".thumbnails" / "t.png").write_bytes(b"x")
    (root / "fake.jpg").write_bytes(b"text, not a jpeg")
    outside = tmp_path / "outside.png"
    outside.write_bytes((root / "circle" / "00.png").read_bytes())
    (root / "out.png").symlink_to(outside)
    (root / "inside.png").symlink_to(root / "circle" / "00.png")
    (root / "outdir").symlink_to(tmp_path, target_is_directory=True)
    (root / "project").mkdir()
    (root / "project" / "p.png").write_bytes(b"x")
    scan = scan_images(root, exclude=[root / "project"])
    assert set(scan.found) == set(truth) | {"fake.jpg", "inside.png"}
    assert scan.found["fake.jpg"].startswith("cannot read image")
    assert all(scan.found[path] is None for path in truth) and scan.outside == ["out.png"]
    assert resolve_inside(root, "out.png") is None and resolve_inside(root, "circle/../../outside.png") is None
    assert resolve_inside(root, str(outside)) is None and resolve_inside(root, "circle") is None
    with pytest.raises(FileNotFoundError):
        scan_images(tmp_path / "nope")


def test_epochs_bound_the_training_steps():
    # The classifier's schedule (3 epochs up to one label per class, then 50, then 80)
    # of one step each up to 128 labels, capped at about 100 steps beyond.
    assert [epochs_for(n, 10, 100, 128) for n in (1, 10, 40, 128, 129, 1280, 50_000)] == [3, 3, 50, 80, 50, 10, 1]


def test_worker_reports_encoding_and_training_progress(shapes, make_session, monkeypatch):
    from modal_vlm.labeling.worker import BackgroundWorker

    reports = []
    original = BackgroundWorker._set

    def record(self, phase, message, done=0, total=0, error=None):
        reports.append((phase, done, total))
        original(self, phase, message, done, total, error)

    monkeypatch.setattr(BackgroundWorker, "_set", record)
    folder, truth = shapes
    project, store, worker = make_session(folder, train_steps=3, batch_size=4)
    encoding = [r for r in reports if r[0] == "encoding"]
    assert encoding[0] == ("encoding", 0, 24) and encoding[-1] == ("encoding", 24, 24)
    batch = store.batch()
    for item in batch["items"]:
        store.record(item["image_id"], Decision("class", truth[item["path"]]), SHAPES, batch_id=batch["id"])
    worker.wake()
    worker.wait_idle(120)
    training = [r for r in reports if r[0] == "training"]
    assert training[0] == ("training", 0, 3) and training[-1] == ("training", 3, 3)
    phases = [r[0] for r in reports]
    after = phases[phases.index("training"):]
    assert [p for i, p in enumerate(after) if i == 0 or p != after[i - 1]] == \
        ["training", "scoring", "querying", "saving", "ready"]


def test_model_from_another_setting_is_retrained(shapes, make_session, tmp_path):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    batch = store.batch()
    for item in batch["items"]:
        store.record(item["image_id"], Decision("class", truth[item["path"]]), SHAPES, batch_id=batch["id"])
    worker.wake()
    worker.wait_idle(120)
    trained_at = project.model_info()["trained_at"]
    worker.stop(timeout=30)
    store.close()
    project, store, worker = make_session(folder, train_steps=7)      # the step budget changed
    assert project.model_info()["trained_at"] > trained_at and project.model_info()["epochs"] == 7
    assert os.path.getsize(project.model_file) > 0


def test_an_unloadable_saved_model_is_retrained(shapes, make_session):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    batch = store.batch()
    for item in batch["items"]:
        store.record(item["image_id"], Decision("class", truth[item["path"]]), SHAPES, batch_id=batch["id"])
    worker.wake()
    worker.wait_idle(120)
    worker.stop(timeout=30)
    store.close()
    project.model_file.write_bytes(b"not a pickle")
    project, store, worker = make_session(folder)
    assert worker.status()["phase"] == "ready" and worker.session.model_info["round"] == 1
    assert project.model_file.read_bytes()[:1] == b"\x80"        # saved again, a pickle
