"""Saved models: pickles and ``save_params`` hold what was learned, not the frozen encoders,
reload to identical predictions, and fail clearly when the backbone cannot be rebuilt."""
import io
import pickle
import shutil

import numpy as np
import open_clip
import pytest
import torch

from modal_vlm.backbones import _shared_backbone
from modal_vlm.exceptions import BackboneUnavailableError


def weights_file(path, shift=1.0):
    """A local open_clip weights file of ``tiny-vit``, as a user's real CLIP weights would be."""
    model = open_clip.create_model("tiny-vit")
    with torch.no_grad():
        model.visual.proj.add_(shift)
    torch.save(model.state_dict(), path)
    return str(path)


def test_pickle_holds_the_learned_prompt_not_the_encoders(make_clf, images):
    X, y = images
    zero_shot = make_clf()
    zero_shot.predict_proba(X)
    fitted = make_clf(fit_mode="ueo").fit(X, y)   # UEO also adapts the image encoder's norms
    frozen_bytes = sum(p.numel() * p.element_size() for p in fitted.backbone_.parameters())
    for clf in (zero_shot, fitted):
        blob = pickle.dumps(clf)
        assert len(blob) < 100_000 < frozen_bytes   # the encoders alone are ~7 MB
        restored = pickle.loads(blob)
        np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
        np.testing.assert_array_equal(restored.transform(X), clf.transform(X))
        assert len(restored.history_) == len(clf.history_)


def test_warm_start_after_reload_continues_as_without_reload(make_clf, images):
    X, y = images
    clf = make_clf(warm_start=True).fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.fit(X, y).predict_proba(X), clf.fit(X, y).predict_proba(X))
    assert len(restored.history_) == len(clf.history_) == 6


def test_save_params_writes_the_learned_state_and_load_params_checks_it(make_clf, images, tmp_path):
    X, y = images
    clf = make_clf(ctx_init=None).fit(X, y)   # n_ctx=4 random context vectors
    clf.save_params(f_params=tmp_path / "prompt.pt", f_optimizer=tmp_path / "opt.pt",
                    f_history=tmp_path / "history.json")
    assert (tmp_path / "prompt.pt").stat().st_size < 20_000
    state = torch.load(tmp_path / "prompt.pt", weights_only=True)
    assert sorted(state) == ["_extra_state", "prompt_learner.ctx", "prompt_trained"]
    fresh = make_clf(ctx_init=None, random_state=5).initialize()
    fresh.load_params(f_params=tmp_path / "prompt.pt", f_optimizer=tmp_path / "opt.pt",
                      f_history=tmp_path / "history.json")
    np.testing.assert_array_equal(fresh.predict_proba(X), clf.predict_proba(X))
    restored = pickle.loads(pickle.dumps(clf))
    buffer = io.BytesIO()
    restored.save_params(f_params=buffer)   # the pickle holds the same learned state
    assert buffer.getvalue() and torch.equal(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
                                             ["prompt_learner.ctx"], state["prompt_learner.ctx"])

    other = make_clf(class_names=["cat", "dog", "bird"])
    with pytest.raises(ValueError, match=r"does not fit this model: class_names: \['cat', 'dog', 'car'\] -> "
                                         r"\['cat', 'dog', 'bird'\]"):
        other.load_params(f_params=tmp_path / "prompt.pt")
    with pytest.raises(ValueError, match="n_ctx: 4 -> 2"):
        make_clf(n_ctx=2, ctx_init=None).load_params(f_params=tmp_path / "prompt.pt")
    with pytest.raises(ValueError, match="backbone: 'tiny-vit|"):
        make_clf(pretrained=weights_file(tmp_path / "w.pt")).load_params(f_params=tmp_path / "prompt.pt")


def test_safetensors_files_hold_the_same_state(make_clf, images, tmp_path):
    pytest.importorskip("safetensors", reason="safetensors is optional (skorch's use_safetensors=True)")
    X, y = images
    clf = make_clf().fit(X, y)
    clf.save_params(f_params=tmp_path / "prompt.safetensors", use_safetensors=True)
    fresh = make_clf().initialize()
    fresh.load_params(f_params=tmp_path / "prompt.safetensors", use_safetensors=True)
    np.testing.assert_array_equal(fresh.predict_proba(X), clf.predict_proba(X))


def test_moved_weights_file_gives_a_clear_error_and_can_be_pointed_to(make_clf, images, tmp_path):
    X, y = images
    path = weights_file(tmp_path / "clip.pt")
    clf = make_clf(pretrained=path).fit(X, y)
    expected = clf.predict_proba(X)
    blob = pickle.dumps(clf)
    moved = shutil.move(path, tmp_path / "moved.pt")
    _shared_backbone.cache_clear()   # as in a new process: the backbone is rebuilt from the file
    restored = pickle.loads(blob)   # loading itself needs no backbone
    with pytest.raises(BackboneUnavailableError, match=r"Cannot rebuild the frozen backbone .*clip.pt.*"
                                                       r"set_params\(pretrained=\.\.\.\)"):
        restored.predict_proba(X)
    with pytest.raises(BackboneUnavailableError, match="Cannot rebuild"):   # the learned prompt is still there
        restored.predict(X)
    np.testing.assert_array_equal(restored.set_params(pretrained=str(moved)).predict_proba(X), expected)


def test_changed_weights_file_is_refused(make_clf, images, tmp_path):
    X, y = images
    path = weights_file(tmp_path / "clip.pt")
    blob = pickle.dumps(make_clf(pretrained=path).fit(X, y))
    weights_file(path, shift=2.0)   # other weights under the same name
    _shared_backbone.cache_clear()
    with pytest.raises(ValueError, match="is not the one this model's prompt was learned with"):
        pickle.loads(blob).predict_proba(X)
