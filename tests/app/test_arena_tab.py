"""The Arena tab, as users drive it: a blind pair, votes with the keyboard in a real browser, the
names revealed after the vote, the leaderboard; two tabs voting on one pair count once."""

import re
import sqlite3
from pathlib import Path

import pytest

from helpers import CHROMIUM, CHROMIUM_FLAGS, App
from restpg.data.longlamp import load_records, sample_path
from restpg.store.arena import PAGE_READ_SECONDS
from restpg.store.database import Store
from restpg.store.generations import GenerationKey, GenerationStore

pytestmark = pytest.mark.browser

VERSIONS = ("version-one", "version-two")
READ_MS = int(PAGE_READ_SECONDS * 1000) + 500


@pytest.fixture
def arena_app(tiny_model_dir, tmp_path):
    app = App(tiny_model_dir, tmp_path)
    store = GenerationStore(Store(app.runs_dir / "restpg.db"))
    for record in load_records(sample_path("product_review", "user", "val"), "product_review").records[:3]:
        for version in VERSIONS:
            store.save(
                GenerationKey.of("shipped sample", record.record_id, version, k=5),
                record,
                prompt="p",
                retrieved_ids=[],
                reasoning=f"- Style: what {version} noticed",
                response=f"The review {version} wrote.",
                text="t",
                new_tokens=6,
                truncated=False,
                stopped=False,
                scores={"rougeL": 0.1},
            )
    yield app
    app.stop()


def test_vote_with_the_keyboard_and_see_the_names_after(arena_app):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(arena_app.url)
        page.get_by_role("tab", name="Arena").click()
        page.locator("#arena-annotator textarea, #arena-annotator input").first.fill("kim")
        page.locator("h1").first.click()  # out of the text field: keys now vote
        page.keyboard.press("n")
        left = page.locator("#arena-left textarea").first
        expect(left).to_have_value(re.compile("^The review version-"), timeout=30_000)
        texts = page.locator("textarea").evaluate_all("els => els.map(e => e.value).join('\\n')")
        assert "version-one" not in texts.replace("The review version-one wrote.", "").replace(
            "what version-one noticed", ""
        )  # the names appear only inside the outputs' own texts, never as labels
        shown_left = left.input_value()
        page.wait_for_timeout(READ_MS)  # votes count once the pair has been on screen long enough
        page.keyboard.press("a")
        revealed = page.locator("#arena-revealed textarea").first
        expect(revealed).to_have_value(re.compile("^you voted A is better: A was version-"), timeout=30_000)
        winner = re.search(r"A was (version-\w+)", revealed.input_value()).group(1)
        assert winner in shown_left  # the revealed name is the output that was on the left
        for key in ("t", "x"):
            page.wait_for_timeout(READ_MS)
            page.keyboard.press(key)
            page.wait_for_timeout(500)
        expect(revealed).to_have_value(re.compile("^you voted both bad"), timeout=30_000)
        page.locator("#arena-board").click()
        expect(page.locator("#arena-table")).to_contain_text(winner, timeout=30_000)
        browser.close()
    with sqlite3.connect(arena_app.runs_dir / "restpg.db") as db:
        votes = db.execute(
            "SELECT winner, winner_version, annotator FROM matches WHERE winner IS NOT NULL ORDER BY voted_at"
        ).fetchall()
    assert [(w, a) for w, _, a in votes] == [("A", "kim"), ("tie", "kim"), ("both_bad", "kim")]
    assert votes[0][1] == winner


def test_two_tabs_voting_on_one_pair_count_once(arena_app):
    import time

    client = arena_app.client()
    match_id, *_ = client.predict("ann", [], api_name="/arena_next")
    assert match_id
    with pytest.raises(Exception, match="read both outputs first"):  # the page's reading time
        client.predict(match_id, "ann", "B", api_name="/arena_vote")
    time.sleep(PAGE_READ_SECONDS)
    revealed = client.predict(match_id, "ann", "B", api_name="/arena_vote")
    assert revealed.startswith("you voted B is better")
    with pytest.raises(Exception, match="already voted"):
        client.predict(match_id, "ann", "A", api_name="/arena_vote")
    with pytest.raises(Exception, match="no match"):
        client.predict("not-a-match", "ann", "A", api_name="/arena_vote")
    table, _ = client.predict(api_name="/arena_leaderboard")
    rows = {row[0]: row for row in table["data"]}
    assert set(rows) == set(VERSIONS) and sum(rows[v][4] for v in VERSIONS) == 1  # one win in all


def test_a_second_key_press_right_after_a_vote_is_not_a_vote_on_the_next_pair(arena_app):
    """A double press (a key, then a click, at once after the vote shows) votes once: the next pair's buttons are locked until it can have
    been read, and the pair stays on screen for a vote that counts."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(arena_app.url)
        page.get_by_role("tab", name="Arena").click()
        page.locator("#arena-annotator textarea, #arena-annotator input").first.fill("kim")
        page.locator("h1").first.click()
        page.keyboard.press("n")
        left = page.locator("#arena-left textarea").first
        expect(left).to_have_value(re.compile("^The review version-"), timeout=30_000)
        page.wait_for_timeout(READ_MS)
        page.keyboard.press("a")
        revealed = page.locator("#arena-revealed textarea").first
        expect(revealed).to_have_value(re.compile("^you voted A is better"), timeout=30_000)
        request = page.locator("#arena-request textarea").first
        on_screen = (request.input_value(), left.input_value())
        with sqlite3.connect(arena_app.runs_dir / "restpg.db") as db:
            (first_match,), (next_match,) = db.execute(
                "SELECT match_id FROM matches ORDER BY winner IS NULL, created"
            ).fetchall()
        page.keyboard.press("b")  # meant for the last pair: lands on a locked button
        page.get_by_role("button", name="B is better (b)").click(force=True)
        page.wait_for_timeout(500)
        with sqlite3.connect(arena_app.runs_dir / "restpg.db") as db:
            votes = db.execute("SELECT match_id, winner FROM matches WHERE winner IS NOT NULL").fetchall()
        assert votes == [(first_match, "A")]
        assert (request.input_value(), left.input_value()) == on_screen  # the pair stays on screen, unvoted
        expect(page.locator("#arena-b")).to_be_enabled(timeout=10_000)  # open once it can have been read
        page.keyboard.press("b")
        expect(revealed).to_have_value(re.compile("^you voted B is better"), timeout=30_000)
        browser.close()
    with sqlite3.connect(arena_app.runs_dir / "restpg.db") as db:
        votes = db.execute("SELECT match_id, winner FROM matches WHERE winner IS NOT NULL ORDER BY voted_at").fetchall()
    assert votes == [(first_match, "A"), (next_match, "B")]
