import csv
import json
import subprocess
import sys
import textwrap
import threading

import krippendorff
import numpy as np
import pytest

from restpg.cli import main
from restpg.store.database import Store
from restpg.store.ratings import COLUMNS, CRITERIA, Rating, RatingError, RatingStore


def add_generations(store, rows):
    """Rows straight into the generations table (the generations module owns it)."""
    base = {
        "record_id": "r",
        "task": "product_review",
        "family": "user",
        "split": "dev",
        "user_id": "u",
        "dataset": "sample",
        "model_version": "m1",
        "reasoning": "why",
        "response": "what",
    }
    store.db["generations"].insert_all([{**base, **row} for row in rows], pk="generation_id", alter=True)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "restpg.db")


@pytest.fixture
def ratings(store):
    return RatingStore(store)


def rate(ratings, generation_id, annotator, scores=(4, 4, 4), copies=False, comment=""):
    return ratings.save(
        Rating(generation_id, annotator, *scores, copies_output=copies, comment=comment),
        model_version="m1",
        reasoning=f"reasoning of {generation_id}",
        response="resp",
    )


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"faithfulness": 0}, "faithfulness"),
        ({"relevance": 6}, "relevance"),
        ({"usefulness": 3.0}, "usefulness"),
        ({"usefulness": True}, "usefulness"),
        ({"faithfulness": "4"}, "faithfulness"),
        ({"annotator": "   "}, "annotator"),
        ({"annotator": "a" * 65}, "annotator"),
        ({"comment": "x" * 2001}, "comment"),
        ({"copies_output": "yes"}, "copies_output"),
    ],
)
def test_bad_values_name_the_field(ratings, changes, field):
    values = {"generation_id": "g1", "annotator": "ann", "faithfulness": 3, "relevance": 3, "usefulness": 3, **changes}
    with pytest.raises(RatingError, match=field):
        ratings.save(Rating(**values), "m1", "r", "s")
    assert ratings.all() == []
    assert issubclass(RatingError, ValueError)


def test_limits_are_inclusive_and_annotator_is_stripped(ratings):
    row = ratings.save(Rating("g1", f"  {'a' * 64}  ", 1, 5, 5, comment="x" * 2000), "m1", "r", "s")
    assert row["annotator"] == "a" * 64 and ratings.get("a" * 64, "g1")["faithfulness"] == 1


def test_upsert_replaces_and_history_keeps_every_version(ratings):
    first = rate(ratings, "g1", "ann", (2, 3, 4), comment="first")
    second = ratings.save(
        Rating("g1", "ann", 5, 5, 5, copies_output=True, comment="edited"),
        model_version="m2",
        reasoning="new text",
        response="resp2",
    )
    stored = ratings.get("ann", "g1")
    assert stored == second
    assert stored["faithfulness"] == 5 and stored["copies_output"] == 1 and stored["comment"] == "edited"
    assert stored["reasoning"] == "new text" and stored["model_version"] == "m2"
    assert stored["created"] == first["created"] and stored["updated"] >= first["updated"]
    assert len(ratings.all()) == 1
    history = ratings.history("g1")
    assert [h["comment"] for h in history] == ["first", "edited"]
    assert [h["faithfulness"] for h in history] == [2, 5] and history[0]["reasoning"] == "reasoning of g1"
    rate(ratings, "g1", "other")
    assert len(ratings.history("g1")) == 3 and len(ratings.history("g1", annotator="ann")) == 2
    assert ratings.get("nobody", "g1") is None


