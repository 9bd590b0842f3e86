"""Re-run the two trials of issue 25 (a new user's first hour, an adversarial bad day) and print
their table: every row, what the trial found, what happens now, and the tests that check it.

Each row is re-run by the tests marked ``@pytest.mark.trial("<row>")`` (they feed the row
the trial's input: a damaged cache shard, two windows on one batch, an image id of 10^23...
and assert the answer: accepted correctly, or a clear error naming the file, parameter or
value, with nothing changed). This script runs exactly those tests and groups their
outcomes by row; a row passes when all of its tests pass. The exit status is 1 if a row
fails, so CI can run it::

    python tools/trials.py                  # every row (a few minutes on 2 cores)
    python tools/trials.py --quick          # without the integration test (the README's quick
                                            # start on the offline model, about a minute)
    python tools/trials.py --out tools/results/trials.md

Rows without a test say why (item 4 of the first hour, progress bars, belongs to issue 27).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Every row of both trials: (row, what the trial found, what happens now). The row names
#: are the ``trial`` markers of the tests.
ROWS = [
    ("first-hour 1", "offline, the default ViT-B-32 spent ~60 s in hub retries, then 154 lines",
     "fails at once (cache checked, hub probed 3 s, HF_HUB_OFFLINE honoured), one line naming the offline "
     "model and pretrained=FILE; the CLI prints `modal-vlm: error: ...`; cached weights load offline"),
    ("first-hour 2", "the README's snippet could not run (np, X_pool, oracle_labels undefined)",
     "a pasteable quick start that runs offline on the embedded sample; docs show the same text"),
    ("first-hour 3", "the README was benchmark numbers and shim internals before Inputs",
     "install -> demo -> quick start -> CLI -> labeling app -> links; numbers in docs/results.md; CUDA "
     "wheels and the CPU-only torch recipe"),
    ("first-hour 4", "no progress bars in demo/run; no time left in the app",
     "not in this issue: issue 27 owns progress bars and the app's time left"),
    ("first-hour 5: pool count", "'Chosen by cec from 68 unlabeled images' in a 60-image folder, drifting",
     "the pool a batch was chosen from, counted once, constant while labeling"),
    ("first-hour 5: Label Studio import of the open batch", "the page kept asking for imported images",
     "imports (and review edits) of open-batch images count for the batch and can finish it"),
    ("first-hour 5: export messages", "`label export` said what it wrote only for model",
     "every export says `wrote FILE (N rows, labels, tasks or choices)`"),
    ("first-hour 5: Label Studio tasks export", "the tasks export silently held only the open batch",
     "it says which batch it holds and how to export another (--batch ID)"),
    ("first-hour 6", "prompt_committee taught with class names failed inside modAL",
     "works: its committee's votes keep the members' labels"),
    ("first-hour 7: empty X", "an empty X said 'feature vectors are not images'", "'X is empty', whatever its shape"),
    ("first-hour 7: per-class column", "the table's 'per-class' column was mean per-class accuracy",
     "the column says 'mean per-class acc.'"),
    ("first-hour 7: plot", "the band was ± 1 std without saying so; the title was the --data basename",
     "the legend says 'band ± 1 std'; the title names the folder with its parent"),
    ("first-hour 7: demo header", "demo printed its header before refusing an existing run",
     "the header is printed once the run is accepted"),
    ("bad-day 1", "a damaged cache shard blocked all encoding for good; no fsync; a full disk lost embeddings",
     "the shard is set aside (warning naming it) and its images encoded again; fsync before rename; a full "
     "disk keeps embeddings in memory with a warning, no tmp file left"),
    ("bad-day 2", "two windows on one batch overwrote each other silently",
     "a label names the event the page saw; a conflicting one is 409 and the page shows the current answer"),
    ("bad-day 3", "class names differing only in case or spaces were accepted (ties, predict says the first)",
     "one rule for the estimator, the runner and the app: refused, naming both names"),
    ("bad-day 4", "EXIF orientation ignored: phone photos reached the model sideways",
     "applied when encoding (files, PIL images) and in thumbnails; keys of files without EXIF unchanged"),
    ("bad-day 5", "CEC crashed on low-diversity pools once labels existed",
     "a full batch of distinct indices from every strategy"),
    ("bad-day 6", "a file rewritten with the same size and mtime kept its old embedding",
     "detected (inode and ctime too): encoded again"),
    ("bad-day 7", "damaged run files: JSON errors without a file name, AttributeError, IndexError, foreign records",
     "the file and record named, foreign records refused, nothing changed"),
    ("bad-day 8", "boolean arrays taken as pixel values 0/1", "refused: a mask is not an image"),
    ("bad-day 9", "a damaged labels.sqlite gave a bare traceback",
     "the file named, nothing changed, `sqlite3 FILE .recover` and the export suggested"),
    ("bad-day 10", "HTTP 500s: id 10^23, NaN in JSON, Label Studio lists, a decompression bomb",
     "each a 4xx naming the problem"),
    ("also: import modal_vlm shims", "a bare `import modal_vlm` applied no modAL shim (the trial: 46 of 61; "
     "the tool importing as a user: 0 of 61, the suite does not import)",
     "an import hook applies them as modAL loads (61 of 61, tools/run_modal_suite.py imports as a user); "
     "torch, scikit-learn and modAL stay unimported"),
    ("also: user files in --out", "demo/run overwrote a user's summary.json, rounds.csv, learning_curve.png",
     "a folder holding them without a run is refused without --overwrite"),
    ("also: cec k/top_n", "cec_query(k<=0) / top_n<=0 accepted silently", "refused, naming the value"),
    ("also: load_params n_ctx", "an n_ctx=2 state loaded into an n_ctx=4 estimator",
     "accepted correctly: n_ctx is unused under ctx_init='template' (the same 4-token context); where it "
     "is the context length, another is refused"),
    ("also: set_params(class_names) on a fitted model", "the training was dropped silently",
     "a warning at the set_params call"),
    ("also: plot-only failure", "a run whose only failure was the plot needed --overwrite",
     "running it again makes what is missing"),
    ("also: symlink loop in --data", "dropped without being listed", "listed as unreadable (fail or skip)"),
    ("also: CORP header", "images could be embedded by any web page", "Cross-Origin-Resource-Policy: same-origin"),
    ("also: tensor size", "preprocessed tensors of the wrong size gave torch's kernel-size error",
     "refused, naming the expected size"),
]
#: Rows that no test re-runs here, and why.
NOT_HERE = {"first-hour 4": "issue 27"}


class TrialCollector:
    """pytest plugin: the outcome of every test, under each trial row it is marked with."""

    def __init__(self):
        self.outcomes = defaultdict(list)   # row -> [(test id, outcome)]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = (yield).get_result()
        rows = [marker.args[0] for marker in item.iter_markers("trial")]
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = "skipped" if report.skipped else report.outcome
            for row in rows:
                self.outcomes[row].append((item.nodeid, outcome))


def table(outcomes) -> tuple[str, bool]:
    """The markdown table of the rows and whether every row with tests passed."""
    lines = ["| row | the trial found | now | tests |", "|---|---|---|---|"]
    ok = True
    for row, found, now in ROWS:
        results = outcomes.get(row, [])
        if row in NOT_HERE:
            verdict = f"not in this issue ({NOT_HERE[row]})"
        elif not results:
            verdict, ok = "**no test ran**", False
        else:
            passed = sum(outcome == "passed" for _, outcome in results)
            failed = [test for test, outcome in results if outcome != "passed"]
            verdict = f"{passed} of {len(results)} pass"
            if failed:
                ok = False
                verdict = f"**{verdict}**; failing: " + ", ".join(f"`{test.split('::')[-1]}`" for test in failed[:3])
        lines.append(f"| {row} | {found} | {now} | {verdict} |")
    unknown = sorted(set(outcomes) - {row for row, _, _ in ROWS})
    if unknown:
        lines.append(f"\nTests marked with rows this table does not list: {unknown}")
    return "\n".join(lines) + "\n", ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the integration test(s)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (e.g. -x)")
    args = parser.parse_args(argv)
    marker = "trial and not integration" if args.quick else "trial"
    collector = TrialCollector()
    status = pytest.main(["-q", "-p", "no:cacheprovider", "-m", marker, "--rootdir", str(ROOT),
                          str(ROOT / "tests"), *args.pytest_args], plugins=[collector])
    text, ok = table(collector.outcomes)
    command = "python tools/trials.py" + (" --quick" if args.quick else "")
    text = (f"Issue 25's trials, re-run by the tests marked `trial` (`{command}`).\n\n" + text)
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0 if ok and status in (0, pytest.ExitCode.NO_TESTS_COLLECTED) else 1


if __name__ == "__main__":
    sys.exit(main())
