"""Rows of issue 25's first-hour and bad-day trials for the labeling app: two windows on one
batch, damaged files, odd requests, Label Studio round trips, EXIF photos."""

import pytest
from conftest import label_batch
from PIL import Image

pytest.importorskip("fastapi", reason="the labeling app needs the 'app' extra: pip install modal-vlm[app]")


def post_label(client, batch, item, kind="class", label=None, **extra):
    return client.post("/api/label", json={"batch_id": batch["id"], "image_id": item["image_id"], "kind": kind,
                                           "label": label, **extra})


# -- bad day 2: two windows on one batch -------------------------------------------------------

@pytest.mark.trial("bad-day 2")
def test_two_windows_on_one_batch_the_later_stale_click_gets_409(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    window_a, window_b = client_for(project, store, worker), client_for(project, store, worker)
    seen_by_a = window_a.get("/api/state").json()["batch"]
    seen_by_b = window_b.get("/api/state").json()["batch"]
    item_a, item_b = seen_by_a["items"][0], seen_by_b["items"][0]
    assert item_a["event_id"] is None
    first = post_label(window_a, seen_by_a, item_a, label="circle", seen_event=0)
    assert first.status_code == 200
    events = len(store.events())
    second = post_label(window_b, seen_by_b, item_b, label="square", seen_event=0)   # B never saw A's answer
    assert second.status_code == 409 and "changed in another window (now: circle)" in second.json()["detail"]
    assert len(store.events()) == events   # nothing recorded
    current = window_b.get("/api/state").json()["batch"]["items"][0]
    assert (current["kind"], current["label"]) == ("class", "circle")   # what window B shows after the 409
    again = post_label(window_b, seen_by_b, current, label="square", seen_event=current["event_id"])
    assert again.status_code == 200 and again.json()["batch"]["items"][0]["label"] == "square"


@pytest.mark.trial("bad-day 2")
def test_review_edits_are_checked_against_what_the_editor_showed(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    label_batch(client, truth)
    image_id = store.labels()[0]["image_id"]
    seen = client.get(f"/api/images/{image_id}/history").json()["events"][-1]["id"]
    assert client.post(f"/api/images/{image_id}/label", json={"kind": "skip", "seen_event": seen}).status_code == 200
    stale = client.post(f"/api/images/{image_id}/label", json={"kind": "ood", "seen_event": seen})
    assert stale.status_code == 409 and "now: skip" in stale.json()["detail"]


@pytest.mark.trial("bad-day 2")
def test_the_label_page_sends_what_it_last_saw_and_shows_conflicts():
    from importlib.resources import files

    script = (files("modal_vlm.labeling") / "static" / "label.js").read_text()
    assert "seen_event" in script and "changed in another window" in script
    review = (files("modal_vlm.labeling") / "static" / "review.js").read_text()
    assert "seen_event" in review


# -- first hour 5: the labeling page's numbers, Label Studio, exports ---------------------------

@pytest.mark.trial("first-hour 5: pool count")
def test_the_page_counts_the_pool_a_batch_was_chosen_from_once(shapes, make_session, client_for):
    # label.js shows "Chosen by <strategy> from N unlabeled images" with
    # N = counts.unlabeled + the batch's decided items: the undecided ones are already unlabeled.
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    state = client.get("/api/state").json()

    def shown(state):
        decided = sum(item["kind"] is not None for item in state["batch"]["items"])
        return state["counts"]["unlabeled"] + decided

    assert shown(state) == len(truth) == 24
    for item in state["batch"]["items"][:3]:
        state = post_label(client, state["batch"], item, label=truth[item["path"]],
                           seen_event=0).json()
        assert shown(state) == 24   # no drift while labeling
    from importlib.resources import files

    script = (files("modal_vlm.labeling") / "static" / "label.js").read_text()
    assert "state.counts.unlabeled + left" not in script and "state.counts.unlabeled + decided" in script


@pytest.mark.trial("first-hour 5: Label Studio import of the open batch")
def test_a_label_studio_import_of_the_open_batch_finishes_it(shapes, make_session, client_for):
    from modal_vlm.labeling.labelstudio import label_studio_tasks

    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    batch = store.batch()
    tasks = label_studio_tasks(batch)
    for task in tasks:
        task["annotations"] = [{"result": [{"value": {"choices": [truth[task["data"]["modal_vlm_path"]]]}}]}]
    summary = client.post("/api/import/label-studio", json=tasks)
    assert summary.status_code == 200 and summary.json()["imported"] == len(tasks)
    assert store.batches()[0]["finished_at"] is not None   # the page no longer asks for them
    assert store.batches()[0]["n_judged"] == len(tasks)
    worker.wait_idle(120)
    assert client.get("/api/state").json()["batch"]["id"] == 2


@pytest.mark.trial("first-hour 5: export messages")
@pytest.mark.trial("first-hour 5: Label Studio tasks export")
@pytest.mark.parametrize("what, extra, rows", [("labels", [], "6 rows"), ("labels", ["--format", "json"], "6 labels"),
                                               ("predictions", [], "24 rows"), ("label-studio", [], "6 tasks"),
                                               ("label-studio-config", [], "4 choices"),
                                               ("model", [], "trained after 1 batches")])
def test_every_export_says_what_it_wrote(shapes, make_session, client_for, tmp_path, capsys, what, extra, rows):
    from modal_vlm import cli

    folder, truth = shapes
    project, store, worker = make_session(folder)
    label_batch(client_for(project, store, worker), truth)
    worker.wait_idle(120)
    out = tmp_path / f"export-{what}"
    assert cli.main(["label", "export", "--project", str(project.root), "--what", what, "--out", str(out),
                     *extra]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"wrote {out} (") and rows in err, err
    if what == "label-studio":
        assert "the open batch 2" in err


# -- bad day 9: a damaged labels.sqlite -----------------------------------------------------------

@pytest.mark.trial("bad-day 9")
@pytest.mark.parametrize("damage", [lambda path: path.write_bytes(b"not a database at all" * 100),
                                    lambda path: path.write_bytes(path.read_bytes()[:1000] + b"\0" * 3000)],
                         ids=["overwritten", "truncated"])
def test_a_damaged_label_store_is_named_with_a_way_out(tmp_path, damage, capsys):
    from modal_vlm.labeling.store import LabelStore

    path = tmp_path / "labels.sqlite"
    store = LabelStore(path)
    store.sync_images({f"{i}.png": None for i in range(50)})
    store.close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"labels.sqlite{suffix}").unlink(missing_ok=True)
    damage(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=rf"{path} is damaged .*nothing was changed.*sqlite3 {path} \.recover"):
        LabelStore(path)
    assert path.read_bytes() == before


# -- bad day 10: requests that used to end in a 500 ----------------------------------------------

@pytest.mark.trial("bad-day 10")
@pytest.mark.parametrize("method, url, body", [
    ("get", "/images/100000000000000000000000", None),
    ("get", "/images/100000000000000000000000?size=64", None),
    ("get", "/api/images/100000000000000000000000/history", None),
    ("post", "/api/images/100000000000000000000000/label", {"kind": "skip"}),
    ("post", "/api/label", {"batch_id": 1, "image_id": 10 ** 23, "kind": "skip"}),
    ("post", "/api/label", {"batch_id": 10 ** 23, "image_id": 1, "kind": "skip"}),
    ("get", "/export/label-studio.json?batch=100000000000000000000000", None),
], ids=["image", "thumbnail", "history", "edit", "label-image", "label-batch", "ls-batch"])
def test_huge_ids_are_4xx(shapes, make_session, client_for, method, url, body):
    folder, _ = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    events = len(store.events())
    response = client.get(url) if method == "get" else client.post(url, json=body)
    assert 400 <= response.status_code < 500 and response.json()["detail"], response.text
    assert len(store.events()) == events


@pytest.mark.trial("bad-day 10")
@pytest.mark.parametrize("url, text", [
    ("/api/label", '{"batch_id": 1, "image_id": NaN, "kind": "skip"}'),
    ("/api/label", '{"batch_id": 1, "image_id": 1, "kind": "skip", "seen_event": Infinity}'),
    ("/api/images/1/label", '{"kind": "skip", "seen_event": NaN}'),
    ("/api/import/label-studio", '[{"data": {"image": "a.png"}, "annotations": [{"result": [{"value": '
                                 '{"choices": ["circle"]}}]}], "score": NaN}]'),
])
def test_nan_in_json_is_refused(shapes, make_session, client_for, url, text):
    folder, _ = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    events = len(store.events())
    response = client.post(url, content=text, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422) and "NaN" in response.text, response.text
    assert len(store.events()) == events


@pytest.mark.trial("bad-day 10")
@pytest.mark.parametrize("task", [
    {"data": {"image": "circle-00.png"}, "annotations": [{"result": [{"value": ["circle"]}]}]},
    {"data": ["circle-00.png"], "annotations": [{"result": [{"value": {"choices": ["circle"]}}]}]},
    {"data": {"image": "circle-00.png"}, "annotations": [{"result": [{"value": {"choices": "circle"}}]}]},
    {"data": {"image": "circle-00.png"}, "annotations": {"result": []}},
    {"data": {"image": "circle-00.png"}, "annotations": [{"result": {"value": {"choices": ["circle"]}}}]},
    {"data": {"image": "circle-00.png"}, "annotations": [{"result": [{"value": {"choices": [["circle"]]}}]}]},
], ids=["value-list", "data-list", "choices-string", "annotations-object", "result-object", "nested-choice"])
def test_malformed_label_studio_exports_are_422(shapes, make_session, client_for, task):
    folder, _ = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    events = len(store.events())
    response = client.post("/api/import/label-studio", json=[task])
    assert response.status_code == 422 and "task 0" in response.json()["detail"], response.text
    assert len(store.events()) == events


@pytest.mark.trial("bad-day 10")
def test_a_decompression_bomb_swapped_in_gives_410_not_500(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    row = next(image for image in store.images("ok"))
    # 1 bit per pixel: a small PNG file of 30000 x 30000 pixels, over Pillow's 2x bomb limit.
    Image.new("1", (30000, 30000)).save(folder / row["path"], format="PNG")
    response = client.get(f"/images/{row['id']}?size=128")
    assert response.status_code == 410 and "decompression bomb" in response.json()["detail"].lower()
    assert store.image(row["id"])["status"] == "unreadable"


# -- also: images embedded by other sites; bad day 4: EXIF orientation -----------------------------

@pytest.mark.trial("also: CORP header")
def test_images_and_pages_say_same_origin_only(shapes, make_session, client_for):
    folder, _ = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    image_id = store.images("ok")[0]["id"]
    for url in (f"/images/{image_id}", f"/images/{image_id}?size=64", "/", "/api/state"):
        assert client.get(url).headers["cross-origin-resource-policy"] == "same-origin", url


@pytest.mark.trial("bad-day 4")
def test_thumbnails_follow_exif_orientation(tmp_path, make_session, client_for):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (64, 32), (200, 30 * i, 0)).save(folder / f"{i}.jpg")
    sideways = Image.new("RGB", (64, 32), (0, 0, 255))
    exif = sideways.getexif()
    exif[0x0112] = 6   # "rotate 90 CW to display": a phone photo held upright
    sideways.save(folder / "phone.jpg", exif=exif)
    project, store, worker = make_session(folder, classes=("red", "blue"))
    client = client_for(project, store, worker)
    image_id = next(row["id"] for row in store.images() if row["path"] == "phone.jpg")
    thumbnail = client.get(f"/images/{image_id}?size=64")
    from io import BytesIO

    assert Image.open(BytesIO(thumbnail.content)).size == (32, 64)   # upright, as browsers show the file


# -- bad day 1 in the app: a damaged cache shard does not stop the worker -----------------------

@pytest.mark.trial("bad-day 1")
def test_label_worker_recovers_from_a_damaged_cache_shard(shapes, make_session, tmp_path):
    import warnings

    from modal_vlm.embeddings import clear_memory_cache
    from modal_vlm.labeling import BackgroundWorker, LabelStore

    folder, _ = shapes
    clear_memory_cache()   # this process has seen these images: the session must encode them into its cache
    project, store, worker = make_session(folder)
    worker.stop(timeout=30)
    shards = sorted(project.cache_dir.glob("*/shard-*.npz"))
    shards[0].write_bytes(shards[0].read_bytes()[:64])   # truncated, as by a crash without fsync
    clear_memory_cache()   # a new server process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second_store = LabelStore(project.database)
        again = BackgroundWorker(project, second_store).start()
        try:
            status = again.wait_idle(120)
        finally:
            again.stop(timeout=30)
            second_store.close()
    assert status["phase"] == "ready", status
    assert any("cannot be read" in str(w.message) and shards[0].name in str(w.message) for w in caught)
    assert shards[0].with_name(shards[0].name + ".damaged").exists()


@pytest.mark.trial("first-hour 5: Label Studio import of the open batch")
def test_review_decisions_on_open_batch_images_show_on_the_label_page(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    item = store.batch()["items"][0]
    assert client.post(f"/api/images/{item['image_id']}/label", json={"kind": "ood"}).status_code == 200
    shown = client.get("/api/state").json()["batch"]["items"][0]
    assert shown["kind"] == "ood"                        # decided, where the page shows it
    assert client.post(f"/api/images/{item['image_id']}/label", json={"kind": "unlabel"}).status_code == 200
    shown = client.get("/api/state").json()["batch"]["items"][0]
    assert shown["kind"] is None and shown["event_id"]   # back to undecided, and the page knows the event
    stale = post_label(client, store.batch(), item, kind="skip", seen_event=0)
    assert stale.status_code == 409
    assert post_label(client, store.batch(), item, kind="skip", seen_event=shown["event_id"]).status_code == 200
