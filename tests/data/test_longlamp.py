import json

import pytest

from helpers import review_row
from restpg.data.longlamp import PUBLIC_TASKS, SPLITS, DatasetError, load_records, read_rows, sample_path, validate_rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- the shipped sample ---------------------------------------------------------------------


@pytest.mark.parametrize("task", PUBLIC_TASKS)
def test_sample_follows_the_published_schema_and_sizes(task):
    users_per_split = {}
    for family in ("user", "temporal"):
        for split in SPLITS:
            loaded = load_records(sample_path(task, family, split), task, family, split)  # strict
            assert not loaded.problems
            for record in loaded.records:
                assert len(record.profile) >= 8
            users_per_split[(family, split)] = set(loaded.users())
    user_family = [users_per_split[("user", s)] for s in SPLITS]
    assert len(set().union(*user_family)) >= 12
    assert not (user_family[0] & user_family[1]) and not (user_family[0] & user_family[2])  # disjoint
    for split in SPLITS:  # temporal: every user in every split
        assert len(users_per_split[("temporal", split)]) >= 12
    train = load_records(sample_path(task, "user", "train"), task)
    assert all(len(train.for_user(u)) >= 2 for u in train.users())


def test_record_ids_are_stable_and_unique():
    path = sample_path("product_review", "user", "train")
    first = [r.record_id for r in load_records(path, "product_review").records]
    again = [r.record_id for r in load_records(path, "product_review").records]
    assert first == again and len(set(first)) == len(first)


def test_repeated_request_gets_distinct_ids():
    loaded = validate_rows([review_row(), review_row()], "product_review", "x")
    assert len({r.record_id for r in loaded.records}) == 2


# -- every source form --------------------------------------------------------------------------


def test_json_jsonl_parquet_and_saved_dataset_give_the_same_records(tmp_path):
    import datasets

    rows = [review_row("U1"), review_row("U2")]
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows)
    as_json = tmp_path / "d.json"
    as_json.write_text(json.dumps(rows))
    dataset = datasets.Dataset.from_list(rows)
    dataset.to_parquet(str(tmp_path / "d.parquet"))
    dataset.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": dataset, "val": dataset}).save_to_disk(str(tmp_path / "saved_dict"))
    expected = [r.record_id for r in load_records(jsonl, "product_review").records]
    for source, split in [
        (as_json, None),
        (tmp_path / "d.parquet", None),
        (tmp_path / "saved", None),
        (tmp_path / "saved_dict", "val"),
    ]:
        assert [r.record_id for r in load_records(source, "product_review", split=split).records] == expected
    with pytest.raises(DatasetError, match="holds several splits"):
        load_records(tmp_path / "saved_dict", "product_review")
    with pytest.raises(DatasetError, match="has no split 'test'"):
        load_records(tmp_path / "saved_dict", "product_review", split="test")


def test_hub_id_goes_to_datasets_load_dataset_with_the_published_config(monkeypatch):
    import datasets

    calls = []

    class Fake:
        def to_list(self):
            return [review_row()]

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return Fake()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_records("LongLaMP/LongLaMP", "product_review", "temporal", "val")
    assert calls == [("LongLaMP/LongLaMP", "product_review_temporal", "val")]
    assert len(loaded.records) == 1


def test_hub_failure_is_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetError, match="abstract_generation_user.*hub unreachable"):
        load_records("LongLaMP/LongLaMP", "abstract_generation", split="test")


def test_topic_writing_accepts_the_benchmark_code_field_names(tmp_path):
    row = {
        "author": "a1",
        "input": "Generate the content for a reddit post about bread",
        "output": "Bake it.",
        "profile": [{"id": "x1", "input": "sourdough", "output": "Feed the starter."}],
    }
    record = load_records(write_jsonl(tmp_path / "t.jsonl", [row]), "topic_writing").records[0]
    assert record.profile[0].fields["summary"] == "sourdough" and record.profile[0].item_id == "x1"


