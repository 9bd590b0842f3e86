"""The ``modal-vlm`` command line: ``demo``, ``run``, its errors, and resuming a killed run."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from test_experiment import without_timings, write_image_folder

from modal_vlm import cli
from modal_vlm.runner import CRASH_AFTER_ROUND_ENV

TINY_FLAGS = ["--model", "tiny-vit", "--epochs", "2", "--batch-size", "4", "--param", "n_ctx=2"]


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "images")


def run_args(folder, out, *extra):
    return ["run", "--data", str(folder), "--out", str(out), *TINY_FLAGS, *extra]


def test_demo_prints_a_table_and_writes_a_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEMO_MODEL", "tiny-vit")   # the offline model's loading is slow
    argv = ["demo", "--rounds", "2", "--epochs", "1", "--pool-per-class", "4", "--test-per-class", "2",
            "--out", str(tmp_path / "demo")]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "\r" not in out + err   # not a terminal: the per-round lines without progress bars
    assert ("40 unlabeled CIFAR-10 images, 20 test images, 2 rounds x 10 labels from the zero-shot "
            "start, cec vs. random") in out
    assert "strategy      seed  round  labels  accuracy" in out and "final accuracy" in out
    assert (tmp_path / "demo" / "learning_curve.png").stat().st_size > 0
    assert cli.main(argv + ["--quiet"]) == 0   # a new demo replaces the old one
    assert capsys.readouterr().out == ""


def test_run_with_config_file_and_overrides(tmp_path, folder, capsys):
    config = tmp_path / "study.toml"
    config.write_text('data = "images"\nstrategies = ["entropy", "random"]\nseeds = [0, 1]\nrounds = 3\n'
                      '[classifier]\nmodel_name = "tiny-vit"\nn_ctx = 2\nbatch_size = 4\nmax_epochs = 5\n')
    out = tmp_path / "run"
    assert cli.main(["run", "--config", str(config), "--rounds", "2", "--epochs", "1", "--budget", "2",
                     "--seed", "4", "--first-round", "strategy", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "entropy           1       4" in printed and f"results in {out}" in printed
    settings = json.loads((out / "config.json").read_text())["config"]
    assert settings["data"] == str(folder) and settings["strategies"] == ["entropy", "random"]
    assert (settings["seeds"], settings["rounds"], settings["budget"]) == ([4], 2, 2)
    assert settings["classifier"]["max_epochs"] == 1 and settings["first_round"] == "strategy"


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "cec", "magic"], r"Unknown strategy 'magic'; use one of \['random', 'entropy'"),
    (["--model", "not-a-model"], r"unknown model 'not-a-model'; valid: conse-efficientnet-lite0-minilm, "),
    (["--budget", "4", "--rounds", "7"], r"budget x rounds = 4 x 7 = 28 labels do not fit a pool of 24"),
])
def test_run_errors_name_the_problem(tmp_path, folder, capsys, extra, message):
    assert cli.main(run_args(folder, tmp_path / "run", "--quiet", *extra)) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_param_needs_key_and_value(tmp_path, folder, capsys):
    with pytest.raises(SystemExit):
        cli.main(run_args(folder, tmp_path / "run", "--param", "lr"))
    assert "expected KEY=VALUE, got 'lr'" in capsys.readouterr().err


def test_bad_data_folders(tmp_path, folder, capsys):
    assert cli.main(run_args(tmp_path / "missing", tmp_path / "run", "--quiet")) == 2
    assert "image folder" in capsys.readouterr().err
    (folder / "cat" / "broken.png").write_bytes(b"\x89PNG broken")
    assert cli.main(run_args(folder, tmp_path / "run", "--quiet", "--seed", "0", "--rounds", "1")) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "--on-bad-image skip" in err
    assert cli.main(run_args(folder, tmp_path / "run", "--quiet", "--seed", "0", "--rounds", "1",
                             "--on-bad-image", "skip")) == 0
    assert "modal-vlm: warning: skipped 1 unreadable image file(s)" in capsys.readouterr().err
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert list(data["skipped_images"]) == [str(folder / "cat" / "broken.png")]


def test_finished_run_is_never_overwritten_silently(tmp_path, folder, capsys):
    argv = run_args(folder, tmp_path / "run", "--quiet", "--seed", "0", "--rounds", "1")
    assert cli.main(argv) == 0
    assert cli.main(argv) == 2
    assert "already holds this finished run" in capsys.readouterr().err
    assert cli.main(argv[:-1] + ["2"]) == 2
    assert "other settings (config.rounds: 1 -> 2)" in capsys.readouterr().err
    assert cli.main(argv[:-1] + ["2", "--overwrite"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["rounds"] == 2


def test_interrupt_says_how_to_resume(tmp_path, folder, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("modal_vlm.runner.run_active_learning", interrupted)
    assert cli.main(run_args(folder, tmp_path / "run", "--quiet")) == 130
    assert "run the same command again to resume" in capsys.readouterr().err.lower()


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    folder = write_image_folder(tmp_path / "images", seed=11)
    argv = ["--strategy", "cec", "random", "--seed", "0", "--rounds", "3", "--quiet"]
    killed = run_args(folder, tmp_path / "killed", *argv)
    crashed = subprocess.run([sys.executable, "-m", "modal_vlm.cli", *killed], capture_output=True, text=True,
                             env={**os.environ, CRASH_AFTER_ROUND_ENV: "2"}, timeout=300)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    checkpoint = json.loads((tmp_path / "killed" / "rounds.json").read_text())
    assert [(r["strategy"], r["round"]) for r in checkpoint] == [("cec", 0), ("cec", 1), ("cec", 2)]

    assert cli.main(killed) == 0   # the same command again: resumes from cec round 3
    assert cli.main(run_args(folder, tmp_path / "straight", *argv)) == 0
    resumed, straight = (json.loads((tmp_path / run / "rounds.json").read_text()) for run in ("killed", "straight"))
    assert len(straight) == 8 and without_timings(resumed) == without_timings(straight)
