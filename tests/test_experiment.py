"""The experiment runner: one run (``modal_vlm.experiment``), settings, data, the run
directory, learning curves and checkpointed multi-run experiments (``modal_vlm.runner``)."""
import csv
import io
import json
import warnings

import numpy as np
import pytest
from modAL.uncertainty import uncertainty_sampling
from PIL import Image

from modal_vlm.experiment import round_seed, run_active_learning
from modal_vlm.runner import RunConfig, RunDirectory, RunDirectoryError, load_run_data, run_experiment
from modal_vlm.runner.curves import plot_learning_curves, summarize
from modal_vlm.runner.rundir import CONFIG, ROUNDS_CSV, ROUNDS_JSON

TINY = {"model_name": "tiny-vit", "n_ctx": 2, "max_epochs": 2, "batch_size": 4}


def write_image_folder(root, classes=("car", "cat", "dog"), per_class=10, seed=0):
    """Random 16x16 PNG images, ``per_class`` per class folder; returns ``root``."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i:02d}.png")
    return root


def without_timings(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "images")


# -- one run ------------------------------------------------------------------------------

def test_run_records_every_round_and_resumes_exactly(make_clf, images):
    X, y = images
    X_pool, y_pool, X_test, y_test = X[:9], y[:9], X[9:], y[9:]
    clf = make_clf(max_epochs=2)
    seen = []
    history = run_active_learning(clf, "entropy", X_pool, y_pool, X_test, y_test, rounds=3,
                                  budget=2, random_state=3, on_round=seen.append)
    assert seen == history and [r["round"] for r in history] == [0, 1, 2, 3]
    labeled = [i for r in history for i in r["queried"]]
    assert len(set(labeled)) == 6 and history[-1]["class_counts"] == np.bincount(y_pool[labeled], minlength=3).tolist()
    assert (history[0]["seconds"]["encode"] > 0
            and set(history[1]["seconds"]) == {"encode", "query", "train", "evaluate"})
    assert len(history[-1]["per_class_accuracy"]) == 3
    assert history[2]["queried_labels"] == y_pool[history[2]["queried"]].tolist()
    for done in (1, 2):
        resumed = run_active_learning(clf, "entropy", X_pool, y_pool, X_test, y_test, rounds=3,
                                      budget=2, random_state=3, history=history[:done])
        assert without_timings(resumed) == without_timings(history)


def pseudo_labeling(seen):
    """A strategy double using the pseudo-label hook: random oracle picks, the next two pool
    positions pseudo-labeled 0; it notes each call's pool size and labeled set."""
    def strategy(learner, X_pool, n_instances, random_state=None):
        seen.append((len(X_pool), [] if learner.y_training is None else learner.y_training.tolist()))
        order = np.random.RandomState(random_state).permutation(len(X_pool))
        return order[:n_instances], {"pseudo_labeled": order[n_instances:n_instances + 2],
                                     "pseudo_labels": np.zeros(2, dtype=int)}
    return strategy


def test_pseudo_labels_train_outside_the_budget_and_resume_exactly(make_clf):
    rng = np.random.default_rng(1)
    X, y = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), np.arange(30) % 3
    seen = []
    run = dict(rounds=3, budget=2, first_round="strategy", random_state=5)
    args = (make_clf(max_epochs=2), pseudo_labeling(seen), X[:24], y[:24], X[24:], y[24:])
    history = run_active_learning(*args, **run)
    # The budget counts the oracle's labels; the pseudo-labels come on top and leave the pool.
    assert [r["n_labeled"] for r in history] == [0, 2, 4, 6]
    assert [r["n_pseudo_labeled"] for r in history] == [0, 2, 4, 6]
    assert [n for n, _ in seen] == [24, 20, 16]
    taken = [i for r in history for i in r["queried"] + r["pseudo_labeled"]]
    assert len(set(taken)) == 12
    for r in history[1:]:
        assert r["pseudo_labels"] == [0, 0] and sum(r["class_counts"]) == r["n_labeled"]
        assert r["pseudo_correct"] == int(np.sum(y[r["pseudo_labeled"]] == 0))
        assert r["queried_labels"] == y[r["queried"]].tolist()
    # They train as labels: the next round's labeled set is the oracle's labels, then the pseudo-labels.
    assert seen[1][1] == history[1]["queried_labels"] + [0, 0]
    assert seen[2][1] == seen[1][1] + history[2]["queried_labels"] + [0, 0]
    # Resuming rebuilds that training set from the records, in the same order.
    uninterrupted = list(seen)
    for done in (1, 2, 3):
        seen.clear()
        resumed = run_active_learning(*args, **run, history=history[:done])
        assert without_timings(resumed) == without_timings(history)
        assert seen == uninterrupted[done - 1:]


