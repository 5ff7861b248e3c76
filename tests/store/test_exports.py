import csv
import json

import datasets
import pytest

from restpg.store.arena import ArenaStore
from restpg.store.database import Store
from restpg.store.exports import EXPORT_FORMATS, ExportError, export_rows
from restpg.store.generations import GenerationStore
from restpg.store.ratings import COLUMNS, Rating, RatingStore

ROWS = [
    {"name": "a", "score": 1, "weight": 0.5, "note": None, "text": 'multi\nline, "quoted" ünïcode'},
    {"name": "b", "score": 2, "weight": None, "note": "x", "text": ""},
]


def read_back(path, fmt):
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    if fmt == "jsonl":
        return [json.loads(line) for line in open(path, encoding="utf-8")]
    if fmt == "parquet":
        return datasets.Dataset.from_parquet(str(path)).to_list()
    return datasets.load_from_disk(str(path)).to_list()


def leftovers(folder):
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))]


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_every_format_round_trips_into_a_new_folder(tmp_path, fmt):
    path = tmp_path / "new" / "deeper" / f"rows.{fmt}"
    assert export_rows(ROWS, path, fmt) == path
    back = read_back(path, fmt)
    if fmt == "csv":  # text: None is the empty string
        assert back == [{k: "" if v is None else str(v) for k, v in row.items()} for row in ROWS]
    else:
        assert back == ROWS
    assert not leftovers(tmp_path)


def test_csv_cells_a_spreadsheet_would_run_are_escaped_and_other_formats_keep_them(tmp_path):
    rows = [
        {"comment": '=HYPERLINK("http://evil.example","x")', "score": -1, "other": "+1 2"},
        {"comment": "@SUM(A1)", "score": 0.5, "other": "-ok"},
        {"comment": "fine = fine", "score": 2, "other": "\tcmd"},
    ]
    back = read_back(export_rows(rows, tmp_path / "r.csv", "csv"), "csv")
    assert [row["comment"] for row in back] == ['\'=HYPERLINK("http://evil.example","x")', "'@SUM(A1)", "fine = fine"]
    assert [row["other"] for row in back] == ["'+1 2", "'-ok", "'\tcmd"]
    assert [row["score"] for row in back] == ["-1", "0.5", "2"]  # numbers are not formulas
    assert read_back(export_rows(rows, tmp_path / "r.jsonl", "jsonl"), "jsonl") == rows


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_columns_lead_and_nothing_is_dropped(tmp_path, fmt):
    rows = [{"b": 1, "extra": "e"}, {"a": "x", "b": 2}]
    path = export_rows(rows, tmp_path / f"out.{fmt}", fmt, columns=["a", "b"])
    back = read_back(path, fmt)
    assert list(back[0]) == ["a", "b", "extra"]
    if fmt != "csv":
        assert back == [{"a": None, "b": 1, "extra": "e"}, {"a": "x", "b": 2, "extra": None}]


def test_empty_rows_write_an_empty_file_for_csv_and_jsonl_and_fail_for_datasets(tmp_path):
    csv_path = export_rows([], tmp_path / "empty.csv", "csv", columns=["a", "b"])
    assert csv_path.read_bytes() == b"a,b\r\n"
    assert export_rows([], tmp_path / "bare.csv", "csv").read_text() == ""
    assert export_rows([], tmp_path / "empty.jsonl", "jsonl", columns=["a"]).read_text() == ""
    for fmt in ("parquet", "hf"):
        with pytest.raises(ExportError, match="nothing to export"):
            export_rows([], tmp_path / f"empty.{fmt}", fmt, columns=["a"])
        assert not (tmp_path / f"empty.{fmt}").exists()
    assert not leftovers(tmp_path)


def test_unknown_format_names_it_and_the_known_ones(tmp_path):
    with pytest.raises(ExportError, match=r"unknown export format 'xml'; formats: csv, jsonl, parquet, hf"):
        export_rows(ROWS, tmp_path / "out.xml", "xml")
    assert not list(tmp_path.iterdir())


def test_hf_replaces_a_previous_export_only(tmp_path):
    folder = tmp_path / "export"
    export_rows(ROWS, folder, "hf")
    export_rows(ROWS[:1], folder, "hf")  # a previous export: replaced
    assert datasets.load_from_disk(str(folder)).to_list() == ROWS[:1]
    assert not leftovers(tmp_path)

    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="'.*mine' exists and is a folder that is not a previous hf export"):
        export_rows(ROWS, other, "hf")
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "file.csv"
    a_file.write_text("x")
    with pytest.raises(ExportError, match="is a file that is not a previous hf export"):
        export_rows(ROWS, a_file, "hf")
    assert a_file.read_text() == "x"
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_file_export_onto_a_folder_is_an_error(tmp_path, fmt):
    with pytest.raises(ExportError, match=f"is a folder; a {fmt} export is one file"):
        export_rows(ROWS, tmp_path, fmt)


