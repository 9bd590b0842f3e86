"""The Label Studio ML backend through its HTTP API, against a fake Label Studio (httpx's mock
transport): the protocol, the loop, nothing lost, one core with the app, and the attacks.
A real Label Studio drives it in test_labelstudio_live.py."""
import base64
import json
import time
import urllib.parse

import httpx
import numpy as np
import pytest
from conftest import SHAPES, label_batch
from PIL import Image

pytest.importorskip("fastapi", reason="the ML backend needs the 'app' extra: pip install modal-vlm[app]")

from modal_vlm.labeling.labelstudio import label_studio_config  # noqa: E402

LS_URL = "http://ls.test:8080"
CONFIG = label_studio_config(SHAPES)
LS_PROJECT = 7


def url_of(path):
    return "/data/local-files/?d=" + urllib.parse.quote(f"images/{path}")


class FakeLabelStudio:
    """The endpoints the backend calls, in memory; every request is kept in ``calls``."""

    def __init__(self, tasks, token="legacy-token"):
        self.tasks = {task["id"]: task for task in tasks}
        self.token = token
        self.predictions = []          # (task, model_version, score, result)
        self.model_version = ""
        self.files = {}
        self.calls = []
        self.failures = 0             # PATCH requests to refuse (Label Studio down)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path, request.url.query.decode()))
        if request.headers.get("authorization") != f"Token {self.token}":
            return httpx.Response(401, json={"detail": "Authentication credentials were not provided."})
        path = request.url.path
        if path == "/api/tasks/":
            page, size = int(request.url.params["page"]), int(request.url.params["page_size"])
            ordered = [self.tasks[i] for i in sorted(self.tasks)]
            return httpx.Response(200, json={"tasks": ordered[(page - 1) * size: page * size],
                                             "total": len(ordered)})
        if path == f"/api/projects/{LS_PROJECT}/import/predictions":
            body = json.loads(request.content)
            unknown = [p["task"] for p in body if p["task"] not in self.tasks]
            if unknown:   # as Label Studio answers
                return httpx.Response(400, json={"detail": f"task ID {unknown[0]} not found in project"})
            self.predictions += [(p["task"], p["model_version"], p["score"], p["result"]) for p in body]
            return httpx.Response(201, json={"created": len(body)})
        if path == f"/api/projects/{LS_PROJECT}" and request.method == "PATCH" and self.failures:
            self.failures -= 1
            return httpx.Response(503, json={"detail": "unavailable"})
        if path == f"/api/projects/{LS_PROJECT}" and request.method == "PATCH":
            self.model_version = json.loads(request.content)["model_version"]
            return httpx.Response(200, json={"id": LS_PROJECT, "model_version": self.model_version})
        if path == f"/api/projects/{LS_PROJECT}/model-versions/" and request.method == "DELETE":
            version = json.loads(request.content)["model_version"]
            before = len(self.predictions)
            self.predictions = [p for p in self.predictions if p[1] != version]
            return httpx.Response(200, json={"deleted_predictions": before - len(self.predictions)})
        if path.startswith("/data/"):
            key = path + (f"?{request.url.query.decode()}" if request.url.query else "")
            if key in self.files:
                return httpx.Response(200, content=self.files[key])
            return httpx.Response(404, json={"detail": "not found"})
        return httpx.Response(404, json={"detail": f"no route {path}"})

    def listings(self):
        """How many times the task list was read from its first page."""
        return sum(1 for method, path, query in self.calls if path == "/api/tasks/" and "page=1&" in query + "&")

    def current(self):
        """Task id -> (score, predicted class, confidence) of the project's model version."""
        return {task: (score, result[0]["value"]["choices"][0], result[0]["score"])
                for task, version, score, result in self.predictions if version == self.model_version}


def tasks_for(truth):
    return [{"id": 100 + number, "data": {"image": url_of(path)}} for number, path in enumerate(sorted(truth))]