def test_pseudo_labels_that_use_up_the_pool_stop_the_run(make_clf, images):
    X, y = images
    with pytest.raises(ValueError, match="round 3: 1 unlabeled images left for a budget of 2; 4 pseudo-labels"):
        run_active_learning(make_clf(max_epochs=1), pseudo_labeling([]), X[:9], y[:9], X[9:], y[9:], rounds=3,
                            budget=2, first_round="strategy", random_state=0)


def test_cbsq_pseudo_labels_in_a_run_that_resumes_exactly(make_clf, images):
    X, y = images
    run = dict(rounds=3, budget=2, first_round="strategy", random_state=3)
    history = run_active_learning(make_clf(max_epochs=2), "cbsq", X[:9], y[:9], X[9:], y[9:], **run)
    assert history[-1]["n_labeled"] == 6 and history[2]["n_pseudo_labeled"] > 0
    for done in (1, 2, 3):
        resumed = run_active_learning(make_clf(max_epochs=2), "cbsq", X[:9], y[:9], X[9:], y[9:], **run,
                                      history=history[:done])
        assert without_timings(resumed) == without_timings(history)


def test_cold_start_with_a_modal_strategy(make_clf, images):
    # modAL's own strategies take no random_state; "strategy" queries round 1 from zero-shot.
    X, y = images
    history = run_active_learning(make_clf(max_epochs=1), uncertainty_sampling, X[:9], y[:9], X[9:], y[9:],
                                  rounds=1, budget=2, first_round="strategy", random_state=0)
    assert history[1]["n_labeled"] == 2


def test_round_seeds_differ_by_run_and_round():
    seeds = {round_seed(seed, round_) for seed in range(3) for round_ in range(1, 9)}
    assert len(seeds) == 24 and round_seed(None, 1) is None


@pytest.mark.parametrize("kwargs, message", [
    ({"rounds": 5, "budget": 2}, r"budget x rounds = 2 x 5 = 10 labels do not fit a pool of 9"),
    ({"first_round": "zero-shot"}, "first_round must be one of"),
    ({"history": [{"round": 1, "queried": [0]}]}, "rounds 0, 1, 2"),
    ({"query_strategy": lambda learner, X, n_instances: np.zeros(n_instances, dtype=int)},
     "expected 2 distinct positions"),
    ({"query_strategy": "nope"}, r"Unknown strategy 'nope'; use one of \['random'"),
    ({"query_strategy": lambda learner, X, n_instances: (np.arange(n_instances),
                                                        {"pseudo_labeled": [1], "pseudo_labels": [0]})},
     r"pseudo-labeled positions \[1\] as \[0\]; expected .* none of them queried"),
    ({"query_strategy": lambda learner, X, n_instances: (np.arange(n_instances),
                                                        {"pseudo_labeled": [5], "pseudo_labels": [7]})},
     r"pseudo-labeled positions \[5\] as \[7\]; .*labeled with classes_"),
    ({"query_strategy": lambda learner, X, n_instances: (np.arange(n_instances), {"pseudo_labeled": [5]})},
     "must hold both 'pseudo_labeled' and 'pseudo_labels'"),
    ({"history": [{"round": 0, "queried": [], "pseudo_labeled": [3], "pseudo_labels": []}]},
     "1 pseudo_labeled indices but 0 pseudo_labels"),
])
def test_run_rejects_bad_arguments(make_clf, images, kwargs, message):
    X, y = images
    arguments = {"query_strategy": "entropy", "rounds": 2, "budget": 2, "first_round": "strategy", **kwargs}
    with pytest.raises(ValueError, match=message):
        run_active_learning(make_clf(), arguments.pop("query_strategy"), X[:9], y[:9], X[9:], y[9:], **arguments)


