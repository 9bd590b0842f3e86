"""The README's quick start runs as a newcomer pastes it (issue 25, first hour 2): the code
block after the ``quickstart`` marker, exactly as written, in a fresh interpreter, offline.
The documentation's front page and quick start show the same text."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- quickstart: tests/test_readme.py runs the next code block as it is -->"


def readme_quickstart() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert MARKER in text, "the README lost its quick-start marker"
    match = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    return match.group(1)


def rst_code_blocks(path) -> list[str]:
    """The ``.. code-block:: python`` bodies of an reST file, de-indented."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.strip() == ".. code-block:: python":
            body = []
            for following in lines[i + 2:]:
                if following and not following.startswith("   "):
                    break
                body.append(following[3:])
            blocks.append("\n".join(body).strip() + "\n")
    return blocks


@pytest.mark.trial("first-hour 2")
@pytest.mark.parametrize("page", ["index.rst", "quickstart.rst"])
def test_docs_show_the_readme_quickstart(page):
    assert readme_quickstart() in rst_code_blocks(ROOT / "docs" / page)


@pytest.mark.trial("first-hour 2")
def test_quickstart_is_self_contained():
    snippet = readme_quickstart()
    compile(snippet, "README.md", "exec")
    for name in ("np", "X_pool", "y_pool", "class_names"):   # what the old snippet left undefined
        assert re.search(rf"^(import .* as {name}\b|.*\b{name}\b.* = )", snippet, re.M), name


@pytest.mark.integration
@pytest.mark.trial("first-hour 2")
def test_readme_quickstart_runs_offline_as_written(tmp_path):
    run = subprocess.run([sys.executable, "-c", readme_quickstart()], capture_output=True, text=True, cwd=tmp_path,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"}, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"zero-shot: 0\.\d{3}", lines[0]), run.stdout
    assert [re.fullmatch(r"round (\d): (\d+) labels, accuracy 0\.\d{3}", line).groups() for line in lines[1:]] == \
        [("1", "10"), ("2", "20"), ("3", "30")]


@pytest.mark.trial("first-hour 3")
def test_readme_reads_in_a_newcomers_order():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.M)
    order = ["Install", "Demo", "Python quick start", "Experiments from the command line", "Labeling in the browser",
             "More"]
    assert [h for h in headings if h in order] == order, headings
    assert "Benchmarks" not in headings and "0.543" not in text   # the numbers live in docs/results.md
    assert "0.543" in (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    install = text[text.index("## Install"):text.index("## Demo")]
    assert "CUDA" in install and "--index-url https://download.pytorch.org/whl/cpu" in install
    assert text.index("### Inputs") < text.index("## Experiments from the command line")   # before the CLI
