import threading

from restpg.data.longlamp import load_records, sample_path
from restpg.store.database import Store
from restpg.store.generations import GenerationKey, GenerationStore


def _record():
    return load_records(sample_path("product_review", "user", "val"), "product_review").records[0]


def _save(generations, key, record, text="reasoning", stopped=False):
    return generations.save(
        key,
        record,
        prompt="p",
        retrieved_ids=["a", "b"],
        reasoning=text,
        response="r",
        text=text,
        new_tokens=3,
        truncated=False,
        stopped=stopped,
        scores={"rougeL": 0.5},
    )


def test_same_request_and_settings_share_a_key_and_ids_never_change(tmp_path):
    generations = GenerationStore(Store(tmp_path / "db.sqlite"))
    record = _record()
    key = GenerationKey.of("sample", record.record_id, "m", k=5, temperature=0.1, max_new_tokens=256)
    assert key == GenerationKey.of("sample", record.record_id, "m", max_new_tokens=256, temperature=0.1, k=5)
    assert (
        key.digest
        != GenerationKey.of("sample", record.record_id, "m + round-1", k=5, temperature=0.1, max_new_tokens=256).digest
    )
    first = _save(generations, key, record, "first")
    second = _save(generations, key, record, "second")
    assert (first["generation_id"], second["generation_id"]) == (f"{key.digest}-1", f"{key.digest}-2")
    assert generations.latest(key)["reasoning"] == "second"
    assert generations.get(first["generation_id"])["reasoning"] == "first"  # regenerating overwrote nothing
    assert generations.get(first["generation_id"])["reference"] == record.output
    _save(generations, GenerationKey.of("sample", record.record_id, "a + round-1", k=5), record)
    assert generations.model_versions() == ["a + round-1", "m"]


def test_a_stopped_generation_is_stored_but_not_shown_as_the_cached_answer(tmp_path):
    generations = GenerationStore(Store(tmp_path / "db.sqlite"))
    record = _record()
    key = GenerationKey.of("sample", record.record_id, "m", k=5)
    assert generations.latest(key) is None
    _save(generations, key, record, stopped=True)
    assert generations.latest(key) is None and len(generations.list(record_id=record.record_id)) == 1


def test_concurrent_saves_get_distinct_numbers(tmp_path):
    path = tmp_path / "db.sqlite"
    GenerationStore(Store(path))
    record = _record()
    key = GenerationKey.of("sample", record.record_id, "m", k=5)

    def work():
        generations = GenerationStore(Store(path))
        for _ in range(5):
            _save(generations, key, record)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [row["generation_id"] for row in GenerationStore(Store(path)).list()]
    assert len(ids) == len(set(ids)) == 40