# -- settings -----------------------------------------------------------------------------

def test_toml_config_with_relative_paths_and_overrides(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('data = "images"\nstrategies = ["cec", "random"]\nrounds = 4\n\n'
                    '[classifier]\nmodel_name = "tiny-vit"\nmax_epochs = 5\n')
    config = RunConfig.from_toml(path).override(seeds=[7], classifier={"max_epochs": 1}).validate()
    assert config.data == str(tmp_path / "images")
    assert (config.strategies, config.seeds, config.rounds) == (("cec", "random"), (7,), 4)
    assert config.classifier == {"model_name": "tiny-vit", "max_epochs": 1}


@pytest.mark.parametrize("values, message", [
    ({"strategies": ["cec", "bogus"]}, r"Unknown strategy 'bogus'; use one of \['random'"),
    ({"classifier": {"model_name": "ViT-Q-99"}}, r"unknown model 'ViT-Q-99'; valid: .*tiny-vit"),
    ({"classifier": {"random_state": 1}}, "set by the runner"),
    ({"seeds": [0, 0]}, "seeds repeats a value"),
    ({"rounds": 0}, "rounds must be an integer >= 1"),
    ({"test_size": 1.5}, "test_size must be a fraction"),
    ({"on_bad_image": "ignore"}, r"on_bad_image must be one of \['fail', 'skip'\]"),
])
def test_invalid_settings_say_what_is_valid(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig().override(**values).validate()


def test_unknown_setting_and_bad_toml(tmp_path):
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['round'\]; valid: \['data'"):
        RunConfig().override(round=3)
    (tmp_path / "bad.toml").write_text("rounds = = 3")
    with pytest.raises(ValueError, match="is not valid TOML"):
        RunConfig.from_toml(tmp_path / "bad.toml")


# -- data ---------------------------------------------------------------------------------

def test_stratified_split_without_test_folder(folder):
    data = load_run_data(RunConfig(data=str(folder), test_size=0.3, split_seed=1))
    assert data.class_names == ["car", "cat", "dog"]
    assert np.bincount(data.y_test).tolist() == [3, 3, 3] and len(data.y_pool) == 21
    assert not set(data.X_pool) & set(data.X_test)
    again = load_run_data(RunConfig(data=str(folder), test_size=0.3, split_seed=1))
    assert again.X_test.tolist() == data.X_test.tolist()


def test_test_folder_with_the_same_classes(tmp_path, folder):
    test = write_image_folder(tmp_path / "test", classes=("car", "cat", "dog", "extra"), per_class=4, seed=1)
    data = load_run_data(RunConfig(data=str(folder), test_data=str(test), max_per_class=6, max_test_per_class=2))
    assert np.bincount(data.y_pool).tolist() == [6, 6, 6] and np.bincount(data.y_test).tolist() == [2, 2, 2]
    partial = write_image_folder(tmp_path / "partial", classes=("car", "cat"), per_class=1)
    with pytest.raises(FileNotFoundError, match=r"class folder\(s\) \['dog'\] not found"):
        load_run_data(RunConfig(data=str(folder), test_data=str(partial)))


def test_unreadable_images_fail_or_are_skipped(folder):
    bad = folder / "cat" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"1 unreadable image file\(s\) in .*broken\.jpg: cannot identify"):
        load_run_data(RunConfig(data=str(folder)))
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\)"):
        data = load_run_data(RunConfig(data=str(folder), on_bad_image="skip"))
    assert list(data.skipped) == [str(bad)] and str(bad) not in data.X_pool.tolist() + data.X_test.tolist()
    assert data.summary()["skipped_images"] == data.skipped


def test_a_class_left_without_readable_images_is_an_error(folder):
    for path in (folder / "dog").iterdir():
        path.write_bytes(b"garbage")
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"class\(es\) \['dog'\] .* no readable image"):
        warnings.simplefilter("ignore")
        load_run_data(RunConfig(data=str(folder), on_bad_image="skip"))


