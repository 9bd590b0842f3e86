"""What the labels bought, in the labeling app (``modal_vlm.labeling.trust``): audit picks that
look like any other card, calibrated confidence, the estimate and the stopping signal in
``/api/state``, and the review page's "likely wrong" list; on the tiny test backbone."""
import csv
import io
import json
import pickle

import numpy as np
import pytest
from conftest import SHAPES, label_batch

from modal_vlm.evaluation.calibration import rescale
from modal_vlm.evaluation import assess, fit_calibrator
from modal_vlm.labeling.trust import TRUST_FILE, stop_set

pytest.importorskip("fastapi", reason="the labeling app needs the 'app' extra: pip install modal-vlm[app]")


def next_batch(client, worker):
    assert worker.wait_idle(120)["phase"] in ("ready", "done")
    return client.get("/api/state").json()


def test_audit_picks_are_stored_but_never_shown(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder, audit_fraction=0.5, batch_size=4)
    client = client_for(project, store, worker)
    positions = []
    for number in (1, 2, 3, 4, 5):
        state = next_batch(client, worker)
        assert state["batch"]["id"] == number
        assert "audit" not in json.dumps(state)          # nothing on the page tells them apart
        scores = [row for row in store.batch_scores() if row["batch_id"] == number]
        shown = [item["image_id"] for item in state["batch"]["items"]]
        assert [row["image_id"] for row in scores] == shown and sum(row["audit"] for row in scores) == 2
        positions.append(tuple(k for k, row in enumerate(scores) if row["audit"]))
        assert all(len(row["proba"]) == len(SHAPES) and abs(sum(row["proba"]) - 1) < 1e-4 for row in scores)
        # Batches 1-3 fit the first calibration (12 pairs); batch 4's cards are the first calibrated
        # ones, and one model's pairs make no estimate yet.
        assert state["estimate"] is None
        label_batch(client, truth)
    assert len(set(positions)) > 1                        # shuffled in: not always the same places
    estimate = next_batch(client, worker)["estimate"]     # batches 4 and 5: two models, 4 audit picks
    assert estimate["n"] == 4 and 0 <= estimate["low"] <= estimate["accuracy"] <= estimate["high"] <= 1