def webhook(action, annotations, tasks, config=CONFIG):
    many = action == "ANNOTATIONS_CREATED"
    return {"action": action, "annotation": annotations if many else annotations[0],
            "task": tasks if many else tasks[0],
            "project": {"id": LS_PROJECT, "label_config": config}}


def annotation(annotation_id, task, choice=None, cancelled=False):
    result = [] if choice is None else [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [choice]}}]
    return {"id": annotation_id, "task": task["id"], "result": result, "was_cancelled": cancelled}


@pytest.fixture
def make_backend(tmp_path):
    """Factory: a started backend on ``tiny-vit`` with its fake Label Studio and test client."""
    from fastapi.testclient import TestClient

    from modal_vlm.labeling import LabelStore, open_project
    from modal_vlm.labeling.labelstudio_backend import (BackendState, LabelStudioWorker, TaskImages,
                                                        create_backend_app)
    from modal_vlm.labeling.labelstudio_client import LabelStudioClient

    made = []

    class Backend:
        pass

    def make(images, truth, project_dir=None, connect=True, debounce=0.2, basic_auth=None, cleanup_after=60.0,
             **settings):
        settings = {"model": "tiny-vit", "train_steps": 5, "batch_size": 6, **settings}
        b = Backend()
        b.project, _ = open_project(project_dir or tmp_path / "ls-project", images, SHAPES, **settings)
        b.ls = FakeLabelStudio(tasks_for(truth))
        b.tasks = {task["id"]: task for task in tasks_for(truth)}
        b.by_path = {urllib.parse.unquote(t["data"]["image"]).split("images/", 1)[1]: t for t in b.tasks.values()}
        client = LabelStudioClient(LS_URL, "legacy-token", transport=httpx.MockTransport(b.ls.handle))
        b.store = LabelStore(b.project.database)
        b.state = BackendState(b.project.root / "label-studio.sqlite")
        images_of = TaskImages(b.project, b.store, client, document_root=images.parent)
        b.worker = LabelStudioWorker(b.project, b.store, b.state, images_of, client, debounce,
                                     cleanup_after=cleanup_after).start()
        b.client = TestClient(create_backend_app(b.project, b.store, b.worker, b.state, basic_auth=basic_auth),
                              base_url="http://127.0.0.1")
        made.append(b)
        assert b.worker.wait_idle(120)["phase"] == "ready", b.worker.status()
        if connect:
            response = b.client.post("/setup", json={"project": f"{LS_PROJECT}.1700000000", "schema": CONFIG})
            assert response.status_code == 200, response.text
            idle(b)
        return b

    yield make
    for b in made:
        b.worker.stop(timeout=30)
        b.state.close()
        b.store.close()


def idle(backend, timeout=120):
    """Wait for the debounced retraining (if any) and its push to finish."""
    status = backend.worker.wait_idle(timeout)
    assert status["phase"] == "ready", status
    return status


def test_health_setup_and_the_pushed_priorities(shapes, make_backend):
    folder, truth = shapes
    b = make_backend(folder, truth)
    health = b.client.get("/health").json()
    assert health["status"] == "UP" and health["model_class"] == "modal-vlm"
    assert health["label_studio_project"] == LS_PROJECT and health["model_version"] == "modal-vlm-v1"
    assert b.client.get("/").json()["status"] == "UP"
    # one prediction per task, the project's model version set to it
    current = b.ls.current()
    assert b.ls.model_version == "modal-vlm-v1" and set(current) == set(b.tasks)
    scores = sorted((score for score, _, _ in current.values()), reverse=True)
    assert scores == pytest.approx([1 - rank / len(truth) for rank in range(len(truth))], abs=1e-6)
    assert all(choice in SHAPES and 0 < conf <= 1 for _, choice, conf in current.values())
    # the highest priorities are the strategy's next batch, in its order
    by_image = {row["id"]: row["path"] for row in b.store.images()}
    top = sorted(current, key=lambda task: -current[task][0])[:6]
    assert [b.tasks[task]["data"]["image"] for task in top] == \
        [url_of(by_image[i]) for i in b.worker.ranking.next_batch]


