"""Fixtures of the labeling app's tests: small folders of drawn shapes, projects on the tiny
test backbone, a running worker and an API client."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def draw_shapes(root, per_class=8, size=64, seed=0, layout="flat"):
    """``per_class`` images of each shape (random colours, sizes, places); returns the truth.

    ``layout="flat"`` puts every file in ``root`` (the app needs no class folders),
    ``"folders"`` one sub-folder per shape. Returns ``{relative path: shape}``.
    """
    rng = np.random.default_rng(seed)
    truth = {}
    for shape in SHAPES:
        for i in range(per_class):
            background = tuple(int(v) for v in rng.integers(150, 256, 3))
            colour = tuple(int(v) for v in rng.integers(0, 120, 3))
            image = Image.new("RGB", (size, size), background)
            draw = ImageDraw.Draw(image)
            r = rng.uniform(0.2, 0.38) * size
            cx, cy = rng.uniform(r, size - r, 2)
            if shape == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            elif shape == "square":
                draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
            relative = f"{shape}/{i:02d}.png" if layout == "folders" else f"{shape}-{i:02d}.png"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / relative)
            truth[relative] = shape
    return truth


@pytest.fixture
def shapes(tmp_path):
    """A flat folder of 24 shape images: ``(folder, {relative path: shape})``."""
    folder = tmp_path / "images"
    folder.mkdir()
    return folder, draw_shapes(folder)


@pytest.fixture
def make_session(tmp_path):
    """Factory: ``(project, store, worker)`` of a project on ``tiny-vit``, worker started and idle.

    Every store and worker made is closed and stopped at the end of the test.
    """
    from modal_vlm.labeling import BackgroundWorker, LabelStore, open_project

    made = []

    def make(images, classes=SHAPES, project_dir=None, **settings):
        settings = {"model": "tiny-vit", "train_steps": 5, "batch_size": 6, **settings}
        project, _ = open_project(project_dir or tmp_path / "project", images, classes, **settings)
        store = LabelStore(project.database)
        worker = BackgroundWorker(project, store).start()
        made.append((store, worker))
        status = worker.wait_idle(120)
        assert status["phase"] in ("ready", "done"), status
        return project, store, worker

    yield make
    for store, worker in made:
        worker.stop(timeout=30)
        store.close()


@pytest.fixture
def client_for():
    """Factory of a FastAPI test client for a session (addressed to 127.0.0.1)."""
    from fastapi.testclient import TestClient

    from modal_vlm.labeling.server import create_app

    def make(project, store, worker, **options):
        return TestClient(create_app(project, store, worker, **options), base_url="http://127.0.0.1")

    return make


def label_batch(client, truth, decide=None):
    """Label the open batch through the API: the true shape, or ``decide(item, truth)``'s
    ``{"kind", "label"}``. Returns the state after the last label."""
    state = client.get("/api/state").json()
    batch = state["batch"]
    for item in batch["items"]:
        decision = decide(item, truth) if decide else {"kind": "class", "label": truth[item["path"]]}
        response = client.post("/api/label", json={"batch_id": batch["id"], "image_id": item["image_id"],
                                                   **decision})
        assert response.status_code == 200, response.text
        state = response.json()
    return state
