"""A big folder is labelable before it is encoded: the first batch comes from the first images
of the folder's random order, the rest joins the pool in the background; the status says how
far the encoding is and how long the next batch will take."""
import numpy as np
import pytest
from conftest import SHAPES

from modal_vlm.labeling import Decision
from modal_vlm.labeling import session as session_module
from modal_vlm.labeling.worker import BackgroundWorker


@pytest.fixture
def recorded(monkeypatch):
    """Every status the worker sets, as :meth:`BackgroundWorker.status` returned it then."""
    reports = []
    original = BackgroundWorker._set

    def record(self, *args, **kwargs):
        original(self, *args, **kwargs)
        reports.append(self.status())

    monkeypatch.setattr(BackgroundWorker, "_set", record)
    return reports


def first_order(project, store):
    """Image ids in the order the worker encodes them (the project's seeded permutation)."""
    readable = store.images("ok")
    order = np.random.default_rng(project.settings.seed).permutation(len(readable))
    return [readable[i]["id"] for i in order]


def label(store, truth, batch):
    for item in batch["items"]:
        store.record(item["image_id"], Decision("class", truth[item["path"]]), SHAPES, batch_id=batch["id"])


def test_first_batch_comes_from_the_first_images_and_the_rest_joins_later(shapes, make_session, recorded,
                                                                          monkeypatch):
    monkeypatch.setattr(session_module, "FIRST_POOL", 9)
    monkeypatch.setattr(session_module, "ENCODE_CHUNK", 3)
    folder, truth = shapes
    project, store, worker = make_session(folder, batch_size=4)
    querying = [r for r in recorded if r["phase"] == "querying"]
    assert querying[0]["encoded"] == 9 and querying[0]["readable"] == 24   # the rest not encoded yet
    encoding = [r for r in recorded if r["phase"] == "encoding"]
    assert (encoding[0]["done"], encoding[0]["total"]) == (0, 9) and encoding[-1]["done"] == 9
    assert "first 9 of 24" in encoding[0]["message"]
    first = set(first_order(project, store)[:9])
    batch = store.batch()
    assert {item["image_id"] for item in batch["items"]} <= first
    status = worker.wait_idle(120)
    assert status["encoded"] == status["readable"] == 24 and status["phase"] == "ready"
    # later batches are chosen among every image
    label(store, truth, batch)
    worker.wake()
    worker.wait_idle(120)
    assert "of 20 images" in [r for r in recorded if r["phase"] == "querying"][-1]["message"]


def test_labels_never_run_out_before_the_folder_does(shapes, make_session, monkeypatch):
    monkeypatch.setattr(session_module, "FIRST_POOL", 4)
    monkeypatch.setattr(session_module, "ENCODE_CHUNK", 2)
    monkeypatch.setattr(BackgroundWorker, "_encode_rest", lambda self: None)   # no background encoding
    folder, truth = shapes
    project, store, worker = make_session(folder, batch_size=4)
    assert worker.status()["encoded"] == 4
    label(store, truth, store.batch())
    worker.wake()
    status = worker.wait_idle(120)
    assert status["phase"] == "ready" and status["encoded"] > 4    # encoded more for the next batch
    assert len(store.batch()["items"]) == 4


def test_a_slow_backbone_serves_the_first_batch_after_the_time_limit(shapes, make_session, recorded,
                                                                      monkeypatch):
    monkeypatch.setattr(session_module, "FIRST_POOL_SECONDS", 0.0)
    monkeypatch.setattr(session_module, "ENCODE_CHUNK", 2)
    folder, _ = shapes
    make_session(folder, batch_size=4)
    querying = [r for r in recorded if r["phase"] == "querying"]
    assert querying[0]["encoded"] == 4    # one batch's worth, then the time limit


def test_an_image_that_fails_to_decode_in_the_background_leaves_the_pool(shapes, make_session, monkeypatch):
    monkeypatch.setattr(session_module, "FIRST_POOL", 6)
    folder, truth = shapes
    victim = sorted(truth)[0]
    data = (folder / victim).read_bytes()
    (folder / victim).write_bytes(data[:len(data) // 2])   # a valid header (the scan passes it), truncated data
    project, store, worker = make_session(folder, batch_size=4)
    status = worker.status()
    assert status["encoded"] == status["readable"] == 23
    assert [row["path"] for row in store.images() if row["status"] != "ok"] == [victim]


def test_time_left_is_estimated_from_the_measured_speeds(shapes, make_session, recorded):
    folder, truth = shapes
    project, store, worker = make_session(folder, batch_size=4, train_steps=4)
    encoding = [r for r in recorded if r["phase"] == "encoding"]
    assert encoding[0]["seconds_left"] is None                  # nothing measured yet
    assert encoding[-1]["seconds_left"] is not None and encoding[-1]["seconds_left"] >= 0
    for _ in range(2):
        label(store, truth, store.batch())
        worker.wake()
        worker.wait_idle(120)
    training = [r for r in recorded if r["phase"] == "training"]
    starts = [r for r in training if r["done"] == 0]
    assert starts[0]["seconds_left"] is None or starts[0]["seconds_left"] >= 0
    assert starts[-1]["seconds_left"] is not None and starts[-1]["seconds_left"] >= 0   # the last fit's pace
    assert all(r["seconds_left"] is not None for r in training if r["done"])
    assert worker.status()["seconds_left"] is None                # ready: nothing to wait for