def test_setup_checks_the_labeling_config(shapes, make_backend):
    folder, truth = shapes
    b = make_backend(folder, truth, connect=False)

    def setup(schema, project=f"{LS_PROJECT}.1"):
        return b.client.post("/setup", json={"project": project, "schema": schema})

    wrong = setup(label_studio_config(["circle", "square"]))
    assert wrong.status_code == 422 and "missing ['triangle']" in wrong.json()["error"]
    extra = setup(label_studio_config([*SHAPES, "hexagon"]))
    assert extra.status_code == 422 and "unknown ['hexagon']" in extra.json()["error"]
    assert "not valid XML" in setup("<View><Image").json()["error"]
    assert "<Choices" in setup('<View><Image name="image" value="$image"/></View>').json()["error"]
    assert setup(CONFIG, project="abc").status_code == 422
    assert b.state.get("ls_project") is None and b.ls.predictions == []   # nothing changed
    assert setup(CONFIG).json() == {"model_version": "modal-vlm-v1"}
    other = setup(CONFIG, project="8.1")
    assert other.status_code == 409 and "serves Label Studio project 7" in other.json()["error"]


def test_predict_answers_every_task_with_class_confidence_and_priority(shapes, make_backend):
    folder, truth = shapes
    b = make_backend(folder, truth)
    tasks = list(b.tasks.values())[:5]
    body = {"tasks": tasks, "project": f"{LS_PROJECT}.1700000000", "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": None}}
    answer = b.client.post("/predict", json=body).json()
    assert answer["model_version"] == "modal-vlm-v1" and len(answer["results"]) == 5
    pushed = b.ls.current()
    for task, prediction in zip(tasks, answer["results"]):
        (item,) = prediction["result"]
        assert item["from_name"] == "label" and item["to_name"] == "image" and item["type"] == "choices"
        assert (prediction["score"], item["value"]["choices"][0], item["score"]) == pushed[task["id"]]
        assert prediction["model_version"] == "modal-vlm-v1"
    # the images' own probabilities: the confidence is the maximum one
    image_id = b.state.tasks()[tasks[0]["id"]]["image_id"]
    assert answer["results"][0]["result"][0]["score"] == pytest.approx(
        float(np.max(b.worker.ranking.proba[image_id])), abs=1e-6)
    bad = b.client.post("/predict", json={**body, "tasks": tasks + [
        {"id": 1, "data": {"image": "/data/local-files/?d=images/nope.png"}}]})
    assert bad.status_code == 404 and "nope.png" in bad.json()["error"]


def test_annotations_are_stored_then_one_debounced_retraining_moves_the_priorities(shapes, make_backend):
    folder, truth = shapes
    b = make_backend(folder, truth, debounce=1.0)
    before = b.ls.current()
    top = sorted(before, key=lambda task: -before[task][0])[:6]
    for number, task_id in enumerate(top):   # a burst: each stored before its answer
        task = b.tasks[task_id]
        path = urllib.parse.unquote(task["data"]["image"]).split("images/", 1)[1]
        response = b.client.post("/webhook", json=webhook("ANNOTATION_CREATED",
                                                          [annotation(number + 1, task, truth[path])],
                                                          [task]))
        assert response.status_code == 201 and response.json()["status"] == "ok"
        assert b.state.counts()["annotations"] == number + 1
    idle(b)
    assert sum(b.store.counts(SHAPES)["per_class"].values()) == 6
    assert {row["source"] for row in b.store.labels()} == {"import"}
    info = b.project.model_info()
    assert info["round"] == 1 and info["n_labels"] == 6 and info["saved"]   # one retraining
    assert b.worker.model_version == "modal-vlm-v2" and b.ls.model_version == "modal-vlm-v2"
    after = b.ls.current()
    # v1's predictions stay until the labeling pauses (a 20-30 s deletion in Label Studio)
    assert set(after) == set(b.tasks) and {v for _, v, _, _ in b.ls.predictions} == {"modal-vlm-v1", "modal-vlm-v2"}
    assert b.ls.listings() == 1   # the retraining's push did not list the tasks again
    assert all(after[task][0] == 0 for task in top)          # labeled: last
    assert max(after[task][0] for task in after if task not in top) == 1
    unlabeled = [task for task in b.tasks if task not in top]
    assert [after[t][0] for t in unlabeled] != [before[t][0] for t in unlabeled]   # the priorities moved
    health = b.client.get("/health").json()
    assert health["last_push"]["version"] == "modal-vlm-v2" and health["last_push"]["tasks"] == len(truth)


