"""Rows of issue 25's first-hour trial (a new user on a fresh clone): what the README and the
command line promise works, and what cannot work says so at once, in one line."""
import socket

import numpy as np
import open_clip
import pytest
import torch
from huggingface_hub import constants as hub

from modal_vlm import cli
from modal_vlm.backbones import create_backbone, open_clip_backbone

REMEDIES = ("model_name='linear-conse-efficientnet-lite0-minilm'", "pretrained='/path/to/weights.pt'")


@pytest.fixture
def empty_weight_caches(tmp_path, monkeypatch):
    """No open_clip weights cached anywhere (the hub cache and ~/.cache/clip are empty)."""
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "hub-cache"


@pytest.fixture
def hub_unreachable(monkeypatch):
    """Online mode, but the hub's address refuses connections (a closed local port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "ENDPOINT", f"https://127.0.0.1:{port}")
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if open_clip is asked to build a model (and so to download weights)."""
    def refuse(*args, **kwargs):
        raise AssertionError("open_clip was asked to download the weights")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)


@pytest.mark.trial("first-hour 1")
def test_offline_default_model_fails_at_once_naming_the_remedies(empty_weight_caches, no_download, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="HF_HUB_OFFLINE is set") as caught:
        create_backbone("ViT-B-32")
    message = str(caught.value)
    assert "\n" not in message and all(remedy in message for remedy in REMEDIES)


@pytest.mark.trial("first-hour 1")
def test_unreachable_hub_fails_at_once_naming_the_remedies(empty_weight_caches, hub_unreachable, no_download):
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:\d+ cannot be reached") as caught:
        create_backbone("ViT-B-32", "openai")
    assert all(remedy in str(caught.value) for remedy in REMEDIES)


@pytest.mark.trial("first-hour 1")
def test_readme_snippet_offline_fails_on_first_query_with_one_line(empty_weight_caches, no_download, monkeypatch):
    from modAL.models import ActiveLearner

    from modal_vlm import ClipPromptClassifier, cec_query

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    learner = ActiveLearner(estimator=ClipPromptClassifier(["cat", "dog"]), query_strategy=cec_query)
    with pytest.raises(ConnectionError, match="cannot download the open_clip weights ViT-B-32"):
        learner.query(np.zeros((4, 32, 32, 3), np.uint8), n_instances=2)


