"""``modal-vlm label-studio-backend`` driven by a real Label Studio (PyPI ``label-studio``,
its own SQLite, a fresh data directory, started here on 127.0.0.1).

A project is created through Label Studio's SDK with an image-classification config, 30
shared CIFAR-10 images come in through local storage and one more as an upload (which the
backend fetches with a personal access token), the backend is connected, and then: every
task gets a prediction with a priority score, the Data Manager sorted by that score shows
the strategy's next batch first, annotations posted through Label Studio's API retrain the
model (a new model version, the priorities move), edits and deletions reach the label
store, and killing the backend with SIGKILL right after an annotation loses nothing.

Label Studio needs its own virtual environment (its pins conflict with this project's):
``.ci/run`` builds ``.venv-label-studio``; elsewhere set ``MODAL_VLM_LABEL_STUDIO`` to a
``label-studio`` executable. To refresh the documentation's screenshots (headless Chromium)::

    MODAL_VLM_SCREENSHOTS=docs/_static python -m pytest tests/labeling/test_labelstudio_live.py
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the ML backend needs the 'app' extra: pip install modal-vlm[app]")
httpx = pytest.importorskip("httpx")

from modal_vlm.labeling.labelstudio import label_studio_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("cat", "dog", "ship")
PER_CLASS = 10
BATCH = 6
USER, PASSWORD, LEGACY_TOKEN = "modal-vlm@example.com", "modal-vlm-test-pass", "modal-vlm-legacy-token-0123"
pytestmark = pytest.mark.integration


def label_studio_executable():
    candidates = [os.environ.get("MODAL_VLM_LABEL_STUDIO"), ROOT / ".venv-label-studio" / "bin" / "label-studio",
                  shutil.which("label-studio")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("Label Studio is not installed: .ci/run builds .venv-label-studio (pip install label-studio "
                "in its own virtual environment); or set MODAL_VLM_LABEL_STUDIO to its label-studio executable")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout, what, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory, cifar10):
    executable = label_studio_executable()
    base = tmp_path_factory.mktemp("label-studio")
    docroot = base / "files"
    truth = {}
    for name in CLASSES:
        (docroot / "images" / name).mkdir(parents=True)
        for image in sorted((cifar10 / "test" / name).glob("*.jpg"))[:PER_CLASS]:
            shutil.copy(image, docroot / "images" / name / image.name)
            truth[f"{name}/{image.name}"] = name
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(base / "data"),
           "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": str(docroot),
           # the backend runs on this machine: let Label Studio call it
           "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
           # the legacy --user-token only bootstraps a personal access token, which the backend uses
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false"}
    log = open(base / "label-studio.log", "w")
    process = subprocess.Popen([str(executable), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
                                "--username", USER, "--password", PASSWORD, "--user-token", LEGACY_TOKEN],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base)
    url = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            raise AssertionError("Label Studio exited:\n" + (base / "label-studio.log").read_text()[-3000:])
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 400, "Label Studio's /health", every=1)
        python = executable.parent / "python"
        pat = sdk_step(python, "token", {"url": url, "token": LEGACY_TOKEN})["token"]
        api = httpx.Client(base_url=url, headers={"Authorization": f"Token {LEGACY_TOKEN}"}, timeout=60)
        yield {"url": url, "api": api, "pat": pat, "docroot": docroot, "truth": truth, "python": python, "base": base}
        api.close()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def sdk_step(python, step, options):
    result = subprocess.run([str(python), str(Path(__file__).with_name("labelstudio_sdk_steps.py")), step,
                             json.dumps(options)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


class Backend:
    """The ``modal-vlm label-studio-backend`` process."""

    def __init__(self, ls, project_dir):
        self.ls, self.project_dir = ls, project_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        command = [sys.executable, "-m", "modal_vlm.cli", "label-studio-backend", str(self.ls["docroot"] / "images"),
                   "--classes", *CLASSES, "--project", str(self.project_dir), "--model", "tiny-vit",
                   "--batch", str(BATCH), "--train-steps", "5", "--port", str(self.port), "--debounce", "0.5",
                   "--label-studio-url", self.ls["url"], "--document-root", str(self.ls["docroot"])]
        env = {**os.environ, "LABEL_STUDIO_API_KEY": self.ls["pat"], "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            if line.startswith("Label Studio ML backend at "):
                break
        else:
            raise AssertionError("the backend did not start:\n" + "".join(lines))
        wait_for(lambda: self.health()["worker"]["phase"] == "ready", 180, "the backend's first ranking")
        return self

    def health(self):
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def idle(self, version=None, timeout=180):
        """Wait until the backend is ready, its model version pushed (and not ``version``) to
        every task."""
        def settled():
            health = self.health()
            push = health["last_push"] or {}
            return health["worker"]["phase"] == "ready" and push.get("version") == health["model_version"] \
                and health["model_version"] != version and health["state"]["tasks"] == len(self.ls["truth"]) + 1 \
                and health
        try:
            return wait_for(settled, timeout, f"the backend to push a model version after {version}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its /health: {self.health()}") from None

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="module")
def connected(label_studio, tmp_path_factory, cifar10):
    ls = label_studio
    backend = Backend(ls, tmp_path_factory.mktemp("backend") / "project").start()
    try:
        ids = sdk_step(ls["python"], "project", {
            "url": ls["url"], "token": ls["pat"], "label_config": label_studio_config(CLASSES),
            "path": str(ls["docroot"] / "images")})
        upload = sorted((cifar10 / "test" / "ship").glob("*.jpg"))[PER_CLASS]
        response = ls["api"].post(f"/api/projects/{ids['project']}/import",
                                  files={"file": ("upload-ship.jpg", upload.read_bytes(), "image/jpeg")})
        assert response.status_code == 201, response.text
        sdk_step(ls["python"], "connect", {"url": ls["url"], "token": ls["pat"], "project": ids["project"],
                                           "backend": backend.url})
        yield {**ids, "backend": backend, "upload": upload}
    finally:
        backend.stop()


def tasks_by_priority(ls, connected):
    """The Data Manager's view sorted by prediction score: ``[(task, score, predicted class)]``."""
    body = ls["api"].get("/api/tasks/", params={"project": connected["project"], "view": connected["view"],
                                                "fields": "all", "page_size": 100}).json()
    project = ls["api"].get(f"/api/projects/{connected['project']}").json()
    rows = []
    for task in body["tasks"]:
        current = [p for p in task["predictions"] if p["model_version"] == project["model_version"]]
        rows.append((task, task["predictions_score"], current[0]["result"][0]["value"]["choices"][0]
                     if current else None))
    return rows, project["model_version"]


