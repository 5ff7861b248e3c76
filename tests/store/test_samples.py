"""A run's E-step samples in the store: stable ids, statuses, idempotent imports, bad folders."""

import json
import shutil

import pytest

from restpg.jsonl import read_jsonl, write_jsonl
from restpg.runs import RunFolder
from restpg.store.database import Store
from restpg.store.generations import GenerationStore
from restpg.store.ratings import RatingStore
from restpg.store.samples import SampleImportError, import_run, import_runs, run_folders, sample_version
from restpg.training.versions import SHIPPED_DIR

SHIPPED_RUN = SHIPPED_DIR / "restpg-sample"


@pytest.fixture
def generations(tmp_path):
    return GenerationStore(Store(tmp_path / "restpg.db"))


def test_the_shipped_samples_import_once_under_stable_ids(generations, tmp_path):
    report = import_run(generations, SHIPPED_RUN)
    run_id = RunFolder(SHIPPED_RUN).run_id()
    samples = read_jsonl(SHIPPED_RUN / "round-1" / "samples.jsonl")
    assert report.run_id == run_id and report.added["round-1"] == len(samples)
    rows = generations.list(model_version=sample_version(run_id, "round-1"))
    assert [r["generation_id"] for r in rows] == [f"{run_id}/{s['sample_id']}" for s in samples]  # file order
    selection = json.loads((SHIPPED_RUN / "round-1" / "selection.json").read_text())
    assert sum(r["sample_status"] == "trained" for r in rows) == selection["kept"]  # its rounds are finished
    first = rows[0]
    assert first["reference"] and first["request"] and first["round"] == 1
    assert json.loads(first["scores"])["rougeL"] == pytest.approx(first["reward"])  # the shipped run's reward
    # a second import adds nothing; a copy of the store elsewhere gets the same ids
    assert import_run(generations, SHIPPED_RUN).total_added == 0
    other = GenerationStore(Store(tmp_path / "other.db"))
    import_run(other, SHIPPED_RUN)
    assert {r["generation_id"] for r in other.list()} == {r["generation_id"] for r in generations.list()}
    # samples queue and rate like generations
    ratings = RatingStore(generations.store)
    last = f"round-{json.loads((SHIPPED_RUN / 'manifest.json').read_text())['config']['rounds']}"
    queue = ratings.queue("ann", "unrated", {"model_version": sample_version(run_id, last), "sample_status": "trained"})
    assert len(queue) == json.loads((SHIPPED_RUN / last / "selection.json").read_text())["kept"]


def test_statuses_follow_the_training_set_and_new_samples_append(generations, tmp_path):
    run = tmp_path / "runs" / "mine"  # the shipped run as it was before its round's M-step started
    ignore = shutil.ignore_patterns("adapter", "generations.jsonl", "training_set.jsonl")
    shutil.copytree(SHIPPED_RUN, run, ignore=ignore)
    samples = read_jsonl(run / "round-1" / "samples.jsonl")
    import_run(generations, run)
    version = sample_version(RunFolder(run).run_id(), "round-1")
    kept = [r for r in generations.list(model_version=version) if r["sample_status"] == "kept"]
    trained = [r["generation_id"].split("/", 1)[1] for r in kept[1:]]
    write_jsonl(
        run / "round-1" / "training_set.jsonl", [{"sample_id": s, "reward": 0.2, "weight": 0.2} for s in trained]
    )
    import_run(generations, run)
    statuses = {r["generation_id"]: r["sample_status"] for r in generations.list(model_version=version)}
    assert statuses[kept[0]["generation_id"]] == "vetoed"
    assert sum(s == "trained" for s in statuses.values()) == len(trained)
    assert run_folders(tmp_path / "runs") == [run]
    reports, problems = import_runs(generations, [tmp_path / "runs"])
    assert problems == [] and reports[0].total_added == 0 and len(samples) == len(statuses)


def test_bad_run_folders_are_named_and_skipped(generations, tmp_path):
    with pytest.raises(SampleImportError, match="not a run folder"):
        import_run(generations, tmp_path)
    broken = tmp_path / "runs" / "broken"
    (broken / "round-1").mkdir(parents=True)
    (broken / "manifest.json").write_text("{")
    (broken / "round-1" / "samples.jsonl").write_text("")
    good = tmp_path / "runs" / "good"
    shutil.copytree(SHIPPED_RUN, good, ignore=shutil.ignore_patterns("adapter", "generations.jsonl"))
    reports, problems = import_runs(generations, [tmp_path / "runs"])
    assert len(problems) == 1 and "broken" in problems[0] and "manifest" in problems[0]
    assert reports[0].total_added > 0


def _grown_run(tmp_path, copies: int):
    """The shipped run with its round-1 samples repeated ``copies`` times under new ids (no M-step)."""
    run = tmp_path / "runs" / "large"
    shutil.copytree(
        SHIPPED_RUN, run, ignore=shutil.ignore_patterns("adapter", "generations.jsonl", "training_set.jsonl")
    )
    samples = read_jsonl(run / "round-1" / "samples.jsonl")
    grown = [
        {**s, "sample_id": f"{s['sample_id']}:{copy}", "record_id": f"{s['record_id']}:{copy}"}
        for copy in range(copies)
        for s in samples
    ]
    write_jsonl(run / "round-1" / "samples.jsonl", grown)
    return run, grown


def test_a_run_larger_than_sqlites_variable_limit_imports_in_pieces(generations, tmp_path):
    """No query binds one variable per sample: with SQLite's old limit of 999 variables, a round of
    2,592 samples imports, in the file's order, and a second import only updates statuses."""
    import sqlite3

    generations.store.db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    run, grown = _grown_run(tmp_path, 3)
    report = import_run(generations, run)
    assert report.added["round-1"] == len(grown) == 2592
    rows = generations.list(model_version=sample_version(RunFolder(run).run_id(), "round-1"))
    assert [r["generation_id"].split("/", 1)[1] for r in rows] == [s["sample_id"] for s in grown]
    assert sum(report.statuses["round-1"].values()) == len(grown) and report.statuses["round-1"]["kept"] > 0
    again = import_run(generations, run)
    assert again.total_added == 0 and again.statuses == report.statuses


def test_a_sample_missing_a_field_is_named_with_its_line(generations, tmp_path):
    run, grown = _grown_run(tmp_path, 1)
    del grown[4]["reward"]
    write_jsonl(run / "round-1" / "samples.jsonl", grown)
    with pytest.raises(SampleImportError, match=r"samples.jsonl: sample 5 has no reward"):
        import_run(generations, run)
