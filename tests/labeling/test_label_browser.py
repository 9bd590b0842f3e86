"""End to end in a real browser (Debian's headless Chromium through selenium): label two
batches by keyboard, kill the server mid-batch, restart it, and find every confirmed label,
the same batch on screen and a retrained model; then finish the batch and find the accuracy
estimate and the stability of the predictions in the header, and the "likely wrong" list.

The screenshots it takes are the documentation's (docs/labeling.rst); to refresh them::

    MODAL_VLM_SCREENSHOTS=docs/_static python -m pytest tests/labeling/test_label_browser.py
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SHAPES, draw_shapes

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytest.importorskip("fastapi", reason="the labeling app needs the 'app' extra: pip install modal-vlm[app]")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the 'test' extra)")
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip("the browser test needs Debian's chromium and chromium-driver "
                "(apt-get install chromium chromium-driver; .ci/run installs them)", allow_module_level=True)
httpx = pytest.importorskip("httpx")

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

BATCH = 6
#: Half of every batch drawn at random: the header's estimate appears after three batches.
AUDIT = 0.5


def start_server(images, project):
    command = [sys.executable, "-m", "modal_vlm.cli", "label", str(images), "--classes", *SHAPES,
               "--project", str(project), "--model", "tiny-vit", "--batch", str(BATCH),
               "--train-steps", "5", "--port", "0", "--audit-fraction", str(AUDIT)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Open http://"):
            return process, line.split()[1]
    process.kill()
    raise AssertionError("the server did not print its URL:\n" + "".join(lines))


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1320,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    except WebDriverException:  # the very first start on a machine can outlast chromedriver's wait
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait(driver, condition, timeout=60):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))


def cards(driver):
    return driver.find_elements(By.CSS_SELECTOR, "#batch .card")


def batch_on_screen(driver, batch_id):
    """Wait for batch ``batch_id``'s cards, images loaded; return [(image path, guess)]."""
    def ready(d):
        notice = d.find_element(By.ID, "notice").text
        return notice.startswith(f"Batch {batch_id}:") and len(cards(d)) == BATCH and d.execute_script(
            "return [...document.querySelectorAll('#batch img')].every(i => i.complete && i.naturalWidth > 0)")
    wait(driver, ready)
    return [(card.find_element(By.TAG_NAME, "img").get_attribute("alt"),
             card.find_element(By.CSS_SELECTOR, ".guess b").text) for card in cards(driver)]


def press(driver, key, decided_before):
    ActionChains(driver).send_keys(key).perform()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#batch .card.decided")) > decided_before
         or not d.execute_script("return state.batch"), timeout=30)


def settled(driver):
    """Every decision the page sent has been answered by the server."""
    wait(driver, lambda d: d.execute_script("return inFlight === 0"))


def label_by_keyboard(driver, items, truth, expected, tricks=(), decided=0):
    """Label the cards on screen in order: Enter when the pre-selected guess is right, the
    class's number key otherwise; ``tricks`` maps a card index to another way (arrows, N, S);
    ``decided`` cards of the batch have a decision already."""
    for index, (path, guess) in enumerate(items):
        right = truth[path]
        trick = dict(tricks).get(index)
        if trick == "ood":
            keys, expected[path] = "n", ("ood", None)
        elif trick == "skip":
            keys, expected[path] = "s", ("skip", None)
        elif trick == "arrows":  # walk the answers with the arrow keys to the right one, Enter
            steps = (SHAPES.index(right) - SHAPES.index(guess)) % (len(SHAPES) + 1)
            keys, expected[path] = Keys.ARROW_DOWN * steps + Keys.ENTER, ("class", right)
        else:
            keys = Keys.ENTER if guess == right else str(SHAPES.index(right) + 1)
            expected[path] = ("class", right)
        press(driver, keys, decided + index)