def test_updates_deletions_skips_and_bulk_annotations(shapes, make_backend):
    folder, truth = shapes
    b = make_backend(folder, truth)
    paths = sorted(truth)
    t0, t1, t2, t3 = (b.by_path[p] for p in paths[:4])
    first = [annotation(1, t0, truth[paths[0]]), annotation(2, t1, "none of these classes"),
             annotation(3, t2, cancelled=True), annotation(4, t3)]
    assert b.client.post("/webhook", json=webhook("ANNOTATIONS_CREATED", first, [t0, t1, t2, t3])).status_code == 201
    idle(b)
    state = {row["path"]: (row["kind"], row["label"]) for row in b.store.labels(["class", "ood", "skip"])}
    assert state == {paths[0]: ("class", truth[paths[0]]), paths[1]: ("ood", None), paths[2]: ("skip", None)}
    other = next(name for name in SHAPES if name != truth[paths[0]])
    b.client.post("/webhook", json=webhook("ANNOTATION_UPDATED", [annotation(1, t0, other)], [t0]))
    b.client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 2}, {"id": 999}],
                                    "project": {"id": LS_PROJECT}})
    idle(b)
    history = b.store.history(b.state.tasks()[t0["id"]]["image_id"])
    assert [(e["kind"], e["label"]) for e in history] == [("class", truth[paths[0]]), ("class", other)]
    image1 = b.state.tasks()[t1["id"]]["image_id"]
    assert b.store.states()[image1]["kind"] == "unlabel"      # back in the pool
    assert image1 in {image["id"] for image in b.worker.session.pool()}
    assert b.worker.ranking.priority[image1] > 0
    response = b.client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": LS_PROJECT}})
    assert response.status_code == 200 and response.json()["status"] == "Unknown event"
    before = len(b.store.events())
    started = b.project.model_info()["trained_at"]
    b.client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": LS_PROJECT}})
    idle(b)
    assert len(b.store.events()) == before and b.project.model_info()["trained_at"] == started  # nothing new


@pytest.mark.parametrize("body, status", [
    ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 100, "result": [{"from_name": "label",
      "value": {"choices": ["hexagon"]}}]}, "task": {"id": 100, "data": {"image": "x"}}}, 422),
    ({"action": "ANNOTATION_CREATED", "annotation": {"id": "1", "task": 100, "result": []}, "task": {"id": 100}}, 422),
    ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 100, "result": [{"from_name": "label",
      "value": {"choices": ["circle", "square"]}}]}, "task": {"id": 100, "data": {"image": "x"}}}, 422),
    ({"action": "ANNOTATION_CREATED", "annotation": [], "task": []}, 422),
    ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 55, "result": []}}, 422),
    ({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "x"}]}, 422),
    ({"action": "ANNOTATIONS_DELETED", "annotations": "all"}, 422),
    ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 100, "result": []},
      "task": {"id": 100, "data": {"image": "x"}}, "project": {"id": 8}}, 409),
])
def test_malformed_webhooks_change_nothing(shapes, make_backend, body, status):
    folder, truth = shapes
    b = make_backend(folder, truth)
    body = {"project": {"id": LS_PROJECT}, **body}
    response = b.client.post("/webhook", json=body)
    assert response.status_code == status, response.text
    assert b.state.counts()["annotations"] == 0 and b.store.events() == []
    for raw, media in ((b"{not json", "application/json"), (b"[1, 2]", "application/json"),
                       (json.dumps(body).encode(), "text/plain")):
        response = b.client.post("/webhook", content=raw, headers={"content-type": media})
        assert 400 <= response.status_code < 500


