"""The labeling app through its HTTP API (FastAPI's test client), on the tiny test backbone:
the loop, nothing lost, the exports, and the attacks."""
import csv
import io
import json
import os
import pickle
import sqlite3

import numpy as np
import pytest
from conftest import SHAPES, label_batch

pytest.importorskip("fastapi", reason="the labeling app needs the 'app' extra: pip install modal-vlm[app]")


def n_events(store):
    return len(store.events())


def test_two_batches_retrain_and_query_new_images(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    first = client.get("/api/state").json()
    assert first["batch"]["id"] == 1 and len(first["batch"]["items"]) == 6
    assert first["model"] is None and first["worker"]["phase"] == "ready"
    seen = {item["image_id"] for item in first["batch"]["items"]}

    after = label_batch(client, truth)
    assert after["batch"] is None            # finished: the next one is being chosen
    assert worker.wait_idle(120)["phase"] == "ready"
    second = client.get("/api/state").json()
    assert second["batch"]["id"] == 2 and second["batch"]["model_round"] == 1
    assert not seen & {item["image_id"] for item in second["batch"]["items"]}
    assert second["model"]["round"] == 1 and second["model"]["n_labels"] == 6
    finished = second["batches"]
    assert [b["id"] for b in finished] == [1] and finished[0]["n_judged"] == 6
    right = sum(item["guess"] == truth[item["path"]] for item in first["batch"]["items"])
    assert finished[0]["n_right"] == right and finished[0]["accuracy"] == pytest.approx(right / 6)

    label_batch(client, truth)
    worker.wait_idle(120)
    third = client.get("/api/state").json()
    assert third["model"]["round"] == 2 and third["model"]["n_labels"] == 12
    assert sum(third["counts"]["per_class"].values()) == 12
    assert third["counts"]["unlabeled"] == len(truth) - 12
    assert json.loads(project.model_info_file.read_text())["round"] == 2
    with open(project.model_file, "rb") as f:
        model = pickle.load(f)
    assert model.predict(np.array([str(folder / p) for p in list(truth)[:3]])).shape == (3,)


def test_restart_shows_the_same_batch_and_keeps_every_label(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    label_batch(client, truth)
    worker.wait_idle(120)
    batch = client.get("/api/state").json()["batch"]
    for item in batch["items"][:2]:
        client.post("/api/label", json={"batch_id": batch["id"], "image_id": item["image_id"],
                                        "kind": "class", "label": truth[item["path"]]})
    trained_at = project.model_info()["trained_at"]
    worker.stop(timeout=30)
    store.close()

    project, store, worker = make_session(folder)      # the same project directory
    state = client_for(project, store, worker).get("/api/state").json()
    assert state["batch"]["id"] == batch["id"]
    assert [(i["image_id"], i["guess"], i["confidence"]) for i in state["batch"]["items"]] == \
        [(i["image_id"], i["guess"], i["confidence"]) for i in batch["items"]]
    decided = [i["label"] for i in state["batch"]["items"] if i["kind"]]
    assert decided == [truth[i["path"]] for i in batch["items"][:2]]
    assert sum(state["counts"]["per_class"].values()) == 8
    assert state["model"]["round"] == 1 and project.model_info()["trained_at"] == trained_at


def test_a_batch_finished_while_the_server_was_down_is_trained_on_restart(shapes, make_session):
    from modal_vlm.labeling import Decision

    folder, truth = shapes
    project, store, worker = make_session(folder)
    worker.stop(timeout=30)
    batch = store.batch()
    for item in batch["items"]:   # recorded, but nobody woke the worker: as if killed here
        store.record(item["image_id"], Decision("class", truth[item["path"]]), SHAPES, batch_id=batch["id"])
    store.close()
    project, store, worker = make_session(folder)
    assert store.batch()["id"] == batch["id"] + 1
    assert project.model_info()["round"] == 1 and project.model_info()["n_labels"] == 6


def test_skip_and_none_of_these(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    kinds = iter(["skip", "ood", "class", "class", "class", "class"])

    def decide(item, truth):
        kind = next(kinds)
        return {"kind": kind, "label": truth[item["path"]] if kind == "class" else None}

    first = client.get("/api/state").json()["batch"]["items"]
    state = label_batch(client, truth, decide)
    skipped, ood = first[0], first[1]
    assert state["counts"]["skip"] == 1 and state["counts"]["ood"] == 1
    assert sum(state["counts"]["per_class"].values()) == 4
    assert state["batches"][0]["n_judged"] == 5    # the skip is not judged
    worker.wait_idle(120)
    assert project.model_info()["n_labels"] == 4 and project.model_info()["n_ood"] == 1
    rows = list(csv.DictReader(io.StringIO(client.get("/export/labels.csv").text)))
    assert {r["path"]: r["kind"] for r in rows}[ood["path"]] == "ood"
    assert skipped["path"] not in {r["path"] for r in rows}
    review = client.get("/api/review", params={"filter": "skip"}).json()["items"]
    assert [r["image_id"] for r in review] == [skipped["image_id"]]
    # a skipped image is set aside: no later batch shows it, until labeled on the review page
    while (batch := client.get("/api/state").json()["batch"]) is not None:
        assert skipped["image_id"] not in {i["image_id"] for i in batch["items"]}
        label_batch(client, truth)
        worker.wait_idle(120)
    assert client.get("/api/state").json()["worker"]["phase"] == "done"
    edit = client.post(f"/api/images/{skipped['image_id']}/label", json={"kind": "unlabel"})
    assert edit.status_code == 200
    worker.wait_idle(120)
    assert [i["image_id"] for i in client.get("/api/state").json()["batch"]["items"]] == [skipped["image_id"]]


def test_review_edits_are_new_events(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    item = client.get("/api/state").json()["batch"]["items"][0]
    label_batch(client, truth)
    wrong = next(name for name in SHAPES if name != truth[item["path"]])
    answer = client.post(f"/api/images/{item['image_id']}/label", json={"kind": "class", "label": wrong}).json()
    assert [(e["kind"], e["label"], e["source"]) for e in answer["events"]] == \
        [("class", truth[item["path"]], "batch"), ("class", wrong, "review")]
    row = next(r for r in client.get("/api/review", params={"filter": wrong}).json()["items"]
               if r["image_id"] == item["image_id"])
    assert row["n_events"] == 2
    history = client.get("/export/labels.json").json()["events"]
    assert [e["label"] for e in history if e["path"] == item["path"]] == [truth[item["path"]], wrong]
    worker.wait_idle(120)
    with sqlite3.connect(project.database) as db:   # the table itself refuses changes
        for sql in ("UPDATE events SET label = 'x'", "DELETE FROM events"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)


@pytest.mark.parametrize("body, status", [
    ({"image_id": 9999, "kind": "class", "label": "circle"}, 404),          # unknown image
    ({"kind": "class", "label": "hexagon"}, 422),                            # unknown class
    ({"kind": "ood", "label": "circle"}, 422),                               # OOD carries no class
    ({"kind": "class"}, 422),                                                # class without label
    ({"kind": "unlabel"}, 422),                                              # not a batch decision
    ({"kind": "maybe"}, 422),
    ({"kind": "class", "label": 3}, 422),                                    # wrong types
    ({"image_id": "1", "kind": "skip"}, 422),
    ({"batch_id": 1.5, "kind": "skip"}, 422),
    ({"kind": "skip", "extra": 1}, 422),                                     # unknown field
    ({"batch_id": 999, "kind": "skip"}, 409),                                # not the open batch
    ("[1, 2]", 422), ("{not json", 422), ("", 422), ("null", 422),
])
def test_bad_label_requests_change_nothing(shapes, make_session, client_for, body, status):
    folder, _ = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    batch = client.get("/api/state").json()["batch"]
    if isinstance(body, dict):
        body = {"batch_id": batch["id"], "image_id": batch["items"][0]["image_id"], **body}
        response = client.post("/api/label", json=body)
    else:
        response = client.post("/api/label", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], (str, list))
    assert n_events(store) == 0


def test_an_image_outside_the_batch_and_a_finished_batch_are_refused(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    batch = client.get("/api/state").json()["batch"]
    outside = next(i["id"] for i in store.images() if i["id"] not in {x["image_id"] for x in batch["items"]})
    response = client.post("/api/label", json={"batch_id": batch["id"], "image_id": outside, "kind": "skip"})
    assert response.status_code == 409 and "not in batch" in response.json()["detail"]
    label_batch(client, truth)
    before = n_events(store)
    response = client.post("/api/label", json={"batch_id": batch["id"], "image_id": batch["items"][0]["image_id"],
                                               "kind": "skip"})
    assert response.status_code == 409 and "finished" in response.json()["detail"]
    assert n_events(store) == before


def test_oversized_and_non_json_bodies_are_refused(shapes, make_session, client_for):
    folder, _ = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    batch = client.get("/api/state").json()["batch"]
    valid = {"batch_id": batch["id"], "image_id": batch["items"][0]["image_id"], "kind": "skip"}
    huge = json.dumps({**valid, "label": None, "padding": "x" * 100_000})
    assert client.post("/api/label", content=huge, headers={"content-type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: the limit applies to what arrives
        for _ in range(100):
            yield b" " * 1024
        yield json.dumps(valid).encode()

    response = client.post("/api/label", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    response = client.post("/api/label", content=json.dumps(valid), headers={"content-type": "text/plain"})
    assert 400 <= response.status_code < 500
    response = client.post("/api/label", data={"batch_id": str(batch["id"]), "kind": "skip"})  # a form
    assert 400 <= response.status_code < 500
    assert n_events(store) == 0
    huge_import = "[" + ",".join(["{}"] * 12_000_000) + "]"      # over the import's 32 MiB
    assert client.post("/api/import/label-studio", content=huge_import,
                       headers={"content-type": "application/json"}).status_code == 413


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(b"top secret, not an image of the folder")
    return path


TRAVERSALS = [
    "/images/../secret.png", "/images/..%2Fsecret.png", "/images/%2e%2e%2fsecret.png",
    "/images/%252e%252e%252fsecret.png", "/images/..%252Fsecret.png", "/images/%2F{secret}",
    "/images/{secret}", "/images//{secret}", "/images/1/../../secret.png", "/images/1%2F..%2F..%2Fsecret.png",
    "/static/..%2Fserver.py", "/static/%2e%2e/server.py", "/static/%252e%252e%252fserver.py",
    "/static/../../labeling/server.py", "/static/..\\server.py", "/static/%5c..%5cserver.py",
    "/static/{secret}", "/static/%2F{secret}", "/static/.", "/static/", "/..%2F..%2Fsecret.png",
    "/%2e%2e/%2e%2e/secret.png", "/images/-1", "/images/0", "/images/1.5", "/images/1?size=100000",
    "/images/1?size=abc", "/images/1?size=-5", "/export/..%2Fsecret.png", "/review/../../secret.png",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_path_traversal_is_refused(shapes, secret, make_session, client_for, url):
    folder, _ = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    response = client.get(url.format(secret=str(secret).lstrip("/")))
    assert response.status_code in (400, 404, 405, 410, 422), (url, response.status_code)
    assert b"top secret" not in response.content and b"def create_app" not in response.content


def test_symlinks_leading_out_of_the_folder_are_never_served(shapes, secret, make_session, client_for):
    folder, truth = shapes
    (folder / "link.png").symlink_to(secret)
    (folder / "linked-dir").symlink_to(secret.parent, target_is_directory=True)
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    paths = {image["path"] for image in store.images()}
    assert paths == set(truth)   # neither the link nor anything behind the linked folder
    # a scanned image replaced by a link after the scan
    victim = store.images()[0]
    os.remove(folder / victim["path"])
    (folder / victim["path"]).symlink_to(secret)
    for url in (f"/images/{victim['id']}", f"/images/{victim['id']}?size=64"):
        response = client.get(url)
        assert response.status_code == 404 and b"top secret" not in response.content
    ok = store.images()[1]
    assert client.get(f"/images/{ok['id']}").content == (folder / ok["path"]).read_bytes()


def test_host_header_must_be_local(shapes, make_session, client_for):
    folder, _ = shapes
    client = client_for(*make_session(folder))
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", "192.168.1.9"):
        assert client.get("/api/state", headers={"host": host}).status_code == 421
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765"):
        assert client.get("/api/state", headers={"host": host}).status_code == 200


def test_token_is_required_on_every_request(shapes, make_session, client_for):
    folder, _ = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker, token="s3cret-token", loopback_only=False)
    image_id = store.images()[0]["id"]
    urls = ["/", "/review", "/static/style.css", "/api/state", f"/images/{image_id}",
            f"/images/{image_id}?size=64", "/export/labels.csv", "/export/model.pkl"]
    for url in urls:
        for params in ({}, {"token": "wrong"}, {"token": ""}, {"token": "s3cret-token "}):
            response = client.get(url, params=params)
            assert response.status_code == 403, (url, params)
    assert client.post("/api/retry", json={}).status_code == 403
    for url in urls[:-1]:
        assert client.get(url, params={"token": "s3cret-token"}).status_code == 200, url
    assert client.get("/api/state", headers={"x-token": "s3cret-token"}).status_code == 200
    page = client.get("/", params={"token": "s3cret-token"}).text
    assert 'href="static/style.css?token=s3cret-token"' in page and "__TOKEN_QUERY__" not in page


def test_security_headers(shapes, make_session, client_for):
    folder, _ = shapes
    client = client_for(*make_session(folder))
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"


def test_unreadable_images_are_shown_and_never_queried(shapes, make_session, client_for):
    folder, truth = shapes
    (folder / "garbage.png").write_bytes(b"this is no image")
    good = (folder / "circle-00.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])   # header fine, pixels cut
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    unreadable = client.get("/api/review", params={"filter": "unreadable"}).json()["items"]
    assert {row["path"] for row in unreadable} == {"garbage.png", "truncated.png"}
    assert all("truncated.png" in row["reason"] or "cannot read" in row["reason"] for row in unreadable)
    bad_ids = {row["image_id"] for row in unreadable}
    for image_id in bad_ids:
        assert client.get(f"/images/{image_id}").status_code == 410
    while (state := client.get("/api/state").json())["batch"] is not None:
        assert not bad_ids & {i["image_id"] for i in state["batch"]["items"]}
        label_batch(client, truth)
        worker.wait_idle(120)
    assert state["worker"]["phase"] == "done" and state["counts"]["unreadable"] == 2
    rows = list(csv.DictReader(io.StringIO(client.get("/export/predictions.csv").text)))
    statuses = {row["path"]: (row["status"], row["prediction"]) for row in rows}
    assert statuses["garbage.png"] == ("unreadable", "") and statuses["truncated.png"] == ("unreadable", "")


def test_a_file_that_disappears_is_reported_and_labeling_goes_on(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    unlabeled = [i for i in store.images() if i["id"] not in {x["image_id"] for x in store.batch()["items"]}]
    os.remove(folder / unlabeled[0]["path"])          # gone while the server runs
    (folder / unlabeled[1]["path"]).write_bytes(b"overwritten with garbage")
    label_batch(client, truth)
    assert worker.wait_idle(120)["phase"] == "ready"  # rescanned, and the loop went on
    state = client.get("/api/state").json()
    assert state["counts"]["missing"] == 1 and state["counts"]["unreadable"] == 1
    assert sum(state["counts"]["per_class"].values()) == 6 and state["batch"]["id"] == 2


def test_exports(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    assert client.get("/export/model.pkl").status_code == 404    # nothing trained yet
    zero_shot = list(csv.DictReader(io.StringIO(client.get("/export/predictions.csv").text)))
    assert len(zero_shot) == len(truth) and zero_shot[0]["model_round"] == ""
    label_batch(client, truth)
    worker.wait_idle(120)
    labels = list(csv.DictReader(io.StringIO(client.get("/export/labels.csv").text)))
    assert len(labels) == 6 and all(row["label"] == truth[row["path"]] for row in labels)
    data = client.get("/export/labels.json").json()
    assert data["classes"] == list(SHAPES) and len(data["events"]) == 6
    predictions = list(csv.DictReader(io.StringIO(client.get("/export/predictions.csv").text)))
    assert {row["path"] for row in predictions} == set(truth)
    for row in predictions:
        p = np.array([float(row[f"p_{name}"]) for name in SHAPES])
        assert p.sum() == pytest.approx(1, abs=1e-4) and row["prediction"] == SHAPES[p.argmax()]
        assert float(row["confidence"]) == pytest.approx(p.max(), abs=1e-6) and row["model_round"] == "1"
    model = pickle.loads(client.get("/export/model.pkl").content)
    assert model.class_names == list(SHAPES) and model.get_params()["callbacks"] is None
    X = np.array([str(folder / row["path"]) for row in predictions])
    assert np.allclose(model.predict_proba(X),
                       [[float(row[f"p_{n}"]) for n in SHAPES] for row in predictions], atol=1e-5)
    config = client.get("/export/label-studio-config.xml").text
    assert config.count("<Choice ") == 4
    tasks = client.get("/export/label-studio.json").json()
    batch = client.get("/api/state").json()["batch"]
    assert [t["data"]["modal_vlm_path"] for t in tasks] == [i["path"] for i in batch["items"]]
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == [batch["items"][0]["guess"]]
    assert client.get("/export/label-studio.json", params={"batch": 1}).status_code == 200
    assert client.get("/export/label-studio.json", params={"batch": 99}).status_code == 404


def label_studio_export(tasks, choices):
    """What Label Studio's JSON export looks like after annotating ``tasks``."""
    exported = []
    for number, (task, choice) in enumerate(zip(tasks, choices)):
        annotations = [] if choice is None else [
            {"id": 10 + number, "was_cancelled": False, "result": [
                {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]}]
        exported.append({"id": 100 + number, "data": task["data"], "annotations": annotations,
                         "predictions": task["predictions"]})
    return exported


def test_label_studio_round_trip(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    tasks = client.get("/export/label-studio.json").json()
    paths = [t["data"]["modal_vlm_path"] for t in tasks]
    choices = [truth[paths[0]], "none of these classes", None, truth[paths[3]], truth[paths[4]], truth[paths[5]]]
    exported = label_studio_export(tasks, choices)
    exported[3]["annotations"].insert(0, {"was_cancelled": True, "result": [{"value": {"choices": ["circle"]}}]})
    del exported[4]["data"]["modal_vlm_path"]            # matched by its URL instead
    exported[5]["data"] = {"image": f"/data/local-files/?d=images/{paths[5]}"}   # a longer root
    summary = client.post("/api/import/label-studio", json=exported).json()
    assert summary == {"imported": 5, "unchanged": 0, "unannotated": 1, "unknown": 0}
    labels = {row["path"]: (row["kind"], row["label"], row["source"]) for row in store.labels()}
    assert labels[paths[0]] == ("class", truth[paths[0]], "import")
    assert labels[paths[1]] == ("ood", None, "import")
    assert paths[2] not in labels and labels[paths[3]][1] == truth[paths[3]]
    again = client.post("/api/import/label-studio", json=exported).json()
    assert again["imported"] == 0 and again["unchanged"] == 5
    before = n_events(store)
    bad = label_studio_export(tasks, ["hexagon"] * 6)
    response = client.post("/api/import/label-studio", json=bad)
    assert response.status_code == 422 and "hexagon" in response.json()["detail"]
    other = next(name for name in SHAPES if name != truth[paths[0]])   # a change of the first label
    stranger = label_studio_export([{"data": {"image": "/data/local-files/?d=elsewhere/x.png"}, "predictions": []}],
                                   ["circle"]) + label_studio_export(tasks[:1], [other])
    response = client.post("/api/import/label-studio", json=stranger)
    assert response.status_code == 422 and "elsewhere/x.png" in response.json()["detail"]
    assert n_events(store) == before
    response = client.post("/api/import/label-studio", json=stranger, params={"skip_unknown": "true"})
    assert response.json() == {"imported": 1, "unchanged": 0, "unannotated": 0, "unknown": 1}
    for body in ({"tasks": []}, [1, 2], "text"):
        assert client.post("/api/import/label-studio", json=body).status_code == 422


def test_ueo_mode_keeps_out_of_distribution_labels_for_the_unlabeled_loss(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder, fit_mode="ueo")
    client = client_for(project, store, worker)
    kinds = iter(["ood", "ood", "class", "class", "class", "class"])
    label_batch(client, truth, lambda item, truth: (lambda k: {"kind": k, "label": truth[item["path"]]
                                                              if k == "class" else None})(next(kinds)))
    assert worker.wait_idle(120)["phase"] == "ready"
    info = project.model_info()
    assert info["n_labels"] == 4 and info["n_ood"] == 2
    with open(project.model_file, "rb") as f:
        assert pickle.load(f).fit_mode == "ueo"
