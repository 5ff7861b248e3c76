import threading

from restpg.store.database import Store


def test_runs_and_round_metrics(tmp_path):
    store = Store(tmp_path / "restpg.db")
    store.start_run("r1", "em", tmp_path / "run", {"rounds": 2}, pid=123)
    store.update_run("r1", stage="round-1: E-step", progress=0.5)
    row = store.run("r1")
    assert row["status"] == "running" and row["stage"] == "round-1: E-step" and row["progress"] == 0.5
    store.record_metrics("r1", 0, {"rougeL": 0.1, "judge": 0.3})
    store.record_metrics("r1", 1, {"rougeL": 0.2}, {"kept": 5})
    store.record_metrics("r1", 1, {"rougeL": 0.25})  # a re-evaluated round replaces its value
    assert store.metrics("r1") == {0: {"rougeL": 0.1, "judge": 0.3}, 1: {"rougeL": 0.25}}
    assert Store(tmp_path / "restpg.db").run("r1")["pid"] == 123  # another process/connection sees it
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_writes_from_many_threads(tmp_path):
    store = Store(tmp_path / "restpg.db")
    store.start_run("r", "em", tmp_path, {}, pid=1)

    def write(i):
        store.record_metrics("r", i, {"m": float(i)})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(store.metrics("r")) == list(range(20))


def test_many_stores_opened_at_once_on_one_file(tmp_path):
    import threading

    errors = []
    barrier = threading.Barrier(20, timeout=30)

    def open_store():
        try:
            barrier.wait()
            Store(tmp_path / "db.sqlite").start_run(f"r{threading.get_ident()}", "em", tmp_path, {}, 1)
        except Exception as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(Store(tmp_path / "db.sqlite").runs()) == 20
