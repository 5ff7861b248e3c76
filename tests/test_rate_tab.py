"""The Rate tab in a real headless browser (Debian's chromium through Playwright): load the page,
rate with the keyboard only, check the stored rating, see dataset text shown as text, take a
screenshot."""

import json
import re
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from test_app import App

from helpers import review_row
from restpg.generations import GenerationKey, GenerationStore
from restpg.longlamp import load_records, sample_path, validate_rows
from restpg.store import Store

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sys.path.insert(0, str(ROOT / "assets"))
from screenshot import CHROMIUM_FLAGS  # noqa: E402  (one list of flags for the screenshot and the tests)

HOSTILE = '<img src=x onerror="window.__xss = 1">'


@pytest.fixture
def seeded_app(tiny_model_dir, tmp_path):
    app = App(tiny_model_dir, tmp_path)
    row = review_row("HTMLUSER", request=f"Generate the review text for {HOSTILE} a tent.")
    row["output"] = f"My kids love it {HOSTILE}"
    row["profile"][0]["summary"] = f"Safe {HOSTILE} train"
    (app.data_dir / "hostile.jsonl").write_text(json.dumps(row) + "\n")
    # Two stored reasoning paths, as the page stores them (a random tiny model may write none):
    # one for a sample record, one whose texts hold HTML.
    store = GenerationStore(Store(app.runs_dir / "restpg.db"))
    sample = load_records(sample_path("product_review", "user", "val"), "product_review").records[0]
    hostile = validate_rows([row], "product_review", "hostile.jsonl").records[0]
    for dataset, record, reasoning in (
        ("shipped sample", sample, "- Background: a careful shopper"),
        ("hostile.jsonl", hostile, f"- Style: {HOSTILE} short lines"),
    ):
        store.save(
            GenerationKey.of(dataset, record.record_id, "tiny", k=5),
            record,
            prompt="p",
            retrieved_ids=[],
            reasoning=reasoning,
            response=f"A fine tent. {HOSTILE}",
            text="t",
            new_tokens=6,
            truncated=False,
            stopped=False,
            scores={"rougeL": 0.1},
        )
    yield app
    app.stop()


def test_rate_with_the_keyboard_in_a_real_browser(seeded_app, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(seeded_app.url)
        page.get_by_role("tab", name="Rate").click()
        page.locator("#rate-annotator textarea, #rate-annotator input").first.fill("kim")
        page.locator("#rate-load").click()
        generation = page.locator("#rate-generation textarea, #rate-generation input").first
        expect(generation).not_to_have_value("", timeout=30_000)
        first_id = generation.input_value()
        page.locator("#rate-reasoning").click()  # focus out of the text field: keys now rate
        page.locator("h1").first.click()
        for key in ("4", "2", "5", "c", "Enter"):
            page.keyboard.press(key)
        status = page.locator("#rate-status textarea, #rate-status input").first
        expect(status).to_have_value(re.compile(f"^saved rating of {first_id} by kim"), timeout=30_000)
        counter = page.locator("#rate-counter textarea, #rate-counter input").first
        expect(counter).to_have_value("1 of 2 rated by you", timeout=30_000)
        # After saving, the page moved on to the next item: the one whose texts hold HTML.
        expect(generation).not_to_have_value(first_id, timeout=30_000)
        page.keyboard.press("ArrowLeft")  # back to the first: it shows the saved rating for editing
        expect(generation).to_have_value(first_id, timeout=30_000)
        page.keyboard.press("ArrowRight")
        expect(generation).not_to_have_value(first_id, timeout=30_000)
        texts = page.locator("textarea").evaluate_all("els => els.map(e => e.value).join('\\n')")
        assert HOSTILE in texts  # shown literally, as text
        assert page.evaluate("() => window.__xss") is None and page.locator("img[src=x]").count() == 0
        # The Explore tab with the same dataset: its profile table shows the item's HTML as text too.
        page.get_by_role("tab", name="Explore").click()
        dataset = page.locator("#explore-dataset input").first
        dataset.fill("hostile.jsonl")
        dataset.press("Enter")
        page.get_by_text(f"Safe {HOSTILE} train", exact=True).first.wait_for(state="attached", timeout=30_000)
        assert page.evaluate("() => window.__xss") is None and page.locator("img[src=x]").count() == 0
        shot = tmp_path / "rate.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        browser.close()
    with sqlite3.connect(seeded_app.runs_dir / "restpg.db") as db:
        rows = db.execute(
            "SELECT generation_id, faithfulness, relevance, usefulness, copies_output FROM ratings "
            "WHERE annotator = 'kim'"
        ).fetchall()
    assert rows == [(first_id, 4, 2, 5, 1)]