def truth_of(ls, task):
    image = task["data"]["image"]
    return "ship" if "/data/upload/" in image else image.rsplit("?d=images/", 1)[1].split("/", 1)[0]


def annotate(ls, task, choice):
    response = ls["api"].post(f"/api/tasks/{task['id']}/annotations/", json={
        "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]})
    assert response.status_code == 201, response.text   # Label Studio answers after its webhook
    return response.json()


def store_of(backend):
    from modal_vlm.labeling import LabelStore

    return LabelStore(backend.project_dir / "labels.sqlite")


def screenshot(ls, connected, name):
    """The Data Manager sorted by the modal-vlm priority, for the documentation (only with
    MODAL_VLM_SCREENSHOTS set; needs Debian's chromium and chromium-driver)."""
    folder = os.environ.get("MODAL_VLM_SCREENSHOTS")
    if not folder:
        return
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1500,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService("/usr/bin/chromedriver"))
    try:
        browser.get(f"{ls['url']}/user/login/")
        browser.find_element(By.NAME, "email").send_keys(USER)
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.NAME, "password").submit()
        WebDriverWait(browser, 60).until(lambda b: "/user/login" not in b.current_url)
        browser.get(f"{ls['url']}/projects/{connected['project']}/data?tab={connected['view']}")
        WebDriverWait(browser, 90).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".lsf-table-row")) > 5)
        time.sleep(5)   # thumbnails
        browser.save_screenshot(str(Path(folder) / name))
    finally:
        browser.quit()