@pytest.mark.parametrize("setup, error, message", [
    (lambda root: None, FileNotFoundError, "does not exist"),
    (lambda root: root.mkdir(), ValueError, "has no class sub-folders"),
    (lambda root: (root / "cat").mkdir(parents=True), ValueError, "holds no image"),
])
def test_missing_or_empty_folders(tmp_path, setup, error, message):
    setup(tmp_path / "data")
    with pytest.raises(error, match=message):
        load_run_data(RunConfig(data=str(tmp_path / "data")))


# -- run directory and curves -------------------------------------------------------------

def test_run_directory_refuses_other_settings_and_damage(tmp_path):
    header = {"config": {"rounds": 8}, "data": {"class_names": ["a", "b"]}, "versions": {"torch": "1"}}
    run_dir = RunDirectory(tmp_path / "run")
    assert run_dir.open(header) == []
    (tmp_path / "run" / "notes.txt").write_text("mine")
    # versions are recorded, not compared
    assert RunDirectory(tmp_path / "run").open({**header, "versions": {"torch": "2"}}) == []
    with pytest.raises(RunDirectoryError, match=r"other settings \(config.rounds: 8 -> 4\)"):
        RunDirectory(tmp_path / "run").open({**header, "config": {"rounds": 4}})
    assert RunDirectory(tmp_path / "run").open({**header, "config": {"rounds": 4}}, overwrite=True) == []
    assert json.loads((tmp_path / "run" / CONFIG).read_text())["config"] == {"rounds": 4}
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"   # overwrite removes run files only
    (tmp_path / "run" / CONFIG).unlink()
    (tmp_path / "run" / ROUNDS_JSON).write_text("[]")
    with pytest.raises(RunDirectoryError, match="has rounds.json but no config.json"):
        RunDirectory(tmp_path / "run").open(header)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_summary_and_plot(tmp_path):
    records = [{"strategy": s, "seed": seed, "round": k, "n_labeled": 3 * k, "accuracy": 0.3 + 0.1 * k + 0.02 * seed}
               for s in ("cec", "random") for seed in (0, 1) for k in range(3)]
    rows = summarize(records + [{**records[0], "seed": 9}])   # an unfinished seed is left out
    assert [(r["strategy"], r["n_seeds"], r["n_labeled"]) for r in rows] == [("cec", 2, 6), ("random", 2, 6)]
    assert (rows[0]["final_accuracy_mean"] == pytest.approx(0.51)
            and rows[0]["final_accuracy_std"] == pytest.approx(0.01))
    assert rows[0]["aulc_mean"] == pytest.approx(0.41)
    path = plot_learning_curves(records, tmp_path / "curve.png", title="test")
    assert Image.open(path).size[0] > 300


# -- experiments --------------------------------------------------------------------------

def test_experiment_writes_checkpoints_and_resumes(tmp_path, folder):
    config = RunConfig(data=str(folder), strategies=("cec", "random"), seeds=(0, 1), rounds=2,
                       classifier=TINY)
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert {p.name for p in result.path.iterdir()} == {"config.json", "rounds.json", "rounds.csv",
                                                       "summary.json", "learning_curve.png"}
    header = json.loads((result.path / CONFIG).read_text())
    assert header["config"]["budget"] == 3 and header["config"]["classifier"]["max_epochs"] == 2
    assert header["data"]["n_pool"] == 24 and header["data"]["skipped_images"] == {}
    assert len(result.records) == 2 * 2 * 3 and [r["strategy"] for r in result.summary] == ["cec", "random"]
    first_query = result.records[1]
    assert all(p.startswith(str(folder)) for p in first_query["queried_files"])
    csv_lines = (result.path / ROUNDS_CSV).read_text().splitlines()
    assert len(csv_lines) == 13 and "accuracy[cat]" in csv_lines[0] and "labels[dog]" in csv_lines[0]

    with pytest.raises(RunDirectoryError, match="already holds this finished run"):
        run_experiment(config, tmp_path / "run", progress=False)
    with pytest.raises(RunDirectoryError, match=r"other settings \(config.rounds: 2 -> 3\)"):
        run_experiment(config.override(rounds=3), tmp_path / "run", progress=False)

    # A crash after the 5th checkpoint (cec seed 1, round 1): resume from what is on disk.
    stored = json.loads((result.path / ROUNDS_JSON).read_text())
    (result.path / ROUNDS_JSON).write_text(json.dumps(stored[:5]))
    (result.path / "summary.json").unlink()
    resumed = run_experiment(config, tmp_path / "run", progress=False)
    assert without_timings(resumed.records) == without_timings(result.records)
    assert resumed.summary == result.summary