def test_a_push_cut_short_is_retried_without_duplicates(shapes, make_backend, monkeypatch):
    from modal_vlm.labeling import labelstudio_backend

    monkeypatch.setattr(labelstudio_backend, "PUSH_RETRY", 0.3)
    folder, truth = shapes
    b = make_backend(folder, truth)
    b.ls.failures = 1                  # the next version's predictions arrive, the switch fails
    path = sorted(truth)[0]
    b.client.post("/webhook", json=webhook("ANNOTATION_CREATED", [annotation(1, b.by_path[path], truth[path])],
                                           [b.by_path[path]]))
    wait = time.monotonic() + 120
    while b.ls.model_version != "modal-vlm-v2" and time.monotonic() < wait:
        time.sleep(0.2)
    idle(b)
    versions = [version for _, version, _, _ in b.ls.predictions]
    assert b.ls.model_version == "modal-vlm-v2" and versions.count("modal-vlm-v2") == len(truth)   # once each
    assert versions.count("modal-vlm-v1") == len(truth)   # deleted when the labeling pauses
    deletions = [call for call in b.ls.calls if call[0] == "DELETE"]
    assert len(deletions) == 1           # the half-pushed v2


def test_annotations_received_before_a_crash_are_applied_on_restart(shapes, make_backend, tmp_path):
    from modal_vlm.labeling.labelstudio_backend import BackendState
    from modal_vlm.labeling.store import Decision

    folder, truth = shapes
    b = make_backend(folder, truth, project_dir=tmp_path / "crash")
    b.worker.stop(timeout=30)      # as if killed right after answering the webhooks
    paths = sorted(truth)[:3]
    b.state.record_annotations([(10 + i, b.by_path[p]["id"], b.by_path[p]["data"]["image"],
                                 Decision("class", truth[p])) for i, p in enumerate(paths)])
    assert b.state.counts()["pending"] == 3 and b.store.events() == []
    b.state.close()
    b.store.close()
    again = make_backend(folder, truth, project_dir=tmp_path / "crash", connect=False)
    assert {row["path"]: row["label"] for row in again.store.labels()} == {p: truth[p] for p in paths}
    assert again.project.model_info()["n_labels"] == 3 and again.worker.model_version == "modal-vlm-v2"
    assert again.ls.model_version == "modal-vlm-v2"   # pushed again on its own, the project is known
    assert BackendState(again.project.root / "label-studio.sqlite").counts()["pending"] == 0


def test_both_front_ends_choose_the_same_next_batch_from_the_same_labels(shapes, make_session, client_for,
                                                                         make_backend, tmp_path):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    app = client_for(project, store, worker)
    zero_shot = [item["path"] for item in app.get("/api/state").json()["batch"]["items"]]
    b = make_backend(folder, truth, project_dir=tmp_path / "ls-same")
    by_id = {row["id"]: row["path"] for row in b.store.images()}
    assert [by_id[i] for i in b.worker.ranking.next_batch] == zero_shot      # before any label
    label_batch(app, truth)
    worker.wait_idle(120)
    app_next = [item["path"] for item in app.get("/api/state").json()["batch"]["items"]]
    rows = [annotation(i + 1, b.by_path[path], truth[path]) for i, path in enumerate(zero_shot)]
    b.client.post("/webhook", json=webhook("ANNOTATIONS_CREATED", rows, [b.by_path[p] for p in zero_shot]))
    idle(b)
    assert b.project.model_info()["round"] == project.model_info()["round"] == 1
    assert [by_id[i] for i in b.worker.ranking.next_batch] == app_next
    top = sorted(b.ls.current().items(), key=lambda item: -item[1][0])[:len(app_next)]
    assert [b.tasks[task]["data"]["image"] for task, _ in top] == [url_of(p) for p in app_next]


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)    # a real image, outside the image folder
    return path