def test_confidence_is_calibrated_once_there_are_labels(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    first = next_batch(client, worker)
    assert first["estimate"] is None and first["stable"] is False and first["stability"] is None
    assert all(item["calibrated"] is False for item in first["batch"]["items"])   # zero-shot: nothing to check it on
    label_batch(client, truth)
    next_batch(client, worker)
    label_batch(client, truth)
    third = next_batch(client, worker)
    assert all(item["calibrated"] is True for item in third["batch"]["items"])    # 12 labels checked
    scaler = fit_calibrator(worker.session.trust.pairs()[0])
    rows = {row["image_id"]: row for row in store.batch_scores() if row["batch_id"] == third["batch"]["id"]}
    scale = worker.session.margin_scale()   # the model's typical margin on the stop set
    assert scale > 0
    assert all(rows[item["image_id"]]["scale"] == pytest.approx(scale) for item in third["batch"]["items"])
    for item in third["batch"]["items"]:
        expected = scaler.transform(rescale(np.array([rows[item["image_id"]]["proba"]]), scale))[0]
        assert item["confidence"] == pytest.approx(expected.max(), abs=1e-9)
        assert item["guess"] == SHAPES[int(expected.argmax())]
    assert third["estimate"] is None   # no audit pick was scored with a calibrated confidence yet
    stability = third["stability"]
    assert stability["n"] == len(truth) and 0 <= stability["changed"] <= 1 and isinstance(third["stable"], bool)
    predictions = list(csv.DictReader(io.StringIO(client.get("/export/predictions.csv").text)))
    model = pickle.loads(client.get("/export/model.pkl").content)
    X = np.array([str(folder / row["path"]) for row in predictions])
    calibrated = scaler.transform(rescale(model.predict_proba(X), scale))
    assert np.allclose([[float(row[f"p_{n}"]) for n in SHAPES] for row in predictions], calibrated, atol=1e-5)


def test_likely_wrong_lists_the_slips_most_suspect_first(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    slips = {}

    def careless(item, truth):   # every third label wrong
        label = truth[item["path"]]
        if item["image_id"] % 3 == 0:
            label = SHAPES[(SHAPES.index(label) + 1) % len(SHAPES)]
            slips[item["image_id"]] = label
        return {"kind": "class", "label": label}

    for _ in range(3):
        label_batch(client, truth, decide=careless)
        next_batch(client, worker)
    listed = client.get("/api/review", params={"filter": "suspect"}).json()["items"]
    found, _, image_ids = worker.session.assessment()
    expected = [int(image_ids[k]) for k in found.suspects]
    assert [row["image_id"] for row in listed] == expected
    # The current and the zero-shot model's opinions of each labeled image are weighed in, as in the runner.
    pairs, _ = worker.session.trust.pairs()
    _, pool_ids, pool_proba, scale, (zero_shot, zero_shot_scale) = worker.session._pool_proba
    rows = [pool_ids.tolist().index(i) for i in image_ids]
    clf = worker.session.current()
    paths = [worker.session.path(store.image(int(i))) for i in image_ids]
    assert np.allclose(zero_shot[rows], clf.zero_shot_proba(paths), atol=1e-6)
    opinions = [(np.asarray(pool_proba)[rows], scale), (zero_shot[rows], zero_shot_scale)]
    empty = np.zeros((0, len(SHAPES)))
    assert np.allclose(found.suspicion, assess(pairs, empty, scale=scale, opinions=opinions).suspicion)
    assert not np.allclose(found.suspicion, assess(pairs, empty, scale=scale).suspicion)
    assert all(row["suggestion"] in SHAPES and row["suggestion"] != row["label"] for row in listed)
    assert [row["suspicion"] for row in listed] == sorted((row["suspicion"] for row in listed), reverse=True)
    assert client.get("/api/review", params={"filter": "wrongish"}).status_code == 422


def test_stability_survives_a_restart(shapes, make_session, client_for):
    folder, truth = shapes
    project, store, worker = make_session(folder)
    client = client_for(project, store, worker)
    for _ in range(2):
        label_batch(client, truth)
        next_batch(client, worker)
    before = client.get("/api/state").json()
    history = json.loads((project.root / TRUST_FILE).read_text())["history"]
    assert len(history) == 2 and before["stability"]["kappa"] == history[-1]["kappa"]
    worker.stop(timeout=30)
    store.close()
    project, store, worker = make_session(folder)
    after = client_for(project, store, worker).get("/api/state").json()
    assert (after["stability"], after["stable"], after["estimate"]) == (before["stability"], before["stable"],
                                                                        before["estimate"])
    assert len(json.loads((project.root / TRUST_FILE).read_text())["history"]) == 2   # the same model: no new entry


def test_audit_fraction_is_checked(shapes, tmp_path):
    from modal_vlm.labeling import open_project

    folder, _ = shapes
    for value, message in [(1.0, r"audit_fraction must be a fraction in \[0, 1\)"),
                           (0.9, "leaves rounds with no pick for the query strategy")]:
        with pytest.raises(ValueError, match=message):
            open_project(tmp_path / f"p{value}", folder, SHAPES, model="tiny-vit", batch_size=6, audit_fraction=value)
        assert not (tmp_path / f"p{value}").exists()


def test_stop_set_is_stable_when_images_are_added():
    first = stop_set(range(100), seed=3, size=20)
    grown = stop_set(range(110), seed=3, size=20)
    assert len(first) == 20 and len(grown) == 20
    assert set(grown) - set(range(100, 110)) <= set(first)   # an old image leaves only for a new one
    assert stop_set(range(100), seed=4, size=20) != first


def test_the_apps_audit_default_is_the_libraries():
    from modal_vlm.evaluation import DEFAULT_AUDIT_FRACTION
    from modal_vlm.labeling import Settings
    from modal_vlm.runner import RunConfig

    assert Settings("x", ("a", "b")).audit_fraction == RunConfig().audit_fraction == DEFAULT_AUDIT_FRACTION
