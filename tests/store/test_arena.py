import dataclasses
import random
import threading

import pytest

from restpg.store.arena import (
    CHOICES,
    HIDDEN_REASONING,
    ArenaError,
    ArenaStore,
    Match,
    TooSoonError,
    bradley_terry,
    leaderboard,
)
from restpg.store.database import Store


def add_generations(store, rows):
    """Rows straight into the generations table (the generations module owns it)."""
    base = {
        "dataset": "sample",
        "task": "product_review",
        "record_id": "r1",
        "user_id": "u",
        "request": "Write a review.",
        "reference": "Great tent.",
        "model_version": "m1",
        "reasoning": "why",
        "response": "what",
        "stopped": 0,
        "created": 1.0,
    }
    store.db["generations"].insert_all([{**base, **row} for row in rows], pk="generation_id", alter=True)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "restpg.db")


@pytest.fixture
def arena(store):
    return ArenaStore(store)


def two_versions(store, record_id="r1"):
    add_generations(
        store,
        [
            {"generation_id": f"{record_id}-old", "record_id": record_id, "model_version": "m1", "response": "stale"},
            {"generation_id": f"{record_id}-a", "record_id": record_id, "model_version": "m1", "created": 2.0},
            {"generation_id": f"{record_id}-b", "record_id": record_id, "model_version": "m2", "response": "other"},
        ],
    )


def test_next_match_pairs_two_versions_of_one_record_in_both_orders(store, arena):
    two_versions(store)
    add_generations(
        store,
        [  # never candidates: stopped, empty response, or a record with one version
            {"generation_id": "stopped", "model_version": "m3", "stopped": 1, "created": 9.0},
            {"generation_id": "empty", "model_version": "m4", "response": "  "},
            {"generation_id": "alone", "record_id": "r2", "model_version": "m1"},
        ],
    )
    orders = set()
    for seed in range(20):
        match = arena.next_match("ann", random.Random(seed))
        assert isinstance(match, Match) and match.record_id == "r1" and match.request == "Write a review."
        row = arena.get(match.match_id)
        assert {row["left_id"], row["right_id"]} == {"r1-a", "r1-b"}  # the newest m1 generation, not r1-old
        assert row["winner"] is None and row["annotator"] == "ann"
        shown = {row["left_id"]: match.left_response, row["right_id"]: match.right_response}
        assert shown == {"r1-a": "what", "r1-b": "other"}
        orders.add((row["left_version"], row["right_version"]))
    assert orders == {("m1", "m2"), ("m2", "m1")}
    # the names are not on the Match the page shows
    assert all("m1" not in str(v) and "m2" not in str(v) for v in dataclasses.asdict(match).values())


def test_same_seed_gives_same_order(store, arena):
    two_versions(store)
    first = arena.get(arena.next_match("ann", random.Random(7)).match_id)
    second = arena.get(arena.next_match("ann", random.Random(7)).match_id)
    assert first["left_version"] == second["left_version"]


def test_no_candidates_gives_none(store, arena):
    assert arena.next_match("ann", random.Random(0)) is None  # no generations table at all
    add_generations(store, [{"generation_id": "g1"}, {"generation_id": "g2", "record_id": "r2", "model_version": "m2"}])
    assert arena.next_match("ann", random.Random(0)) is None  # two versions, but never on one record
    two_versions(store, "r3")
    assert arena.next_match("ann", random.Random(0), versions=["m1", "m3"]) is None
    assert arena.next_match("ann", random.Random(0), versions=["m1", "m2"]) is not None
    assert arena.store.db["matches"].count == 1
    with pytest.raises(ArenaError, match="versions"):
        arena.next_match("ann", random.Random(0), versions="m1")
    with pytest.raises(ArenaError, match="annotator"):
        arena.next_match("  ", random.Random(0))
    with pytest.raises(ArenaError, match="annotator"):
        arena.next_match("a" * 65, random.Random(0))