REFUSED_URLS = [
    "/data/local-files/?d=secret.png", "/data/local-files/?d=images/../secret.png",
    "/data/local-files/?d=images%2F..%2Fsecret.png", "/data/local-files/?d=%2e%2e/secret.png",
    "/data/local-files/?d={secret}", "/data/local-files/?d=images/..%5Csecret.png",
    "/data/local-files/?d=images/link.png", "/data/local-files/?d=images/linked-dir/secret.png",
    "/data/local-files/?d=", "/data/local-files/?d=images/circle-00.png%00.txt",
    "/data/upload/../../secret.png", "/data/upload/%2e%2e/%2e%2e/secret.png",
    "/data/upload/..%2F..%2Fsecret.png", "/data/../secret.png", "/secret.png", "{secret}", "file://{secret}",
    "http://evil.example/data/upload/1/a.png", "https://ls.test:8080/data/upload/1/a.png",
    "s3://bucket/a.png", "/data/local-files/?d=images/notes.txt", "",
]


def test_images_outside_the_folder_are_refused(shapes, secret, make_backend):
    folder, truth = shapes
    (folder / "link.png").symlink_to(secret)
    (folder / "linked-dir").symlink_to(secret.parent, target_is_directory=True)
    (folder / "notes.txt").write_text("not an image")
    b = make_backend(folder, truth)
    paths_before = {row["path"] for row in b.store.images()}
    for url in REFUSED_URLS:   # one backend for all: each request changes nothing
        task = {"id": 1, "data": {"image": url.format(secret=str(secret).lstrip("/"))}}
        for route, body in (("/predict", {"tasks": [task], "label_config": CONFIG}),
                            ("/webhook", webhook("ANNOTATION_CREATED", [annotation(1, task, "circle")], [task]))):
            response = b.client.post(route, json=body)
            assert 400 <= response.status_code < 500 or route == "/webhook", (url, response.status_code)
        b.worker.wait_idle(60)
        assert b.client.get("/health").json()["state"]["unresolvable"] == 1, url   # kept, set aside
        assert b.store.events() == [] and {row["path"] for row in b.store.images()} == paths_before, url
        assert not [call for call in b.ls.calls if call[1].startswith("/data/")], url   # nothing fetched
        assert not (folder / "label-studio-files").exists()
        b.state.delete_annotations([1])
        b.state.mark_applied([1], applied=1)


