"""Run modAL's own test suite against the installed stack, with and without modal-vlm's shims.

modAL's ``tests/core_tests.py`` (with its ``tests/mock.py`` and ``tests/example_tests``) is
taken from a modAL checkout, never from this project: the suite is modAL's, this script
only runs it. It runs against the *installed* ``modAL`` package (the checkout's own
``modAL/`` is kept off ``sys.path``), once per column, each in a fresh interpreter:

* ``modAL alone``: nothing of modal-vlm imported;
* ``+ <shim>``: the shims of :data:`modal_vlm.compat.PATCHES` applied one more per column,
  in their order, from ``modal_vlm/compat.py`` loaded on its own (so each shim's effect
  shows);
* ``import modal_vlm``: the package imported, as a user does (the statement and nothing else
  of modal-vlm before the suite runs).

It prints a markdown table (passed tests per column, then every test that fails in any
column, with the reason) and, with ``--out``, writes it to a file. Get modAL's tests at the
tag of the installed version, e.g.::

    git clone https://github.com/modAL-python/modAL /tmp/modAL   # or any local copy
    python tools/run_modal_suite.py /tmp/modAL --out tools/results/modal_suite.md

or straight from a (bare) git repository and a tag: ``python tools/run_modal_suite.py
/path/to/modAL.git@0.4.1``. It is a tool, not a test: CI has no network to fetch modAL's
repository, and the project's own tests cover each shim on their own
(``tests/test_modal_loop.py``). A few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import unittest
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT / "modal_vlm" / "compat.py"
SUITE = "core_tests"


# -- child: one run of the suite --------------------------------------------------------------

def _load_compat():
    spec = importlib.util.spec_from_file_location("modal_vlm_compat_standalone", COMPAT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outcomes(tests_dir: Path) -> dict:
    """``{test id: "pass" | "<kind>: <last line of the traceback>"}`` of one run."""
    sys.path.insert(0, str(tests_dir))
    try:
        suite_module = importlib.import_module(SUITE)
    except Exception as exc:  # the suite cannot even be imported: every test errors
        return {"__import__": f"import of {SUITE} fails: {type(exc).__name__}: {exc}".splitlines()[0]}

    class Result(unittest.TestResult):
        def __init__(self):
            super().__init__()
            self.outcomes = {}

        def _record(self, test, outcome):
            self.outcomes[test.id().removeprefix(f"{SUITE}.")] = outcome

        def addSuccess(self, test):
            self._record(test, "pass")

        def addFailure(self, test, err):
            self._record(test, f"fail: {_reason(err)}")

        def addError(self, test, err):
            self._record(test, f"error: {_reason(err)}")

        def addSkip(self, test, reason):
            self._record(test, f"skipped: {reason}")

    result = Result()
    unittest.defaultTestLoader.loadTestsFromModule(suite_module).run(result)
    return result.outcomes


def _reason(err) -> str:
    exc_type, exc, _ = err
    text = f"{exc_type.__name__}: {exc}".strip().splitlines()[0]
    return text[:160]


def child(mode: str, tests_dir: Path, out: Path) -> None:
    if mode == "modal_vlm":
        import modal_vlm  # noqa: F401  exactly what a user writes: nothing else of it is touched
        applied = None    # read after the suite ran, so that reading it changes nothing
    elif mode:
        compat = _load_compat()
        applied = mode.split(",")
        for name, needed, apply in compat.PATCHES:
            if name in applied and needed():
                apply()
    else:
        applied = []
    import modAL

    modal_file = Path(modAL.__file__).resolve()
    if tests_dir.parent in modal_file.parents:
        raise SystemExit(f"modAL was imported from the checkout ({modal_file}), not the installed package")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        outcomes = _outcomes(tests_dir)
    if applied is None:
        applied = importlib.import_module("modal_vlm.compat").needed_patches()
    out.write_text(json.dumps({"outcomes": outcomes, "applied": applied, "modal_file": str(modal_file)}))


# -- parent: the columns and the table -------------------------------------------------------

def suite_tests(tests_dir: Path) -> list[str]:
    """``Class.test_method`` of every test in the suite, read from its source."""
    tree = ast.parse((tests_dir / f"{SUITE}.py").read_text(encoding="utf-8"))
    return [f"{node.name}.{item.name}" for node in tree.body if isinstance(node, ast.ClassDef)
            for item in node.body if isinstance(item, ast.FunctionDef) and item.name.startswith("test")]


def checkout(source: str, workdir: Path) -> Path:
    """The directory of a modAL checkout: ``source`` itself, or ``GIT_DIR@REF`` exported."""
    if "@" in source and not Path(source).is_dir():
        git_dir, ref = source.rsplit("@", 1)
        target = workdir / "modAL"
        target.mkdir()
        archive = subprocess.run(["git", "--git-dir", git_dir, "archive", ref], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        return target
    return Path(source).resolve()


def checkout_version(path: Path) -> str:
    match = re.search(r"version\s*=\s*['\"]([^'\"]+)", (path / "setup.py").read_text(encoding="utf-8"))
    return match.group(1) if match else "unknown"


def run_column(mode: str, tests_dir: Path, workdir: Path) -> dict:
    out = workdir / f"result-{mode or 'none'}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", mode, str(tests_dir), str(out)],
                   check=True, cwd=workdir, env=env)
    return json.loads(out.read_text())


def markdown(columns: dict, tests: list[str], header: list[str]) -> str:
    names = list(columns)
    table = {name: _per_test(columns[name]["outcomes"], tests) for name in names}
    reasons: dict[str, str] = {}

    def cell(outcome: str) -> str:
        if outcome == "pass":
            return "pass"
        key = reasons.setdefault(outcome, f"[{len(reasons) + 1}]")
        return f"{outcome.split(':', 1)[0]} {key}"

    def total(name: str) -> str:
        passed = f"{sum(o == 'pass' for o in table[name].values())} of {len(tests)}"
        failed_import = columns[name]["outcomes"].get("__import__")
        return f"{passed} ({cell('error: ' + failed_import)})" if failed_import else passed

    # A column whose suite does not import fails every test for that one reason, given in
    # its total; the rows list the tests that fail, test by test, in the other columns.
    ran = [n for n in names if "__import__" not in columns[n]["outcomes"]]
    lines = header + ["", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
                      "| tests passed | " + " | ".join(total(n) for n in names) + " |",
                      "", "Tests that fail in a column where the suite imports:", "",
                      "| test | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for test in tests:
        if any(table[n][test] != "pass" for n in ran):
            lines.append(f"| `{test}` | " + " | ".join(
                cell(table[n][test]) if n in ran else "(import)" for n in names) + " |")
    lines += ["", "Reasons:", ""] + [f"{key} {outcome.split(': ', 1)[1]}" + "  " for outcome, key in reasons.items()]
    return "\n".join(lines).rstrip() + "\n"


def _per_test(outcomes: dict, tests: list[str]) -> dict:
    if "__import__" in outcomes:
        return {test: f"error: {outcomes['__import__']}" for test in tests}
    return {test: outcomes.get(test, "error: not run") for test in tests}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", help="a modAL checkout directory, or GIT_DIR@REF (e.g. modAL.git@0.4.1)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "TESTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, tests_dir, out = args.child
        child(mode, Path(tests_dir), Path(out))
        return 0
    if args.source is None:
        parser.error("the modAL checkout (source) is required")

    sys.path.insert(0, str(ROOT))
    compat = _load_compat()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        repo = checkout(args.source, workdir)
        tests_dir = repo / "tests"
        tests = suite_tests(tests_dir)
        modes = {"modAL alone": ""}
        shims = []
        for name, _, _ in compat.PATCHES:
            shims.append(name)
            modes[f"+ {name}"] = ",".join(shims)
        modes["import modal_vlm"] = "modal_vlm"
        columns = {}
        for column, mode in modes.items():
            print(f"running modAL's suite: {column} ...", file=sys.stderr, flush=True)
            columns[column] = run_column(mode, tests_dir, workdir)
        installed = importlib.metadata.version("modAL-python")
        versions = ", ".join(f"{dist} {importlib.metadata.version(dist)}" for dist in
                             ("modAL-python", "scikit-learn", "pandas", "numpy", "scipy", "skorch"))
        command = "python tools/run_modal_suite.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        header = [
            f"modAL's `tests/{SUITE}.py` ({len(tests)} tests, from modAL {checkout_version(repo)}'s "
            f"repository) run against the installed modAL package. "
            f"Python {platform.python_version()}, {versions}. Columns: nothing of modal-vlm, then the "
            "shims of `modal_vlm.compat.PATCHES` added one by one, then `import modal_vlm`, each in a "
            f"fresh interpreter; shims the installed versions need: {compat.needed_patches() or 'none'}.",
            "", f"    {command}",
        ]
        if checkout_version(repo) != installed:
            header += ["", f"**Warning:** the tests are modAL {checkout_version(repo)}'s, the installed "
                           f"modAL is {installed}."]
    text = markdown(columns, tests, header)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