def test_email_completion_shape_is_supported(tmp_path):
    row = {
        "user_id": "e1",
        "input": "Complete the email: Hi team,",
        "output": "see you Monday.",
        "profile": [{"title": "Re: plan", "text": "Sounds good."}],
    }
    assert load_records(write_jsonl(tmp_path / "e.jsonl", [row]), "email_completion").records[0].user_id == "e1"


def test_messy_real_text_is_kept(tmp_path):
    row = review_row(profile=[{"overall": 5, "summary": "", "description": "", "reviewText": "Caf\u00e9 $x^2$ ..."}])
    assert len(load_records(write_jsonl(tmp_path / "m.jsonl", [row]), "product_review").records) == 1


# -- bad input: one clear error naming file, record, user and field -----------------------------


@pytest.mark.parametrize(
    "mutate, field, message",
    [
        (lambda r: r.pop("output"), "output", "missing"),
        (lambda r: r.pop("reviewerId"), "reviewerId", "missing"),
        (lambda r: r.update(input=""), "input", "empty"),
        (lambda r: r.update(input=["not", "text"]), "input", "expected text"),
        (lambda r: r.update(profile=[]), "profile", "empty profile"),
        (lambda r: r.update(profile="a string"), "profile", "expected a list"),
        (lambda r: r["profile"][1].pop("reviewText"), "profile[1].reviewText", "missing"),
        (lambda r: r["profile"].__setitem__(2, "just text"), "profile[2]", "expected an object"),
        (lambda r: r["profile"][0].update(summary={"a": 1}), "profile[0].summary", "expected text"),
    ],
)
def test_bad_record_is_named_precisely(tmp_path, mutate, field, message):
    rows = [review_row("GOOD"), review_row("BAD")]
    mutate(rows[1])
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetError) as error:
        load_records(path, "product_review")
    text = str(error.value)
    assert str(path) in text and "record 1" in text and f"field {field}:" in text and message in text
    if field != "reviewerId":
        assert "user 'BAD'" in text
    lenient = load_records(path, "product_review", strict=False)  # the app keeps the good ones
    assert [r.user_id for r in lenient.records] == ["GOOD"] and len(lenient.problems) == 1


def test_wrong_task_names_the_user_field_and_what_is_there(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [review_row()])
    with pytest.raises(DatasetError, match=r"field name: missing \(the user-id field of abstract_generation"):
        load_records(path, "abstract_generation")


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(review_row()) + "\n{not json\n")
    with pytest.raises(DatasetError, match=r"broken.jsonl: line 2 is not valid JSON"):
        load_records(path, "product_review")


def test_other_broken_sources(tmp_path):
    (tmp_path / "obj.json").write_text('{"reviewerId": "x"}')
    with pytest.raises(DatasetError, match="expected a JSON list of records, found dict"):
        load_records(tmp_path / "obj.json", "product_review")
    (tmp_path / "bad.json").write_text("[1, 2,")
    with pytest.raises(DatasetError, match="bad.json: not valid JSON"):
        load_records(tmp_path / "bad.json", "product_review")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match="not a readable parquet file"):
        load_records(tmp_path / "bad.parquet", "product_review")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"a": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_records(tmp_path / "latin1.jsonl", "product_review")
    (tmp_path / "d.csv").write_text("a,b")
    with pytest.raises(DatasetError, match="unsupported file type '.csv'"):
        load_records(tmp_path / "d.csv", "product_review")
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_records(tmp_path / "missing.jsonl", "product_review")
    with pytest.raises(DatasetError, match="data/missing.jsonl: no such file or folder"):
        load_records("data/missing.jsonl", "product_review")  # looks like owner/name, but is a file path
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DatasetError, match="not a folder written by datasets.save_to_disk"):
        load_records(tmp_path / "empty_dir", "product_review")


