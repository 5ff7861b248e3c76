"""The Explore tab in a real headless browser, as a new user first sees it: the best shipped
version's stored generation is on the page without a click, and the Rate tab has items."""

from pathlib import Path

import pytest

from helpers import CHROMIUM, CHROMIUM_FLAGS, App
from restpg.app.explore_tab import dataset_summary
from restpg.data.longlamp import validate_rows
from restpg.inference.models import DEFAULT_MODEL

pytestmark = pytest.mark.browser

FILLED = (
    "(ids) => ids.every(id => ((document.querySelector(id + ' textarea, ' + id + ' input') || {}).value "
    "|| '').trim().length > 0)"
)


def test_the_first_page_shows_a_trained_model_reasoning_without_a_click(tmp_path):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    app = App(DEFAULT_MODEL, tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(app.url)
            page.wait_for_function(FILLED, arg=["#reasoning-a", "#response-a"], timeout=60_000)
            version = page.locator("#version-info textarea").input_value()
            assert version.startswith("shipped restpg-sample") and "hand-written" in version
            status = page.locator("#explore-status textarea").input_value()
            assert "stored generation" in status
            page.get_by_role("tab", name="Rate").click()
            page.wait_for_function(FILLED, arg=["#rate-generation", "#rate-reasoning"], timeout=30_000)
            assert (
                "enter your annotator name"
                in page.locator("#rate-status textarea, #rate-status input").first.input_value()
            )
            browser.close()
    finally:
        app.stop()


def test_the_dataset_summary_names_bad_records_and_notes():
    item = {"id": "p1", "title": "T", "abstract": "A."}
    loaded = validate_rows(
        [{"name": "Ada", "input": "x", "output": "y", "profile": [item]}, {"name": "Bo"}],
        "abstract_generation",
        "mine.jsonl",
    )
    summary = dataset_summary(loaded)
    assert summary.startswith("mine.jsonl: 1 records, 1 users, 1 bad record(s) skipped")
    assert "field input: missing" in summary and "optional field 'year'" in summary