def test_label_two_batches_kill_restart(tmp_path, browser):
    images, project = tmp_path / "images", tmp_path / "project"
    images.mkdir()
    truth = draw_shapes(images, per_class=10, size=128)   # five batches
    shots = tmp_path / "screenshots"
    shots.mkdir()
    expected = {}
    server, url = start_server(images, project)
    try:
        browser.get(url)
        first = batch_on_screen(browser, 1)
        label_by_keyboard(browser, first, truth, expected, tricks={1: "arrows"})
        second = batch_on_screen(browser, 2)
        assert not {p for p, _ in first} & {p for p, _ in second}
        label_by_keyboard(browser, second, truth, expected, tricks={2: "ood", 4: "skip"})
        third = batch_on_screen(browser, 3)
        label_by_keyboard(browser, third[:2], truth, expected)
        settled(browser)
    finally:
        server.send_signal(signal.SIGKILL)   # mid-batch, no goodbye
        server.wait(30)

    server, url = start_server(images, project)
    try:
        browser.get(url)
        assert batch_on_screen(browser, 3) == third           # the same batch, the same guesses
        decided = [card.find_element(By.CSS_SELECTOR, ".decision").text for card in cards(browser)]
        assert decided[:2] == [f"✓ {truth[p]}" for p, _ in third[:2]] and decided[2:] == [""] * 4
        with httpx.Client(base_url=url) as api:
            labels = api.get("export/labels.json").json()
            stored = {row["path"]: (row["kind"], row["label"]) for row in labels["labels"]}
            stored.update({path: ("skip", None) for path in labels["skipped"]})
            assert stored == expected
            wait(browser, lambda d: api.get("api/state").json()["worker"]["phase"] == "ready")
            state = api.get("api/state").json()
        assert state["model"]["round"] == 2                    # retrained after each batch
        assert state["model"]["n_labels"] == 2 * BATCH - 2 and state["model"]["n_ood"] == 1
        assert [b["id"] for b in state["batches"]] == [1, 2]
        wait(browser, lambda d: "trained after 2 batches" in d.find_element(By.ID, "status").text)
        header = browser.find_element(By.ID, "trust").text
        assert "accuracy: estimated once images are labeled" in header   # no calibrated audit pick checked yet
        assert "images since the last batch" in header and "predictions changed on" in header

        browser.get(url + "review")
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#labels .card")) == len(expected) - 1)
        card = browser.find_elements(By.CSS_SELECTOR, "#labels .card")[0]
        path = card.get_attribute("title")
        card.click()
        wait(browser, lambda d: d.find_element(By.ID, "editor").is_displayed()
             and len(d.find_elements(By.CSS_SELECTOR, "#editor-history li")) == 1)
        other = next(name for name in SHAPES if name != truth[path])
        ActionChains(browser).send_keys(str(SHAPES.index(other) + 1)).perform()   # an edit
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#editor-history li")) == 2)
        browser.save_screenshot(str(shots / "label-app-review.png"))
        with httpx.Client(base_url=url) as api:
            events = [e for e in api.get("export/labels.json").json()["events"] if e["path"] == path]
        assert [(e["label"], e["source"]) for e in events] == [(truth[path], "batch"), (other, "review")]

        browser.get(url)   # finish batch 3: its audit picks were shown with a calibrated confidence
        items = batch_on_screen(browser, 3)
        assert all("%" in card.find_element(By.CSS_SELECTOR, ".guess").text for card in cards(browser))
        label_by_keyboard(browser, items[2:], truth, expected, decided=2)
        fourth = batch_on_screen(browser, 4)
        settled(browser)
        assert "accuracy: estimated once images are labeled" in browser.find_element(By.ID, "trust").text
        label_by_keyboard(browser, fourth, truth, expected)   # a second model's audit picks: an estimate
        batch_on_screen(browser, 5)
        wait(browser, lambda d: "checked image" in d.find_element(By.ID, "trust").text)
        header = browser.find_element(By.ID, "trust").text
        with httpx.Client(base_url=url) as api:
            state = api.get("api/state").json()
        estimate = state["estimate"]
        assert (f"from {estimate['n']} checked images" in header
                and f"about {round(100 * estimate['accuracy'])} %" in header)
        assert estimate["n"] == 6 and "audit" not in json.dumps(state)   # batches 3 and 4
        browser.save_screenshot(str(shots / "label-app.png"))

        browser.get(url + "review")
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filter option")) > 2)
        Select(browser.find_element(By.ID, "filter")).select_by_value("suspect")
        wait(browser, lambda d: "most suspect first" in d.find_element(By.ID, "shown").text)
        with httpx.Client(base_url=url) as api:
            suspects = api.get("api/review", params={"filter": "suspect"}).json()["items"]
        shown = browser.find_elements(By.CSS_SELECTOR, "#labels .card")
        assert [card.get_attribute("title") for card in shown] == [row["path"] for row in suspects]
        assert all("model thought:" in card.text for card in shown)
    finally:
        server.terminate()
        server.wait(30)
    for shot in shots.iterdir():
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
    target = os.environ.get("MODAL_VLM_SCREENSHOTS")
    if target:
        for shot in shots.iterdir():
            shutil.copy(shot, Path(target) / shot.name)