def test_unknown_task_split_and_family(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [review_row()])
    with pytest.raises(DatasetError, match="unknown task 'reviews'; known tasks: product_review"):
        load_records(path, "reviews")
    with pytest.raises(DatasetError, match="unknown split 'validation' \\(LongLaMP names it 'val'\\)"):
        load_records(path, "product_review", split="validation")
    with pytest.raises(DatasetError, match="unknown split family 'random'"):
        load_records(path, "product_review", family="random")
    with pytest.raises(DatasetError, match="no public data"):
        sample_path("email_completion")


def test_zero_usable_records_is_an_error_even_when_lenient(tmp_path):
    row = review_row()
    row["profile"] = []
    path = write_jsonl(tmp_path / "none.jsonl", [row])
    with pytest.raises(DatasetError, match="no usable product_review records \\(1 rows read\\).*empty profile"):
        load_records(path, "product_review", strict=False)
    (tmp_path / "blank.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="no usable"):
        load_records(tmp_path / "blank.jsonl", "product_review", strict=False)


def test_many_bad_records_are_summarised(tmp_path):
    rows = [dict(review_row(f"U{i}"), output="") for i in range(8)]
    with pytest.raises(DatasetError, match=r"(?s)8 bad record\(s\).*and 3 more"):
        load_records(write_jsonl(tmp_path / "many.jsonl", rows), "product_review")


def test_read_rows_is_raw(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"anything": 1}])
    assert list(read_rows(path, "product_review")) == [{"anything": 1}]


def test_a_json_list_is_read_a_row_at_a_time_and_its_errors_named(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(' [ {"a": 1} ,\n {"b": [2, 3]}]\n')
    assert list(read_rows(path, "product_review")) == [{"a": 1}, {"b": [2, 3]}]
    path.write_text("[]")
    assert list(read_rows(path, "product_review")) == []
    for text, message in (
        ('{"a": 1}', "expected a JSON list of records, found dict"),
        ('[{"a": 1} {"b": 2}]', "expected ',' or ']'"),
        ('[{"a": 1}] x', "extra data"),
        ('[{"a": }]', "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ):
        path.write_text(text)
        with pytest.raises(DatasetError, match=message):
            list(read_rows(path, "product_review"))


def test_a_file_of_many_bad_rows_keeps_a_hundred_problems_and_counts_them_all(tmp_path):
    """[{}, {}, ...]: every row is counted and none kept; the problems list does not grow with the file."""
    path = tmp_path / "empty.json"
    path.write_text("[" + ",".join(["{}"] * 20_000) + "]")
    with pytest.raises(DatasetError, match=r"no usable product_review records \(20000 rows read\)"):
        load_records(path, "product_review", strict=False)
    good = list(read_rows(sample_path("product_review", "user", "val"), "product_review"))
    path.write_text(json.dumps(good + [{}] * 5_000))
    loaded = load_records(path, "product_review", strict=False)
    assert len(loaded.records) == len(good) and loaded.problem_count == 5_000 and len(loaded.problems) == 100


def test_optional_item_fields_may_be_missing_with_a_note(tmp_path):
    """A year the method never reads is optional: the record loads and the loader says so."""
    path = tmp_path / "abstracts.jsonl"
    item = {"id": "p1", "title": "A title", "abstract": "An abstract."}  # no "year"
    path.write_text(
        json.dumps(
            {
                "name": "Ada",
                "input": 'Generate an abstract for the title "X"',
                "output": "Y.",
                "profile": [item, dict(item, id="p2", year=2020)],
            }
        )
        + "\n"
    )
    loaded = load_records(path, "abstract_generation")
    assert len(loaded.records) == 1 and not loaded.problems
    assert loaded.notes == [
        "1 record(s) have profile items without the optional field 'year' (the method does not read it)"
    ]
    del item["title"]  # a field the method reads is still required
    path.write_text(json.dumps({"name": "Ada", "input": "x", "output": "y", "profile": [item]}) + "\n")
    with pytest.raises(DatasetError, match=r"record 0 \(user 'Ada'\): field profile\[0\].title: missing"):
        load_records(path, "abstract_generation")