def test_a_column_mixing_kinds_is_an_error_for_datasets(tmp_path):
    rows = [{"a": 1}, {"a": "one"}]
    assert export_rows(rows, tmp_path / "mixed.jsonl", "jsonl")  # text formats take anything
    with pytest.raises(ExportError, match="rows do not fit one table"):
        export_rows(rows, tmp_path / "mixed.parquet", "parquet")
    assert not (tmp_path / "mixed.parquet").exists() and not leftovers(tmp_path)


def test_progress_bars_are_off_while_writing_and_restored(tmp_path):
    assert not datasets.are_progress_bars_disabled()
    export_rows(ROWS, tmp_path / "rows.parquet", "parquet")
    assert not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        export_rows(ROWS, tmp_path / "rows.hf", "hf")
        assert datasets.are_progress_bars_disabled()
    finally:
        datasets.enable_progress_bars()


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "restpg.db")


def test_ratings_export_every_format_with_the_annotator(tmp_path, store):
    ratings = RatingStore(store)
    for gid, annotator in [("g1", "ann"), ("g2", "bob")]:
        ratings.save(Rating(gid, annotator, 1, 2, 3, True, "c"), "m1", "why", "what")
    expected = ratings.all()
    for fmt in ("jsonl", "parquet", "hf"):
        back = read_back(ratings.export(tmp_path / f"ratings.{fmt}", fmt), fmt)
        assert back == expected and [row["annotator"] for row in back] == ["ann", "bob"]
    with open(ratings.export_csv(tmp_path / "ratings.csv"), newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS and len(list(reader)) == 2
    assert read_back(ratings.export_jsonl(tmp_path / "wrapped.jsonl"), "jsonl") == expected


def test_no_ratings_export_a_header_or_say_nothing_to_export(tmp_path, store):
    ratings = RatingStore(store)
    assert ratings.export_csv(tmp_path / "r.csv").read_text().strip() == ",".join(COLUMNS)
    with pytest.raises(ExportError, match="nothing to export"):
        ratings.export(tmp_path / "r.parquet", "parquet")


def generation_rows(store, rows):
    GenerationStore(store)  # the table, with its E-step sample columns
    base = {"dataset": "sample", "record_id": "r1", "task": "product_review", "stopped": 0, "reasoning": "why"}
    store.db["generations"].insert_all([{**base, **row} for row in rows], pk="generation_id")


def test_votes_export(tmp_path, store):
    import random

    generation_rows(
        store,
        [
            {"generation_id": "a", "model_version": "m1", "response": "one", "created": 1.0},
            {"generation_id": "b", "model_version": "m2", "response": "two", "created": 2.0},
        ],
    )
    arena = ArenaStore(store)
    with pytest.raises(ExportError, match="nothing to export"):
        arena.export(tmp_path / "votes.parquet", "parquet")
    no_votes = arena.export(tmp_path / "votes.csv", "csv").read_text()
    assert no_votes.startswith("match_id,dataset,record_id,left_id,right_id") and len(no_votes.splitlines()) == 1
    match = arena.next_match("ann", random.Random(0))
    arena.vote(match.match_id, "ann", "A")
    arena.next_match("ann", random.Random(1))  # shown, not voted: not exported
    back = read_back(arena.export(tmp_path / "votes.parquet", "parquet"), "parquet")
    assert back == arena.votes() and len(back) == 1 and back[0]["winner"] == "A"


def test_samples_export_keeps_every_column_and_filters_by_run(tmp_path, store):
    generation_rows(
        store,
        [
            {"generation_id": "page", "model_version": "m1", "response": "r", "created": 1.0},
            *(
                {
                    "generation_id": f"{run}/s{i}",
                    "model_version": f"{run} round-1 E-step samples",
                    "response": "r",
                    "created": float(i),
                    "run_id": run,
                    "round": 1,
                    "sample_status": "kept" if i else "rejected",
                    "reward": i / 10,
                }
                for run in ("run-a", "run-b")
                for i in range(2)
            ),
        ],
    )
    generations = GenerationStore(store)
    assert [r["generation_id"] for r in generations.samples()] == ["run-a/s0", "run-a/s1", "run-b/s0", "run-b/s1"]
    back = read_back(generations.export_samples(tmp_path / "samples.hf", "hf", run_id="run-b"), "hf")
    assert [r["generation_id"] for r in back] == ["run-b/s0", "run-b/s1"]
    assert list(back[0]) == list(store.db["generations"].columns_dict)
    assert [r["sample_status"] for r in back] == ["rejected", "kept"]