@pytest.mark.trial("first-hour 1")
def test_cli_run_offline_prints_one_error_line(tmp_path, empty_weight_caches, no_download, monkeypatch, capsys):
    from test_experiment import write_image_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = write_image_folder(tmp_path / "images", per_class=4)
    assert cli.main(["run", "--data", str(folder), "--out", str(tmp_path / "run"), "--rounds", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modal-vlm: error: cannot download the open_clip weights ViT-B-32")
    assert err.count("\n") == 1 and "--model linear-conse-efficientnet-lite0-minilm" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.trial("first-hour 1")
def test_cached_tagged_weights_load_without_the_network(empty_weight_caches, hub_unreachable, monkeypatch):
    # A published tag whose weights were downloaded once: offline, they load from the cache
    # with the hub client in offline mode (no retries against the unreachable host).
    from open_clip import pretrained

    monkeypatch.setitem(pretrained._PRETRAINED, "tiny-vit", {"cachedtest": pretrained._pcfg(
        hf_hub="modal-vlm/tiny-vit-test/", quick_gelu=False)})
    snapshot = empty_weight_caches / "models--modal-vlm--tiny-vit-test" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    reference = create_backbone("tiny-vit", "random")
    torch.save({f"visual.{k}": v for k, v in reference.visual.state_dict().items()}
               | {k: v for k, v in open_clip.create_model("tiny-vit").state_dict().items()
                  if not k.startswith("visual.")}, snapshot / "open_clip_pytorch_model.bin")
    seen = []
    download = pretrained.download_pretrained_from_hf
    monkeypatch.setattr(pretrained, "download_pretrained_from_hf",
                        lambda *a, **k: seen.append(hub.HF_HUB_OFFLINE) or download(*a, **k))
    loaded = create_backbone("tiny-vit", "cachedtest")
    assert seen == [True] and hub.HF_HUB_OFFLINE is False   # offline during the load only
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_image(x), reference.encode_image(x))
    assert open_clip_backbone.check_weights_reachable("tiny-vit", "cachedtest") is True


SHIMS_APPLIED = """
import sys
{first}
from modAL.models import ActiveLearner
import modAL.expected_error, modAL.models.base, modAL.utils.data, numpy
import modal_vlm.compat as compat
needed = compat.needed_patches()
assert "check_X_y" not in needed or modAL.models.base.check_X_y is compat.check_X_y, "check_X_y"
assert "data_vstack" not in needed or modAL.utils.data.data_vstack is compat.data_vstack, "data_vstack"
assert ActiveLearner.teach.__modal_vlm_all_or_nothing__, "teach"
assert "float" not in vars(numpy), "np.float left behind"
print("ok")
"""


@pytest.mark.trial("also: import modal_vlm shims")
@pytest.mark.parametrize("first", ["import modal_vlm", "import modAL\nimport modal_vlm"],
                         ids=["before-modAL", "after-modAL"])
def test_bare_import_applies_the_modal_shims_in_any_order(first):
    # A fresh interpreter, as a user's script: `import modal_vlm` and nothing else of it.
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", SHIMS_APPLIED.format(first=first)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@pytest.mark.trial("also: import modal_vlm shims")
def test_bare_import_stays_cheap():
    import subprocess
    import sys

    code = ("import sys, modal_vlm; "
            "print(sorted(m for m in ('torch', 'sklearn', 'modAL', 'pandas') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


DEMO_TINY = ["demo", "--rounds", "1", "--epochs", "1", "--pool-per-class", "3", "--test-per-class", "2"]


@pytest.mark.trial("first-hour 7: demo header")
def test_demo_refuses_a_finished_run_before_printing_its_header(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEMO_MODEL", "tiny-vit")
    argv = DEMO_TINY + ["--out", str(tmp_path / "demo")]
    assert cli.main(argv + ["--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("modal-vlm: error:") and "already holds this finished run" in err


@pytest.mark.trial("first-hour 7: per-class column")
def test_round_table_says_its_column_is_the_mean_per_class_accuracy():
    from modal_vlm.runner import ROUND_TABLE_HEADER, format_round

    assert "mean per-class acc." in ROUND_TABLE_HEADER and " per-class " not in ROUND_TABLE_HEADER.replace(
        "mean per-class acc.", "")
    line = format_round({"strategy": "cec", "seed": 0, "round": 1, "n_labeled": 10, "accuracy": 0.5,
                         "mean_per_class_accuracy": 0.45, "seconds": {"query": 0.2, "train": 3.4}})
    column = ROUND_TABLE_HEADER.index("mean per-class acc.") + len("mean per-class acc.")
    assert line[column - 5:column] == "0.450"   # the number sits under its header


@pytest.mark.trial("first-hour 6")
@pytest.mark.parametrize("labels", [["cat", "dog", "cat"], [0, 1, 0]], ids=["names", "indices"])
def test_prompt_committee_taught_with_class_names_queries_and_predicts(labels):
    from modal_vlm import ClipPromptClassifier
    from modal_vlm.committee import prompt_committee

    estimator = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", n_ctx=2, max_epochs=1, verbose=0,
                                     random_state=0)
    committee = prompt_committee(estimator, templates=["a {}.", "a photo of a {}."])
    X = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    committee.teach(X[:3], labels)
    picked, _ = committee.query(X[3:], n_instances=2)
    assert len(set(np.asarray(picked).tolist())) == 2
    assert set(committee.predict(X).tolist()) <= set(labels)
    assert committee.vote(X).shape == (8, 2)