def test_priorities_appear_and_move_as_label_studio_annotates(label_studio, connected):
    ls, backend = label_studio, connected["backend"]
    first = backend.idle()
    assert first["label_studio_project"] == connected["project"]
    fetched = list((ls["docroot"] / "images" / "label-studio-files" / "upload").rglob("*upload-ship.jpg"))
    assert len(fetched) == 1 and fetched[0].read_bytes() == connected["upload"].read_bytes()   # with the PAT
    rows, version = tasks_by_priority(ls, connected)
    n = len(ls["truth"]) + 1
    assert version == first["model_version"] and version.startswith("modal-vlm-v") and len(rows) == n
    scores = [score for _, score, _ in rows]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0 and None not in scores
    assert all(choice in CLASSES for _, _, choice in rows)
    screenshot(ls, connected, "label-studio-priority.png")

    top = [task for task, _, _ in rows[:BATCH]]          # the strategy's batch: label it
    annotations = [annotate(ls, task, truth_of(ls, task)) for task in top]
    after = backend.idle(version)
    rows2, version2 = tasks_by_priority(ls, connected)
    assert version2 == after["model_version"] != version
    scores2 = {task["id"]: score for task, score, _ in rows2}
    assert all(scores2[task["id"]] == 0 for task in top)                  # labeled: last
    new_top = [task["id"] for task, _, _ in rows2[:BATCH]]
    assert not set(new_top) & {task["id"] for task in top}                # the next batch
    unlabeled = [task["id"] for task, _, _ in rows if task not in top]
    assert [scores2[t] for t in unlabeled] != [dict((t["id"], s) for t, s, _ in rows)[t] for t in unlabeled]
    store = store_of(backend)
    try:
        labels = {row["path"]: row["label"] for row in store.labels()}
        assert len(labels) == BATCH and all(labels[path] == path.split("/")[0] for path in labels
                                            if not path.startswith("label-studio-files/"))
    finally:
        store.close()
    assert json.loads((backend.project_dir / "model.json").read_text())["n_labels"] == BATCH
    screenshot(ls, connected, "label-studio-priority-after.png")

    # an edit and a deletion in Label Studio reach the label store
    edited, deleted = annotations[0], annotations[1]
    other = next(name for name in CLASSES if name != truth_of(ls, top[0]))
    response = ls["api"].patch(f"/api/annotations/{edited['id']}/", json={"result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [other]}}]})
    assert response.status_code == 200, response.text
    assert ls["api"].delete(f"/api/annotations/{deleted['id']}/").status_code == 204
    backend.idle(version2)
    store = store_of(backend)
    try:
        labels = {row["path"]: row["label"] for row in store.labels()}
        assert len(labels) == BATCH - 1 and other in labels.values()
        assert sum(event["kind"] == "unlabel" for event in store.events()) == 1
    finally:
        store.close()


def test_kill_9_right_after_an_annotation_loses_nothing(label_studio, connected):
    ls, backend = label_studio, connected["backend"]
    before = backend.idle()
    rows, _ = tasks_by_priority(ls, connected)
    task = rows[0][0]
    annotate(ls, task, truth_of(ls, task))      # answered: the webhook was delivered
    backend.kill()                              # before the debounced retraining
    backend.start()
    after = backend.idle(before["model_version"])
    url = task["data"]["image"]
    path = url.split("?d=images/", 1)[1] if "?d=images/" in url else \
        "label-studio-files/" + url.split("/data/", 1)[1]
    store = store_of(backend)
    try:
        labels = {row["path"]: row["label"] for row in store.labels()}
    finally:
        store.close()
    assert len(labels) == BATCH and labels[path] == truth_of(ls, task)   # 5 + the one sent before the kill
    rows2, version2 = tasks_by_priority(ls, connected)
    assert version2 == after["model_version"] and dict((t["id"], s) for t, s, _ in rows2)[task["id"]] == 0
