"""Two windows on one batch, in a real browser (issue 25, bad day 2): a label made in another
window since the page showed the image is refused, and the page says so and shows the other
window's answer instead of its own."""
import signal

import pytest
from conftest import SHAPES, draw_shapes

pytest.importorskip("test_label_browser", reason="needs the browser test's set-up (chromium, selenium)")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from test_label_browser import batch_on_screen, browser, cards, httpx, start_server, wait  # noqa: E402,F401


@pytest.mark.trial("bad-day 2")
def test_the_page_shows_a_change_made_in_another_window(tmp_path, browser):  # noqa: F811
    images, project = tmp_path / "images", tmp_path / "project"
    images.mkdir()
    draw_shapes(images, per_class=4, size=64)
    server, url = start_server(images, project)
    try:
        browser.get(url)
        items = batch_on_screen(browser, 1)
        with httpx.Client(base_url=url) as other_window:
            batch = other_window.get("api/state").json()["batch"]
            first = batch["items"][0]
            answer = next(name for name in SHAPES if name != first["guess"])
            decided = other_window.post("api/label", json={"batch_id": batch["id"], "image_id": first["image_id"],
                                                           "kind": "class", "label": answer, "seen_event": 0})
            assert decided.status_code == 200
            assert items[0][0] == first["path"]
            ActionChains(browser).send_keys("s").perform()   # this window still shows it undecided: skip it
            wait(browser, lambda d: "changed in another window" in d.find_element(By.ID, "notice").text)
            wait(browser, lambda d: cards(d)[0].find_element(By.CSS_SELECTOR, ".decision").text == f"✓ {answer}")
            events = [e for e in other_window.get("export/labels.json").json()["events"] if e["path"] == first["path"]]
        assert [(e["kind"], e["label"]) for e in events] == [("class", answer)]   # the skip was not recorded
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