def test_queues_and_progress(store, ratings):
    add_generations(
        store,
        [
            {"generation_id": "g3", "created": 1.0, "task": "abstract_generation"},
            {"generation_id": "g1", "created": 2.0},
            {"generation_id": "g2", "created": 2.0, "model_version": "m2"},
            {"generation_id": "g0", "created": 3.0},
        ],
    )
    assert ratings.queue("ann", "all") == ["g3", "g1", "g2", "g0"]  # by created, then id
    assert ratings.progress("ann") == (0, 4)
    rate(ratings, "g1", "ann", (4, 4, 4))
    rate(ratings, "g2", "bob", (5, 2, 5))
    rate(ratings, "g0", "ann", (3, 3, 1))
    assert ratings.queue("ann", "unrated") == ["g3", "g2"]  # g2 is rated, but not by ann
    assert ratings.queue("ann", "mine") == ["g1", "g0"]
    assert ratings.queue("ann", "low") == ["g2", "g0"]  # by anyone
    assert ratings.queue("ann", "low", low_threshold=1) == ["g0"]
    assert ratings.queue("ann", "low", low_threshold=3) == ["g2", "g0"]
    assert ratings.queue("ann", "all", {"task": "product_review"}) == ["g1", "g2", "g0"]
    assert ratings.queue("ann", "unrated", {"task": "product_review", "model_version": "m2"}) == ["g2"]
    assert ratings.queue("bob", "unrated", {"model_version": "m2"}) == []
    assert ratings.progress("ann") == (2, 4)
    assert ratings.progress("ann", {"model_version": "m1"}) == (2, 3)
    assert ratings.progress("bob", {"task": "abstract_generation"}) == (0, 1)
    with pytest.raises(RatingError, match="nope"):
        ratings.queue("ann", "all", {"nope": 1})
    with pytest.raises(RatingError, match="queue"):
        ratings.queue("ann", "everything")


def test_queue_without_a_generations_table(ratings):
    assert ratings.queue("ann", "all") == [] and ratings.progress("ann") == (0, 0)


def test_export_round_trips(tmp_path, ratings):
    rate(ratings, "g1", "ann", (1, 2, 3), copies=True, comment='multi\nline, "quoted" ünïcode')
    rate(ratings, "g2", "bob", (5, 4, 3))
    expected = ratings.all()
    assert len(expected) == 2

    csv_path = ratings.export_csv(tmp_path / "out" / "ratings.csv")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS
        back = list(reader)
    assert back == [{k: str(v) for k, v in row.items()} for row in expected]

    jsonl_path = ratings.export_jsonl(tmp_path / "ratings.jsonl")
    assert [json.loads(line) for line in jsonl_path.read_text(encoding="utf-8").splitlines()] == expected
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no temp files left


def test_agreement(ratings):
    assert ratings.agreement() == {**{c: None for c in CRITERIA}, "copies_output": None, "items": 0, "annotators": 0}
    # perfect agreement (with variation) on every criterion
    for gid, scores, copies in [("g1", (1, 2, 3), True), ("g2", (3, 4, 5), False), ("g3", (5, 5, 1), False)]:
        for annotator in ("ann", "bob"):
            rate(ratings, gid, annotator, scores, copies)
    rate(ratings, "g4", "ann", (1, 1, 1))  # one rating only: not an item
    result = ratings.agreement()
    assert result == {**{c: 1.0 for c in CRITERIA}, "copies_output": 1.0, "items": 3, "annotators": 2}

    # disagreement: faithfulness by hand-built matrix, copies_output by hand (nominal alpha = 8/15)
    rate(ratings, "g4", "bob", (2, 1, 1), copies=False)
    rate(ratings, "g2", "cid", (4, 4, 5), copies=True)
    rate(ratings, "g3", "bob", (5, 5, 1), copies=True)
    result = ratings.agreement()
    faithfulness = np.array([[1, 3, 5, 1], [1, 3, 5, 2], [np.nan, 4, np.nan, np.nan]])
    assert result["faithfulness"] == pytest.approx(
        krippendorff.alpha(reliability_data=faithfulness, level_of_measurement="ordinal")
    )
    assert 0 < result["faithfulness"] < 1
    # copies: g1 (1,1), g2 (0,0,1), g3 (0,1), g4 (0,0). Pairable values 9: n1=4, n0=5.
    # coincidences: o11 = 2, o01 = o10 = 1 (g2: 2 pairs at 1/2) + 1 (g3) = 2, o00 = 1 (g2) + 2 (g4) = 3.
    # alpha = 1 - (n - 1) * o01_both / (2 * n0 * n1) = 1 - 8 * 4 / 40 = 0.2
    assert result["copies_output"] == pytest.approx(0.2)
    assert result["items"] == 4 and result["annotators"] == 3


