"""The app's "N: none of these classes" reaches the learner as ``modal_vlm.NONE``, the label a
hand-written modAL loop teaches: in training and in the strategy's labeled set (one path)."""
import numpy as np
import pytest
from conftest import label_batch

pytest.importorskip("fastapi", reason="the labeling app needs the 'app' extra: pip install modal-vlm[app]")


@pytest.mark.parametrize("fit_mode", ["supervised", "ueo"])
def test_none_answers_are_taught_and_queried_as_none(shapes, make_session, client_for, monkeypatch, fit_mode):
    from modAL.models import ActiveLearner

    from modal_vlm import NONE, ClipPromptClassifier

    fits, queries = [], []
    fit, query = ClipPromptClassifier.fit, ActiveLearner.query

    def spy_fit(self, X, y, **kwargs):
        fits.append((list(X), np.asarray(y).tolist()))
        return fit(self, X, y, **kwargs)

    def spy_query(self, *args, **kwargs):
        queries.append(None if self.y_training is None else np.asarray(self.y_training).tolist())
        return query(self, *args, **kwargs)

    monkeypatch.setattr(ClipPromptClassifier, "fit", spy_fit)
    monkeypatch.setattr(ActiveLearner, "query", spy_query)
    folder, truth = shapes
    project, store, worker = make_session(folder, fit_mode=fit_mode)
    client = client_for(project, store, worker)
    kinds = iter(["ood", "ood", "class", "class", "class", "class"])
    first = client.get("/api/state").json()["batch"]["items"]
    label_batch(client, truth, lambda item, truth: (lambda k: {"kind": k, "label": truth[item["path"]]
                                                              if k == "class" else None})(next(kinds)))
    assert worker.wait_idle(120)["phase"] == "ready"
    X, y = fits[-1]
    marked = {str(folder / item["path"]) for item in first[:2]}
    assert y.count(NONE) == 2 and {x for x, label in zip(X, y) if label == NONE} == marked
    assert queries[-1].count(NONE) == 2 and len(queries[-1]) == 6
    info = project.model_info()
    assert info["n_labels"] == 4 and info["n_ood"] == 2