def test_uploads_are_fetched_with_the_api_key_into_the_image_folder(shapes, make_backend):
    import io

    folder, truth = shapes
    b = make_backend(folder, truth)
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 0, 255)).save(png, "PNG")
    b.ls.files["/data/upload/7/abc-photo.png"] = png.getvalue()
    b.ls.files["/data/upload/7/fake.png"] = b"<html>not an image</html>"
    tasks = [{"id": 500, "data": {"image": "/data/upload/7/abc-photo.png"}},
             {"id": 501, "data": {"image": LS_URL + "/data/upload/7/abc-photo.png"}}]
    answer = b.client.post("/predict", json={"tasks": tasks, "label_config": CONFIG})
    assert answer.status_code == 200, answer.text
    saved = folder / "label-studio-files" / "upload" / "7" / "abc-photo.png"
    assert saved.read_bytes() == png.getvalue()
    assert "label-studio-files/upload/7/abc-photo.png" in {row["path"] for row in b.store.images()}
    assert [c[1] for c in b.ls.calls].count("/data/upload/7/abc-photo.png") == 1   # fetched once
    # the new file joins the pool: the next ranking gives it a priority (it is encoded)
    uploaded = next(row["id"] for row in b.store.images() if row["path"].endswith("abc-photo.png"))
    idle(b)
    assert b.worker.ranking.priority[uploaded] > 0, b.worker.ranking.priority
    fake = b.client.post("/predict", json={"tasks": [{"id": 502, "data": {"image": "/data/upload/7/fake.png"}}],
                                           "label_config": CONFIG})
    assert fake.status_code == 422 and "not an image" in fake.json()["error"]
    missing = b.client.post("/predict", json={"tasks": [{"id": 503, "data": {"image": "/data/upload/7/gone.png"}}],
                                              "label_config": CONFIG})
    assert missing.status_code == 502 and "404" in missing.json()["error"]
    assert not (folder / "label-studio-files" / "upload" / "7" / "fake.png").exists()


def test_basic_auth_host_and_body_limits(shapes, make_backend):
    folder, truth = shapes
    auth = ("ls", "s3cret")
    b = make_backend(folder, truth, basic_auth=auth, connect=False)
    assert b.client.get("/health", auth=auth).status_code == 200
    assert b.client.get("/health").status_code == 401
    for wrong in (("ls", "wrong"), ("other", "s3cret"), ("ls", "s3cret ")):
        response = b.client.get("/health", auth=wrong)
        assert response.status_code == 401 and "basic" in response.headers["www-authenticate"].lower()
    token = base64.b64encode(b"ls:s3cret").decode()
    assert b.client.get("/health", headers={"authorization": f"Bearer {token}"}).status_code == 401
    assert b.client.post("/setup", json={"project": "7.1", "schema": CONFIG}).status_code == 401
    assert b.client.post("/setup", json={"project": "7.1", "schema": CONFIG}, auth=auth).status_code == 200
    for host in ("evil.example", "127.0.0.1.evil.example:9090", "192.168.1.9"):
        assert b.client.get("/health", headers={"host": host}, auth=auth).status_code == 421
    huge = json.dumps({"tasks": [{"id": 1, "data": {"image": "x" * 1024}}] * 40_000})
    response = b.client.post("/predict", content=huge, headers={"content-type": "application/json"}, auth=auth)
    assert response.status_code == 413


def test_client_renews_personal_access_tokens():
    from modal_vlm.labeling.labelstudio_client import LabelStudioClient, LabelStudioError, is_personal_access_token

    def jwt(payload):
        encode = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")  # noqa: E731
        return f"{encode({'alg': 'HS256'})}.{encode(payload)}.signature"

    refresh = jwt({"token_type": "refresh", "user_id": "1"})
    issued, revoked = [], set()

    def handle(request):
        if request.url.path == "/api/token/refresh/":
            if json.loads(request.content) != {"refresh": refresh}:
                return httpx.Response(401, json={"detail": "Token is invalid"})
            issued.append(jwt({"token_type": "access", "n": len(issued),
                               "exp": time.time() + (0 if not issued else 300)}))
            return httpx.Response(200, json={"access": issued[-1]})
        token = request.headers["authorization"].removeprefix("Bearer ")
        if token != issued[-1] or token in revoked:
            return httpx.Response(401, json={"detail": "expired"})
        return httpx.Response(200, json={"tasks": [{"id": 1}], "total": 1})

    assert is_personal_access_token(refresh) and not is_personal_access_token("abc123")
    client = LabelStudioClient(LS_URL + "/", refresh, transport=httpx.MockTransport(handle))
    assert client.tasks(3) == [{"id": 1}] and len(issued) == 1
    assert client.tasks(3) == [{"id": 1}] and len(issued) == 2    # expired: renewed before use
    assert client.tasks(3) == [{"id": 1}] and len(issued) == 2
    revoked.add(issued[-1])
    assert client.tasks(3) == [{"id": 1}] and len(issued) == 3    # refused: renewed once, retried
    with pytest.raises(LabelStudioError, match="personal access token"):
        LabelStudioClient(LS_URL, jwt({"token_type": "refresh", "x": 1}),
                          transport=httpx.MockTransport(handle)).tasks(3)
    with pytest.raises(ValueError, match="download|/data/"):
        client.download("/api/projects/")
    for url in ("ftp://x", "localhost:8080", ""):
        with pytest.raises(ValueError):
            LabelStudioClient(url, "key")