def test_next_match_prefers_least_voted_pair_then_unvoted_record(store, arena):
    records = ("r1", "r2", "r3", "r4")
    add_generations(
        store,
        [
            {"generation_id": f"{r}-{v}", "record_id": r, "model_version": v}
            for r in records
            for v in ("m1", "m2", "m3")
        ],
    )

    def shown(match):
        row = arena.get(match.match_id)
        return tuple(sorted((row["left_version"], row["right_version"]))), row["record_id"]

    pairs = [("m1", "m2"), ("m1", "m3"), ("m2", "m3")]
    for seed in range(5):  # each annotator starts fresh, whatever the others voted
        annotator, rng = f"ann{seed}", random.Random(seed)
        seen = []
        for _ in range(12):
            match = arena.next_match(annotator, rng)
            seen.append(shown(match))
            arena.vote(match.match_id, annotator, "A")
        for round_start in range(0, 12, 3):  # every pair once before any pair repeats
            assert sorted(p for p, _ in seen[round_start : round_start + 3]) == pairs
        assert sorted(seen) == sorted((p, r) for p in pairs for r in records)  # no (record, pair) twice
        for p in pairs:  # and a pair moves to a record this annotator has voted on least
            assert sorted(r for q, r in seen if q == p) == list(records)
        assert sorted(r for _, r in seen[:4]) == list(records)
    # an unvoted match counts for nothing
    arena.next_match("ann0", random.Random(0))
    assert len(arena.votes()) == 5 * 12


def test_vote_reveals_names_and_stores_winner_version(store, arena):
    for record in ("r1", "r2", "r3"):
        two_versions(store, record)
    match = arena.next_match("ann", random.Random(1))
    row = arena.get(match.match_id)
    revealed = arena.vote(match.match_id, " ann ", "B")
    assert revealed == {
        "left_version": row["left_version"],
        "right_version": row["right_version"],
        "winner": "B",
        "winner_version": row["right_version"],
    }
    stored = arena.get(match.match_id)
    assert stored["winner"] == "B" and stored["winner_version"] == row["right_version"] and stored["voted_at"]
    for choice in ("tie", "both_bad"):
        other = arena.next_match("ann", random.Random(1))
        assert arena.vote(other.match_id, "ann", choice)["winner_version"] == ""
    assert [v["winner"] for v in arena.votes()] == ["B", "tie", "both_bad"]
    assert arena.votes(versions=["m1", "m3"]) == []


def test_bad_votes_raise_and_never_double_count(store, arena):
    two_versions(store)
    match = arena.next_match("ann", random.Random(0))
    with pytest.raises(ArenaError, match="choice") as error:
        arena.vote(match.match_id, "ann", "C")
    assert "'C'" in str(error.value) and all(c in str(error.value) for c in CHOICES)
    with pytest.raises(ArenaError, match="no match 'nope'"):
        arena.vote("nope", "ann", "A")
    with pytest.raises(ArenaError, match="another annotator"):
        arena.vote(match.match_id, "bob", "A")
    assert arena.votes() == []
    arena.vote(match.match_id, "ann", "A")
    before = leaderboard_counts(arena)
    with pytest.raises(ArenaError, match="already voted"):
        arena.vote(match.match_id, "ann", "B")
    assert leaderboard_counts(arena) == before
    assert arena.get(match.match_id)["winner"] == "A" and len(arena.votes()) == 1


def leaderboard_counts(arena):
    return {r["version"]: (r["votes"], r["wins"], r["losses"]) for r in arena.leaderboard(bootstrap=0)}


def test_two_threads_voting_on_one_match_count_once(tmp_path):
    path = tmp_path / "restpg.db"
    first = Store(path)
    two_versions(first)
    match = ArenaStore(first).next_match("ann", random.Random(0))
    stores = [Store(path) for _ in range(2)]
    start = threading.Barrier(2, timeout=30)
    results, errors = [], []

    def work(t):
        own = ArenaStore(stores[t])
        start.wait()
        try:
            results.append(own.vote(match.match_id, "ann", ("A", "B")[t]))
        except ArenaError as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 1 and len(errors) == 1 and "already voted" in str(errors[0])
    votes = ArenaStore(Store(path)).votes()
    assert len(votes) == 1 and votes[0]["winner"] == results[0]["winner"]


