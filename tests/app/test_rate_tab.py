"""The Rate tab in a real headless browser (Debian's chromium through Playwright): load the page,
rate with the keyboard only, check the stored rating, see dataset text shown as text, take a
screenshot."""

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from helpers import CHROMIUM, CHROMIUM_FLAGS, App, review_row
from restpg.data.longlamp import load_records, sample_path, validate_rows
from restpg.store.database import Store
from restpg.store.generations import GenerationKey, GenerationStore

pytestmark = pytest.mark.browser

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


def test_rate_a_runs_e_step_samples_and_follow_links(seeded_app, tiny_model_dir):
    """A run's E-step samples are listed by round and status and rated from the keyboard under
    their stable ids; ``?rate=<id>`` opens an item in Rate and ``?generation=<id>`` in Explore."""
    from playwright.sync_api import expect, sync_playwright

    from restpg.runs import RunFolder
    from restpg.store.samples import sample_version
    from restpg.training.versions import SHIPPED_DIR

    run = seeded_app.runs_dir / "jobs" / "demo"  # the shipped run before its round's M-step: samples still "kept"
    ignore = shutil.ignore_patterns("adapter", "generations.jsonl", "training_set.jsonl")
    shutil.copytree(SHIPPED_DIR / "restpg-sample", run, ignore=ignore)
    version = sample_version(RunFolder(run).run_id(), "round-1")
    store = GenerationStore(Store(seeded_app.runs_dir / "restpg.db"))
    record = load_records(sample_path("product_review", "user", "val"), "product_review").records[1]
    linked = store.save(
        GenerationKey.of(
            "shipped sample", record.record_id, str(tiny_model_dir), k=5, max_new_tokens=256, temperature=0.1
        ),
        record,
        prompt="p",
        retrieved_ids=[],
        reasoning="- Background: the linked reasoning",
        response="The linked response.",
        text="t",
        new_tokens=6,
        truncated=False,
        stopped=False,
        scores={"rougeL": 0.2},
        family="user",
        split="val",
    )["generation_id"]
    hostile = store.list(dataset="hostile.jsonl")[0]["generation_id"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(f"{seeded_app.url}?rate={hostile}")
        generation = page.locator("#rate-generation textarea, #rate-generation input").first
        expect(generation).to_have_value(hostile, timeout=30_000)  # the Rate tab, on that item
        expect(page.locator("#rate-link textarea").first).to_have_value(re.compile(rf"\?rate={hostile}$"))
        page.locator("#rate-annotator textarea, #rate-annotator input").first.fill("kim")
        for selector, value in (("#rate-version input", version), ("#rate-status-filter input", "kept by the reward")):
            box = page.locator(selector).first
            box.fill(value)
            box.press("Enter")
            page.wait_for_timeout(1000)
        where = page.locator("#rate-where textarea").first
        expect(where).to_have_value(
            re.compile("E-step sample, reward [0-9.]+: kept by the reward rule"), timeout=30_000
        )
        # Both filters' loads have finished (a late one would reset the item after the keys below):
        # the counter covers the kept samples alone, not the version's every sample.
        with sqlite3.connect(seeded_app.runs_dir / "restpg.db") as db:
            kept, every = db.execute(
                "SELECT SUM(sample_status = 'kept'), COUNT(*) FROM generations WHERE model_version = ? "
                "AND reasoning != ''",
                [version],
            ).fetchone()
        assert 0 < kept < every
        counter = page.locator("#rate-counter textarea, #rate-counter input").first
        expect(counter).to_have_value(f"0 of {kept} rated by you", timeout=30_000)
        sample_id = generation.input_value()
        assert sample_id.startswith(RunFolder(run).run_id() + "/round-1:")
        support = page.locator("#rate-support textarea").first.input_value()
        assert "sentences supported by the retrieved items" in support
        page.locator("h1").first.click()
        for key in ("2", "3", "4", "Enter"):
            page.keyboard.press(key)
        status = page.locator("#rate-status textarea, #rate-status input").first
        expect(status).to_have_value(re.compile(f"^saved rating of {re.escape(sample_id)} by kim"), timeout=30_000)
        # ?generation=<id>: Explore opens on that generation, its request and version.
        page.goto(f"{seeded_app.url}?generation={linked}")
        reasoning = page.locator("#reasoning-a textarea").first
        expect(reasoning).to_have_value("- Background: the linked reasoning", timeout=60_000)
        expect(page.locator("#explore-status textarea").first).to_have_value(re.compile(re.escape(linked)))
        link = page.locator("#explore-link textarea").first
        expect(link).to_have_value(re.compile(rf"\?generation={re.escape(linked)}$"), timeout=30_000)
        browser.close()
    with sqlite3.connect(seeded_app.runs_dir / "restpg.db") as db:
        rows = db.execute(
            "SELECT generation_id, faithfulness, model_version FROM ratings WHERE annotator = 'kim'"
        ).fetchall()
    assert rows == [(sample_id, 2, version)]


def test_unsaved_scores_are_kept_as_a_draft_and_the_name_is_remembered(seeded_app):
    """A ``?rate=`` link and the name typed with Enter stay on the linked item; scores left unsaved
    on next survive as a draft that previous restores and Discard drops; nothing is stored
    unsaved; a reload remembers the annotator's name in Rate and in Arena."""
    from playwright.sync_api import expect, sync_playwright

    store = GenerationStore(Store(seeded_app.runs_dir / "restpg.db"))
    linked = store.list(dataset="hostile.jsonl")[0]["generation_id"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(f"{seeded_app.url}?rate={linked}")
        generation = page.locator("#rate-generation textarea, #rate-generation input").first
        expect(generation).to_have_value(linked, timeout=30_000)
        name = page.locator("#rate-annotator textarea, #rate-annotator input").first
        name.fill("kim")
        name.press("Enter")
        page.wait_for_timeout(2000)
        expect(generation).to_have_value(linked)  # still the linked item, not item 1 of another list
        page.locator("h1").first.click()
        for key in ("4", "2"):
            page.keyboard.press(key)
        faithfulness = page.locator("#rate-faithfulness").get_by_label("4", exact=True)
        expect(faithfulness).to_be_checked(timeout=10_000)
        status = page.locator("#rate-status textarea, #rate-status input").first
        page.locator("#rate-load").click()  # the whole list for kim, on its first item
        where = page.locator("#rate-where textarea").first
        expect(where).to_have_value(re.compile("^item 1 of 2 "), timeout=30_000)
        ids = [generation.input_value()]
        page.locator("h1").first.click()
        page.keyboard.press("3")
        page.keyboard.press("ArrowRight")
        expect(status).to_have_value(re.compile(r"kept as a draft \(not saved\)"), timeout=30_000)
        expect(generation).not_to_have_value(ids[0], timeout=30_000)
        page.keyboard.press("ArrowLeft")
        expect(generation).to_have_value(ids[0], timeout=30_000)
        expect(where).to_have_value(re.compile("unsaved draft"), timeout=30_000)
        expect(page.locator("#rate-faithfulness").get_by_label("3", exact=True)).to_be_checked()
        page.locator("#rate-discard").click()
        expect(status).to_have_value(re.compile(f"draft of {re.escape(ids[0])} discarded"), timeout=30_000)
        expect(page.locator("#rate-faithfulness").get_by_label("3", exact=True)).not_to_be_checked()
        page.locator("#rate-save").click()  # no scores: refused, and the item stays on screen
        expect(status).to_have_value(re.compile("^not saved: .*faithfulness"), timeout=30_000)
        expect(generation).to_have_value(ids[0])
        page.reload()
        expect(name).to_have_value("kim", timeout=30_000)
        page.get_by_role("tab", name="Arena").click()
        arena_name = page.locator("#arena-annotator textarea, #arena-annotator input").first
        expect(arena_name).to_have_value("kim", timeout=30_000)
        browser.close()
    with sqlite3.connect(seeded_app.runs_dir / "restpg.db") as db:
        assert db.execute("SELECT COUNT(*) FROM ratings").fetchone() == (0,)