@pytest.mark.parametrize("options, message", [
    (["--host", "0.0.0.0"], "give --basic-auth-user and --basic-auth-pass"),
    (["--basic-auth-user", "ls"], "give both --basic-auth-user and --basic-auth-pass"),
    (["--label-studio-url", "http://localhost:8080"], "give both --label-studio-url and --api-key"),
    (["--label-studio-url", "localhost:8080", "--api-key", "k"], "must be http(s)://host[:port]"),
    (["--debounce", "-1"], "--debounce must be >= 0"),
])
def test_command_line_refuses_unsafe_or_incomplete_settings(shapes, tmp_path, capsys, monkeypatch, options, message):
    from modal_vlm.cli import main

    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)
    folder, _ = shapes
    status = main(["label-studio-backend", str(folder), "--classes", *SHAPES, "--project", str(tmp_path / "cli"),
                   "--model", "tiny-vit", "--port", "0", *options])
    assert status == 2 and message in capsys.readouterr().err


def test_superseded_versions_are_deleted_when_the_labeling_pauses(shapes, make_backend):
    folder, truth = shapes
    b = make_backend(folder, truth, cleanup_after=0.5)
    task = b.tasks[min(b.tasks)]
    path = urllib.parse.unquote(task["data"]["image"]).split("images/", 1)[1]
    b.client.post("/webhook", json=webhook("ANNOTATION_CREATED", [annotation(1, task, truth[path])], [task]))
    idle(b)
    deadline = time.monotonic() + 30
    while {v for _, v, _, _ in b.ls.predictions} != {"modal-vlm-v2"} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {v for _, v, _, _ in b.ls.predictions} == {"modal-vlm-v2"} and b.ls.model_version == "modal-vlm-v2"
    assert set(b.ls.current()) == set(b.tasks) and b.state.get("stale_versions") == []
    assert b.worker.wait_idle(30)["phase"] == "ready"


def test_task_changes_make_the_next_push_list_the_tasks_again(shapes, make_backend):
    folder, truth = shapes
    b = make_backend(folder, truth)
    gone = max(b.tasks)
    del b.ls.tasks[gone]   # deleted in Label Studio without a webhook
    task = b.tasks[min(b.tasks)]
    path = urllib.parse.unquote(task["data"]["image"]).split("images/", 1)[1]
    b.client.post("/webhook", json=webhook("ANNOTATION_CREATED", [annotation(1, task, truth[path])], [task]))
    idle(b)
    # the cached list met the deleted task (Label Studio refused the import): listed again, pushed
    assert b.ls.listings() == 2 and b.ls.model_version == "modal-vlm-v2"
    assert set(b.ls.current()) == set(b.tasks) - {gone}
    b.ls.tasks[gone] = b.tasks[gone]   # imported again, and this time the webhook says so
    response = b.client.post("/webhook", json={"action": "TASKS_CREATED", "tasks": [b.tasks[gone]],
                                               "project": {"id": LS_PROJECT, "label_config": CONFIG}})
    assert response.status_code == 201
    idle(b)
    assert b.ls.listings() == 3 and set(b.ls.current()) == set(b.tasks)