def synthetic(x_wins=8, y_wins=2, ties=0, both_bad=0):
    votes = [("X", "Y", "A")] * (x_wins // 2) + [("Y", "X", "B")] * (x_wins - x_wins // 2)
    votes += [("Y", "X", "A")] * y_wins + [("X", "Y", "tie")] * ties + [("Y", "X", "both_bad")] * both_bad
    return votes


def test_leaderboard_ranks_the_stronger_version_first():
    rows = leaderboard(synthetic(), bootstrap=300, seed=0)
    assert [r["version"] for r in rows] == ["X", "Y"]
    x, y = rows
    assert x["wins"] == 8 and x["losses"] == 2 and y["wins"] == 2 and y["losses"] == 8
    assert x["votes"] == y["votes"] == 10 and x["win_rate"] == pytest.approx(0.8)
    assert x["rating"] > y["rating"] and (x["rating"] + y["rating"]) / 2 == pytest.approx(1000)
    # Bradley-Terry: P(X beats Y) = 1 / (1 + 10 ** (-gap / 400)) is close to the observed 0.8
    gap = x["rating"] - y["rating"]
    assert 1 / (1 + 10 ** (-gap / 400)) == pytest.approx(0.8, abs=0.01)
    for row in rows:
        assert row["ci_low"] <= row["rating"] <= row["ci_high"]
    assert x["ci_low"] > y["rating"]


def test_ties_and_both_bad_are_counted():
    rows = {r["version"]: r for r in leaderboard(synthetic(3, 1, ties=4, both_bad=2), bootstrap=0)}
    x, y = rows["X"], rows["Y"]
    assert (x["wins"], x["losses"], x["ties"], x["both_bad"], x["votes"]) == (3, 1, 4, 2, 10)
    assert (y["wins"], y["losses"], y["ties"], y["both_bad"]) == (1, 3, 4, 2)
    assert x["win_rate"] == pytest.approx((3 + 2) / 8) and y["win_rate"] == pytest.approx((1 + 2) / 8)
    assert x["ci_low"] is None and x["rating"] > y["rating"]
    # a tie is half a win each way: 3 wins + 4 ties against 1 + 4 ties is 5 to 3
    assert bradley_terry(synthetic(3, 1, ties=4)) == pytest.approx(bradley_terry(synthetic(5, 3)))
    # both_bad votes do not move the fit
    assert bradley_terry(synthetic(3, 1, both_bad=5)) == pytest.approx(bradley_terry(synthetic(3, 1)))


def test_bootstrap_is_reproducible():
    votes = synthetic(6, 3, ties=2) + [("X", "Z", "B"), ("Z", "Y", "A"), ("Z", "X", "tie")]
    assert leaderboard(votes, bootstrap=200, seed=3) == leaderboard(votes, bootstrap=200, seed=3)
    assert leaderboard(votes, bootstrap=200, seed=3) != leaderboard(votes, bootstrap=200, seed=4)


def test_degenerate_leaderboards_do_not_crash():
    assert leaderboard([]) == []
    rows = leaderboard([("X", "Y", "both_bad")] * 3)
    assert [r["rating"] for r in rows] == [None, None] and rows[0]["win_rate"] is None and rows[0]["both_bad"] == 3
    rows = leaderboard([("X", "Y", "A")] * 20, bootstrap=50)  # only wins: finite thanks to the regularisation
    assert rows[0]["version"] == "X" and rows[0]["rating"] < 10_000 and rows[0]["win_rate"] == 1.0
    rows = leaderboard([("X", "Y", "A"), ("Z", "X", "both_bad")], bootstrap=20)
    assert [r["version"] for r in rows] == ["X", "Y", "Z"] and rows[2]["rating"] is None and rows[2]["votes"] == 1
    with pytest.raises(ArenaError, match="bootstrap"):
        leaderboard([], bootstrap=-1)
    with pytest.raises(ArenaError, match="choice"):
        leaderboard([("X", "Y", "left")])


def test_store_leaderboard_uses_the_votes(store, arena):
    for record in range(11):
        two_versions(store, f"r{record}")
    rng = random.Random(0)
    for i in range(10):
        match = arena.next_match("ann", rng)
        row = arena.get(match.match_id)
        winner = "m1" if i < 8 else "m2"
        arena.vote(match.match_id, "ann", "A" if row["left_version"] == winner else "B")
    arena.next_match("ann", rng)  # unvoted: not counted
    rows = arena.leaderboard(bootstrap=100, seed=0)
    assert [(r["version"], r["wins"], r["votes"]) for r in rows] == [("m1", 8, 10), ("m2", 2, 10)]
    assert arena.leaderboard(bootstrap=100, seed=0) == rows
    assert arena.leaderboard(versions=["m1"]) == []


def test_one_vote_counts_per_annotator_pair_and_request_and_a_known_pair_never_returns(store, arena):
    """Repeated requests for matches cannot stuff the board: a second vote by the same annotator on the
    same two versions of the same request is refused, and that (request, pair) is not shown to them
    again (its names are known to them); other annotators still get it."""
    two_versions(store)
    first, second = (arena.next_match("ann", random.Random(n)) for n in range(2))  # two tabs, one pair
    arena.vote(first.match_id, "ann", "A")
    with pytest.raises(ArenaError, match="already voted on these two versions for this request"):
        arena.vote(second.match_id, "ann", "A")
    assert arena.next_match("ann", random.Random(3)) is None
    assert arena.next_match("bob", random.Random(3)) is not None
    assert len(arena.votes()) == 1


def test_the_leaderboard_is_fitted_once_per_set_of_votes(store, arena, monkeypatch):
    import restpg.store.arena

    for record in ("r1", "r2"):
        two_versions(store, record)
    match = arena.next_match("ann", random.Random(0))
    arena.vote(match.match_id, "ann", "A")
    fits = []
    real = restpg.store.arena.leaderboard
    monkeypatch.setattr(restpg.store.arena, "leaderboard", lambda *a, **k: fits.append(1) or real(*a, **k))
    board = arena.leaderboard(bootstrap=50)
    assert arena.leaderboard(bootstrap=50) == board and len(fits) == 1
    match = arena.next_match("ann", random.Random(0))
    arena.vote(match.match_id, "ann", "B")
    assert arena.leaderboard(bootstrap=50) != board and len(fits) == 2


def test_a_vote_sooner_than_the_reading_time_is_refused_and_saves_nothing(store):
    """The page's rule: a click or key press meant for the last pair never lands on a pair shown a
    moment ago; once the pair has been on screen long enough, the same vote counts."""
    two_versions(store)
    arena = ArenaStore(store, min_read_seconds=60)
    match = arena.next_match("ann", random.Random(0))
    with pytest.raises(TooSoonError, match=r"vote not saved: this pair has been on screen 0\.\d s"):
        arena.vote(match.match_id, "ann", "A")
    assert arena.votes() == [] and arena.get(match.match_id)["winner"] is None
    with arena.store.write() as db:  # a minute later
        db.execute("UPDATE matches SET created = created - 61 WHERE match_id = ?", [match.match_id])
    assert arena.vote(match.match_id, "ann", "A")["winner"] == "A"


def test_a_skipped_pair_does_not_come_straight_back(store, arena):
    """Next pair (n) moves on: the (request, pair) just skipped returns only when nothing unseen is left."""
    for record in ("r1", "r2", "r3"):
        two_versions(store, record)
    rng = random.Random(0)
    seen = []
    for _ in range(3):
        row = arena.get(arena.next_match("ann", rng).match_id)
        seen.append(row["record_id"])
    assert sorted(seen) == ["r1", "r2", "r3"]
    row = arena.get(arena.next_match("ann", rng).match_id)
    assert row["record_id"] in seen  # all three skipped once: they come round again


def test_reasoning_is_hidden_on_both_sides_when_one_version_writes_none(store, arena):
    """A version without reasoning (the base model, ReST-EM) would be named by its empty box."""
    add_generations(
        store,
        [
            {"generation_id": "with", "model_version": "m1", "reasoning": "- Style: terse"},
            {"generation_id": "without", "model_version": "m2", "reasoning": ""},
        ],
    )
    match = arena.next_match("ann", random.Random(0))
    assert match.reasoning_hidden
    assert match.left_reasoning == match.right_reasoning == HIDDEN_REASONING
    store.db["generations"].update("without", {"reasoning": "- Tone: warm"})
    match = arena.next_match("bob", random.Random(0))
    assert not match.reasoning_hidden
    assert {match.left_reasoning, match.right_reasoning} == {"- Style: terse", "- Tone: warm"}