def test_experiment_records_pseudo_labels_and_resumes_from_them(tmp_path, folder):
    config = RunConfig(data=str(folder), strategies=("cbsq",), seeds=(0,), rounds=3, classifier=TINY)
    result = run_experiment(config, tmp_path / "run", progress=False)
    second = result.records[2]   # round 1 is random (the protocol); CB+SQ pseudo-labels from round 2
    assert second["n_labeled"] == 6 and second["n_pseudo_labeled"] == len(second["pseudo_labeled"]) > 0
    assert second["pseudo_labeled_files"] == load_run_data(config).X_pool[second["pseudo_labeled"]].tolist()
    rows = list(csv.DictReader(io.StringIO((result.path / ROUNDS_CSV).read_text())))
    assert rows[2]["pseudo_labeled"] == " ".join(map(str, second["pseudo_labeled"]))
    assert rows[2]["pseudo_labels"] == " ".join(map(str, second["pseudo_labels"]))
    assert int(rows[2]["n_pseudo_labeled"]) == second["n_pseudo_labeled"]
    assert int(rows[2]["pseudo_correct"]) == second["pseudo_correct"] and rows[1]["pseudo_labeled"] == ""
    # A crash after round 2: round 3 trains on the pseudo-labels read back from rounds.json.
    stored = json.loads((result.path / ROUNDS_JSON).read_text())
    (result.path / ROUNDS_JSON).write_text(json.dumps(stored[:3]))
    (result.path / "summary.json").unlink()
    resumed = run_experiment(config, tmp_path / "run", progress=False)
    assert without_timings(resumed.records) == without_timings(result.records)


