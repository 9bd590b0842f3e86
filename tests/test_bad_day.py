"""Rows of issue 25's bad-day trial for the estimator, the cache and the experiment runner:
each damaged file, odd input or odd setting is accepted correctly or refused with an error
naming it, and nothing is changed."""
import numpy as np
import pytest
from PIL import Image

from modal_vlm.runner import RunConfig, run_experiment

TINY = {"model_name": "tiny-vit", "n_ctx": 2, "max_epochs": 1, "batch_size": 4}


def image_folder(root, classes, per_class=4, seed=0):
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


# -- bad day 3: class names that differ only in case or spacing ----------------------------

@pytest.mark.trial("bad-day 3")
@pytest.mark.parametrize("names, match", [
    (["cat", "Cat"], "'cat' and 'Cat' differ only in case or spacing"),
    (["cat", "cat "], r"surrounding spaces: \['cat '\]"),
    (["big cat", "big  cat", "dog"], "'big cat' and 'big  cat' differ only in case or spacing"),
])
def test_estimator_refuses_class_names_that_differ_only_in_case_or_spacing(make_clf, images, names, match):
    X, _ = images
    clf = make_clf(class_names=names)
    with pytest.raises(ValueError, match=match):
        clf.predict_proba(X)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, np.arange(len(X)) % 2)
    assert not clf.initialized_


@pytest.mark.trial("bad-day 3")
def test_runner_refuses_class_folders_that_differ_only_in_case(tmp_path):
    data = image_folder(tmp_path / "data", ["cat", "Cat", "dog"])
    config = RunConfig(data=str(data), seeds=(0,), rounds=1, classifier=TINY)
    with pytest.raises(ValueError, match=r"class folders of .*data 'Cat' and 'cat' differ only in case"):
        run_experiment(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.trial("bad-day 3")
@pytest.mark.parametrize("classes, match", [(["cat", "Cat"], "differ only in case"),
                                            (["cat ", "dog"], "surrounding spaces"),
                                            (["None of these classes", "dog"], "the app's answer")])
def test_labeling_app_uses_the_same_rule(tmp_path, classes, match):
    from modal_vlm.labeling.project import open_project

    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match=match):
        open_project(tmp_path / "p", tmp_path / "images", classes, model="tiny-vit")
    assert not (tmp_path / "p").exists()
