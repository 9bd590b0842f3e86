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
    assert f"results in {tmp_path / 'demo'}" in out and "replaces" not in out
    assert "strategy      seed  round  labels  accuracy" in out and "final accuracy" in out
    assert (tmp_path / "demo" / "learning_curve.png").stat().st_size > 0
    assert cli.main(argv + ["--quiet"]) == 2   # the rule of `run`: a finished demo stays
    assert "already holds this finished run" in capsys.readouterr().err
    assert cli.main(argv + ["--quiet", "--overwrite"]) == 0
    assert capsys.readouterr().out == ""


def test_demo_never_replaces_a_run_it_did_not_write(tmp_path, folder, monkeypatch, capsys):
    out = tmp_path / "run"
    assert cli.main(run_args(folder, out, "--quiet", "--seed", "0", "--rounds", "1")) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    monkeypatch.setattr(cli, "DEMO_MODEL", "tiny-vit")
    assert cli.main(["demo", "--rounds", "1", "--epochs", "1", "--pool-per-class", "4", "--test-per-class", "2",
                     "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings" in err and "--overwrite" in err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


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
    (["--model", "not-a-model"], r"unknown model 'not-a-model'; valid: linear-conse-efficientnet-lite0-minilm, "
                                 r"conse-efficientnet-lite0-minilm, "),
    (["--budget", "4", "--rounds", "7"], r"budget x rounds = 4 x 7 = 28 labels do not fit a pool of 24"),
    (["--audit-fraction", "1.5"], r"audit_fraction must be a fraction in \[0, 1\), got 1.5"),
    (["--label-noise", "-0.1"], r"label_noise must be a fraction in \[0, 1\), got -0.1"),
    (["--audit-fraction", "0.6", "--budget", "2"], "leaves rounds with no pick for the query strategy"),
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
    argv = ["--strategy", "cbsq", "cec", "random", "--seed", "0", "--rounds", "3", "--quiet"]
    killed = run_args(folder, tmp_path / "killed", *argv)
    crashed = subprocess.run([sys.executable, "-m", "modal_vlm.cli", *killed], capture_output=True, text=True,
                             env={**os.environ, CRASH_AFTER_ROUND_ENV: "2"}, timeout=300)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    checkpoint = json.loads((tmp_path / "killed" / "rounds.json").read_text())
    assert [(r["strategy"], r["round"]) for r in checkpoint] == [("cbsq", 0), ("cbsq", 1), ("cbsq", 2)]
    assert checkpoint[2]["pseudo_labeled"]   # round 3 must train on pseudo-labels read back from disk

    assert cli.main(killed) == 0   # the same command again: resumes from cbsq round 3
    assert cli.main(run_args(folder, tmp_path / "straight", *argv)) == 0
    resumed, straight = (json.loads((tmp_path / run / "rounds.json").read_text()) for run in ("killed", "straight"))
    assert len(straight) == 12 and without_timings(resumed) == without_timings(straight)


def test_ctrl_c_during_training_resumes_to_the_uninterrupted_result(tmp_path):
    folder = write_image_folder(tmp_path / "images", seed=12)
    argv = ["--strategy", "cec", "--seed", "0", "--rounds", "2", "--epochs", "150", "--batch-size", "8"]
    interrupted = run_args(folder, tmp_path / "interrupted", *argv)
    # verbose=2 prints skorch's epoch table: a table row after the second header is an
    # epoch of round 2's training, when Ctrl-C (SIGINT) arrives.
    child = subprocess.Popen([sys.executable, "-m", "modal_vlm.cli", *interrupted, "--param", "verbose=2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    headers = 0
    for line in child.stdout:
        headers += "train_loss" in line
        if headers == 2 and line.split()[:1] and line.split()[0].isdigit():
            child.send_signal(signal.SIGINT)
            break
    out, err = child.communicate(timeout=300)
    assert headers == 2 and child.returncode == 130, err   # not a silent early end of training
    assert "interrupted; finished rounds are saved" in err
    checkpoint = json.loads((tmp_path / "interrupted" / "rounds.json").read_text())
    assert [(r["strategy"], r["round"]) for r in checkpoint] == [("cec", 0), ("cec", 1)]

    assert cli.main(interrupted + ["--quiet"]) == 0   # the same command again: resumes round 2
    assert cli.main(run_args(folder, tmp_path / "straight", *argv, "--quiet")) == 0
    resumed, straight = (json.loads((tmp_path / run / "rounds.json").read_text())
                         for run in ("interrupted", "straight"))
    assert len(straight) == 3 and without_timings(resumed) == without_timings(straight)


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom modal_vlm import cli\ntry:\n    cli.main(['run', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('HEAVY', sorted(m for m in ('torch', 'sklearn', 'skorch', 'open_clip', 'modAL', "
            "'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--on-bad-image fail|skip" in done.stdout and "HEAVY []" in done.stdout, done.stderr


@pytest.mark.parametrize("extra, message", [
    (["--param", "colour=1"], r"Unknown parameter\(s\) \['colour'\]"),
    (["--param", "template='a photo'"], "template must hold exactly one"),
    (["--param", "n_ctx=0"], "n_ctx must be an integer >= 1"),
    (["--first-round", "zero-shot"], "first_round must be one of"),
    (["--on-bad-image", "ignore"], "on_bad_image must be one of"),
    (["--rounds", "2"], r"other settings \(config.rounds: 1 -> 2\)"),
    ([], "already holds this finished run"),
])
def test_settings_are_checked_before_the_backbone_loads(tmp_path, folder, monkeypatch, capsys, extra, message):
    argv = run_args(folder, tmp_path / "run", "--quiet", "--seed", "0", "--rounds", "1")
    assert cli.main(argv) == 0

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr("modal_vlm.model._encoders.get_backbone", no_backbone)   # where backbone_ loads it
    assert cli.main(argv + extra) == 2
    assert re.search(message, capsys.readouterr().err)


def test_result_files_get_the_usual_mode(tmp_path, folder):
    previous = os.umask(0o022)
    try:
        assert cli.main(run_args(folder, tmp_path / "run", "--quiet", "--seed", "0", "--rounds", "1")) == 0
    finally:
        os.umask(previous)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in (tmp_path / "run").iterdir()}
    assert set(modes) >= {"config.json", "rounds.json", "rounds.csv", "summary.json"}
    assert set(modes.values()) == {"0o644"}, modes


def test_demo_trains_the_linear_head_unless_told_otherwise():
    """The demo's learner is the fast linear head, with its own steps, unless told otherwise."""
    parse = cli.build_parser().parse_args
    assert (parse(["demo"]).learner, parse(["demo"]).epochs) == (cli.DEMO_LEARNER, None) == ("linear", None)
    assert parse(["demo", "--learner", "prompt", "--epochs", "auto"]).epochs == "auto"
    assert parse(["demo", "--epochs", "7"]).epochs == 7