def test_agreement_degenerate_cases_are_none(ratings):
    for gid in ("g1", "g2", "g3"):
        for annotator in ("ann", "bob"):
            rate(ratings, gid, annotator, (4, 4, 4), copies=False)  # no variation at all
    assert ratings.agreement() == {**{c: None for c in CRITERIA}, "copies_output": None, "items": 3, "annotators": 2}


def test_agreement_needs_two_items(ratings):
    rate(ratings, "g1", "ann", (1, 2, 3))
    rate(ratings, "g1", "bob", (5, 4, 3), copies=True)
    rate(ratings, "g2", "ann", (1, 2, 3))
    result = ratings.agreement()
    assert result["items"] == 1 and all(result[c] is None for c in (*CRITERIA, "copies_output"))


def test_concurrent_saves_lose_nothing(tmp_path):
    path = tmp_path / "restpg.db"
    RatingStore(Store(path))
    # Store() itself is built here: concurrent Store() on one file can race in its meta-row insert.
    stores = [Store(path) for _ in range(20)]
    errors, start = [], threading.Barrier(20, timeout=60)

    def work(t):
        try:
            own = RatingStore(stores[t])  # its tables are created concurrently, each thread on its own connection
            start.wait()
            for i in range(10):
                own.save(Rating(f"g{i}", f"ann{t}", 1 + (i + t) % 5, 3, 4, comment=f"{t}-{i}"), "m1", "r", "s")
                if i == 0:  # and everyone races on one key
                    own.save(Rating("shared", "everyone", 1 + t % 5, 2, 2), "m1", "r", "s")
        except Exception as error:  # noqa: BLE001 - the test reports every failure
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check = RatingStore(Store(path))
    assert len(check.all()) == 20 * 10 + 1
    assert check.store.db["rating_history"].count == 20 * 10 + 20
    assert {r["comment"] for r in check.all()} >= {f"{t}-{i}" for t in range(20) for i in range(10)}


def test_a_confirmed_save_survives_a_hard_kill(tmp_path):
    path = tmp_path / "restpg.db"
    script = textwrap.dedent(f"""
        import os, signal
        from restpg.store.ratings import Rating, RatingStore
        from restpg.store.database import Store
        RatingStore(Store({str(path)!r})).save(Rating("g1", "ann", 2, 3, 4, comment="kept"), "m1", "r", "s")
        print("saved", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9 and done.stdout == "saved\n", done.stderr
    row = RatingStore(Store(path)).get("ann", "g1")
    assert row is not None and row["comment"] == "kept" and row["usefulness"] == 4


def test_cli_export_and_agreement(tmp_path, capsys):
    path = tmp_path / "restpg.db"
    ratings = RatingStore(Store(path))
    for gid, scores in [("g1", (1, 2, 3)), ("g2", (4, 5, 5))]:
        rate(ratings, gid, "ann", scores, copies=True)
        rate(ratings, gid, "bob", scores, copies=True)  # copies_output never varies: alpha undefined
    out = tmp_path / "r.jsonl"
    assert main(["ratings", "export", "--store", str(path), "--format", "jsonl", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4 and "4 rating(s) written" in capsys.readouterr().out
    assert main(["ratings", "export", "--store", str(path), "--out", str(tmp_path / "r.csv")]) == 0
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    capsys.readouterr()
    assert main(["ratings", "agreement", "--store", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "2 generation(s)" in printed and "2 annotator(s)" in printed
    assert "faithfulness   1.0000 (ordinal)" in printed and "copies_output  undefined (nominal)" in printed


def test_cli_missing_store_is_an_error(tmp_path, capsys):
    missing = tmp_path / "nope.db"
    assert main(["ratings", "agreement", "--store", str(missing)]) == 2
    assert main(["ratings", "export", "--store", str(missing), "--out", str(tmp_path / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "x.csv").exists()