def test_experiment_rejects_bad_setups_before_writing(tmp_path, folder):
    base = RunConfig(data=str(folder), seeds=(0,), classifier=TINY)
    with pytest.raises(ValueError, match=r"budget x rounds = 3 x 9 = 27 labels do not fit a pool of 24"):
        run_experiment(base.override(rounds=9), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"cannot build the classifier: Unknown parameter\(s\) \['n_ctxx'\]"):
        run_experiment(base.override(classifier={"n_ctxx": 3}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# -- what the labels bought (modal_vlm.evaluation in the runner) --------------------------

def test_monitor_records_estimates_and_a_resumed_run_repeats_them(make_clf):
    from modal_vlm.evaluation import LoopMonitor

    rng = np.random.default_rng(5)
    X, y = rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8), np.arange(60) % 3
    clf = make_clf(max_epochs=2)
    run = dict(rounds=6, budget=5, random_state=0)
    history = run_active_learning(clf, "entropy", X[:48], y[:48], X[48:], y[48:], **run,
                                  monitor=LoopMonitor(0.4, random_state=0))
    assert [len(r["audit"]) for r in history] == [0, 5, 2, 2, 2, 2, 2]   # round 1 is random: all audit
    for record in history[1:]:
        assert set(record["audit"]) <= set(record["queried"]) and len(record["queried_proba"]) == 5
        assert set(record["calibration"]) == {"temperature", "ece", "ece_uncalibrated"}
        assert set(record["suspect_labels"]) <= {i for r in history for i in r["queried"]}
    assert history[0]["estimate"] is None and history[0]["kappa"] is None and history[1]["kappa"] is not None
    assert history[-1]["estimate"]["n"] == 8   # rounds 3-6: calibrated from the 10th label on
    for done in (2, 4):
        resumed = run_active_learning(clf, "entropy", X[:48], y[:48], X[48:], y[48:], **run,
                                      monitor=LoopMonitor(0.4, random_state=0), history=history[:done])
        assert without_timings(resumed) == without_timings(history)


def test_no_audit_share_leaves_the_strategy_alone(make_clf, images):
    from modal_vlm.evaluation import LoopMonitor

    X, y = images
    clf = make_clf(max_epochs=1)
    plain = run_active_learning(clf, "entropy", X[:9], y[:9], X[9:], y[9:], rounds=3, budget=2, random_state=1)
    watched = run_active_learning(clf, "entropy", X[:9], y[:9], X[9:], y[9:], rounds=3, budget=2, random_state=1,
                                  monitor=LoopMonitor(0.0, random_state=1))
    assert [r["queried"] for r in watched] == [r["queried"] for r in plain]
    assert [r["accuracy"] for r in watched] == [r["accuracy"] for r in plain]


def test_label_noise_flips_the_same_labels_for_every_strategy(tmp_path, folder):
    config = RunConfig(data=str(folder), strategies=("entropy", "random"), seeds=(3,), rounds=2,
                       label_noise=0.25, classifier=TINY)
    result = run_experiment(config, tmp_path / "run", progress=False)
    data = load_run_data(config)
    from modal_vlm.runner import oracle_labels

    flipped = set(np.flatnonzero(oracle_labels(data.y_pool, 0.25, 3, 3) != data.y_pool).tolist())
    assert len(flipped) == 6
    for record in result.records:
        asked = {i for r in result.records if r["strategy"] == record["strategy"] and r["round"] <= record["round"]
                 for i in r["queried"]}
        assert record["flipped_labels"] == sorted(asked & flipped)
        wrong = [i for i, label in zip(record["queried"], record["queried_labels"]) if label != data.y_pool[i]]
        assert wrong == [i for i in record["queried"] if i in flipped]   # the oracle's slips, as recorded
    summary = json.loads((result.path / "summary.json").read_text())
    assert all("stop_round" in row and "n_seeds_stable" in row for row in summary)
    header = (result.path / ROUNDS_CSV).read_text().splitlines()[0]
    assert header.endswith("estimate,estimate_low,estimate_high,estimate_n,stable,n_suspect")


@pytest.mark.parametrize("values, message", [
    ({"audit_fraction": 1.0}, r"audit_fraction must be a fraction in \[0, 1\), got 1.0"),
    ({"audit_fraction": -0.1}, r"audit_fraction must be a fraction in \[0, 1\)"),
    ({"label_noise": 1}, r"label_noise must be a fraction in \[0, 1\), got 1"),
    ({"budget": 1}, "leaves rounds with no pick for the query strategy"),
])
def test_bad_audit_and_noise_settings_change_nothing(tmp_path, folder, values, message):
    with pytest.raises(ValueError, match=message):
        run_experiment(RunConfig(data=str(folder), seeds=(0,), classifier=TINY).override(**values),
                       tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_directory_from_before_audit_picks_resumes_only_without_them(tmp_path, folder):
    config = RunConfig(data=str(folder), seeds=(0,), rounds=1, audit_fraction=0.0, classifier=TINY)
    result = run_experiment(config, tmp_path / "run", progress=False)
    stored = json.loads((result.path / CONFIG).read_text())
    for key in ("audit_fraction", "label_noise"):
        del stored["config"][key]   # as written by an earlier version
    (result.path / CONFIG).write_text(json.dumps(stored))
    (result.path / "summary.json").unlink()
    with pytest.raises(RunDirectoryError, match=r"config.audit_fraction: 0.0 -> 0.2"):
        run_experiment(config.override(audit_fraction=0.2), tmp_path / "run", progress=False)
    assert run_experiment(config, tmp_path / "run", progress=False).records == result.records


def test_the_plot_draws_the_estimate_beside_the_truth(tmp_path):
    from modal_vlm.runner.curves import estimate_curves

    records = [{"strategy": "cec", "seed": seed, "round": k, "n_labeled": 10 * k, "accuracy": 0.4 + 0.05 * k,
                "estimate": None if k == 0 else {"accuracy": 0.38 + 0.05 * k, "low": 0.3 + 0.05 * k,
                                                 "high": 0.5 + 0.05 * k, "n": 4 * k}}
               for seed in (0, 1) for k in range(3)]
    curve = estimate_curves(records)["cec"]
    assert curve["n_labeled"] == [10, 20] and curve["low"] == pytest.approx([0.35, 0.4])
    assert estimate_curves([{**r, "estimate": None} for r in records]) == {}
    assert Image.open(plot_learning_curves(records, tmp_path / "curve.png")).size[0] > 300
