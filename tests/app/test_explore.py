"""The app's explore service without the UI: datasets and uploads, safe paths, versions, streamed and
stored generations."""

import hashlib
import json
from pathlib import Path

import pytest

from helpers import review_row
from restpg.app.explore import SAMPLE_DATASET, AppPaths, ExploreService
from restpg.data.longlamp import DatasetError
from restpg.inference.models import ModelConfig, ModelError


@pytest.fixture
def service(tmp_path, tiny_model_dir):
    paths = AppPaths(tmp_path / "data", tmp_path / "runs", shipped_dir=tmp_path / "shipped")  # nothing shipped here
    paths.data_dir.mkdir()
    return ExploreService(ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32"), paths, use_judge=False)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_datasets_are_the_sample_and_files_under_the_data_dir(service):
    _write(service.paths.data_dir / "mine.jsonl", [review_row("U1")])
    (service.paths.data_dir / "notes.txt").write_text("x")
    assert service.dataset_choices() == [SAMPLE_DATASET, "mine.jsonl"]
    assert service.dataset("mine.jsonl", "product_review", "user", "test").users() == ["U1"]
    assert service.dataset(SAMPLE_DATASET, "product_review", "user", "val").records


@pytest.mark.parametrize("name", ["../secret.jsonl", "/etc/passwd", "missing.jsonl", "notes.txt"])
def test_paths_outside_the_data_dir_or_not_data_files_are_refused(service, name):
    (service.paths.data_dir.parent / "secret.jsonl").write_text(json.dumps(review_row()) + "\n")
    (service.paths.data_dir / "notes.txt").write_text("x")
    with pytest.raises(DatasetError):
        service.dataset(name, "product_review", "user", "test")


def test_upload_keeps_good_files_and_refuses_bad_ones(service, tmp_path):
    good = _write(tmp_path / "tmp1", [review_row("U1"), dict(review_row("U2"), output="")])
    name = service.upload(good, "../../My Reviews.jsonl", "product_review", "user")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()[:10]
    assert name == f"uploads/My_Reviews-{digest}.jsonl" and name in service.dataset_choices()
    loaded = service.dataset(name, "product_review", "user", "test")
    assert len(loaded.records) == 1 and len(loaded.problems) == 1
    broken = tmp_path / "tmp2"
    broken.write_text("{not json\n")
    with pytest.raises(DatasetError, match="broken.jsonl") as refused:
        service.upload(broken, "broken.jsonl", "product_review", "user")
    assert str(tmp_path) not in str(refused.value)  # the user's file name, not the server's temporary copy
    with pytest.raises(DatasetError, match="not a dataset file"):
        service.upload(good, "evil.sh", "product_review", "user")
    assert sorted(p.name for p in service.paths.uploads.iterdir()) == [f"My_Reviews-{digest}.jsonl"]


def test_uploads_under_one_name_keep_each_file_and_the_same_file_is_stored_once(service, tmp_path):
    """Two people uploading reviews.jsonl: neither replaces the other's; nothing temporary is left."""
    first = _write(tmp_path / "a", [review_row("U1")])
    second = _write(tmp_path / "b", [review_row("U2")])
    one = service.upload(first, "reviews.jsonl", "product_review", "user")
    other = service.upload(second, "reviews.jsonl", "product_review", "user")
    assert one != other
    assert service.dataset(one, "product_review", "user", "test").users() == ["U1"]
    assert service.dataset(other, "product_review", "user", "test").users() == ["U2"]
    assert service.upload(first, "reviews.jsonl", "product_review", "user") == one
    assert len(list(service.paths.uploads.iterdir())) == 2  # no temporary copies left


def test_hostile_uploads_are_refused_with_their_reason(service, tmp_path):
    nested = tmp_path / "n"
    nested.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(DatasetError, match="nested.json: nested too deeply"):
        service.upload(nested, "nested.json", "product_review", "user")
    with pytest.raises(DatasetError, match="not a dataset file"):
        service.upload(nested, "x" * 5000 + ".sh", "product_review", "user")
    empty = tmp_path / "e"
    empty.write_text("[" + ",".join(["{}"] * 50_000) + "]")
    with pytest.raises(DatasetError, match=r"no usable product_review records \(50000 rows read\)"):
        service.upload(empty, "x" * 5000 + ".json", "product_review", "user")
    assert list(service.paths.uploads.iterdir()) == []


def test_the_parsed_dataset_cache_drops_the_least_recently_used_past_its_budget(service, monkeypatch):
    import restpg.app.explore

    for n in range(3):
        _write(service.paths.data_dir / f"d{n}.jsonl", [review_row(f"U{n}")])
    size = (service.paths.data_dir / "d0.jsonl").stat().st_size
    monkeypatch.setattr(restpg.app.explore, "DATASET_CACHE_BYTES", 2 * size)
    for n in range(3):
        service.dataset(f"d{n}.jsonl", "product_review", "user", "test")
    assert [Path(key[0]).name for key in service._datasets] == ["d1.jsonl", "d2.jsonl"]


def test_stream_then_stored_then_regenerate(service):
    record = service.record(
        SAMPLE_DATASET,
        "product_review",
        "user",
        "val",
        service.dataset(SAMPLE_DATASET, "product_review", "user", "val").users()[0],
        0,
    )
    settings = service.settings_for(3, 8, 0.0)
    assert service.stored(SAMPLE_DATASET, record, "base", settings) is None
    updates = list(service.stream(SAMPLE_DATASET, record, "base", settings, "user", "val"))
    assert not updates[0].done and updates[-1].done
    row = updates[-1].row
    assert row["model_version"] == service.model_config.model and json.loads(row["settings"])["k"] == 3
    assert len(json.loads(row["retrieved_ids"])) == 3 and set(json.loads(row["scores"])) == {
        "rouge1",
        "rougeL",
        "meteor",
    }
    assert service.stored(SAMPLE_DATASET, record, "base", settings)["generation_id"] == row["generation_id"]
    again = list(service.stream(SAMPLE_DATASET, record, "base", settings))[-1].row
    assert again["generation_id"] != row["generation_id"]
    assert service.stored(SAMPLE_DATASET, record, "base", settings)["generation_id"] == again["generation_id"]


def test_bad_requests_and_settings_are_named(service):
    user = service.dataset(SAMPLE_DATASET, "product_review", "user", "val").users()[0]
    with pytest.raises(DatasetError, match="no request 7"):
        service.record(SAMPLE_DATASET, "product_review", "user", "val", user, 7)
    with pytest.raises(DatasetError, match="nobody"):
        service.record(SAMPLE_DATASET, "product_review", "user", "val", "nobody", 0)
    with pytest.raises(ValueError, match="temperature"):
        service.settings_for(5, 8, 7.0)
    with pytest.raises(ModelError, match="unknown model version"):
        service.activate("round-99")


def test_finished_adapters_become_versions_and_a_corrupt_one_is_named(service):
    from helpers import make_adapter

    make_adapter(service.model_config.model, service.paths.runs_dir / "jobs" / "demo" / "round-1" / "adapter")
    versions = service.versions()
    label = next(v for v in versions if v != "base")
    assert "demo" in label and "round-1" in label
    assert service.activate(label).active_adapter is not None
    assert service.activate("base").active_adapter is None
    broken = service.paths.runs_dir / "jobs" / "broken" / "round-1" / "adapter"
    broken.mkdir(parents=True)
    (broken / "adapter_config.json").write_text("{oops")
    bad_label = next(v for v in service.versions() if "broken" in v)
    with pytest.raises(ModelError, match="corrupt adapter config"):
        service.activate(bad_label)


def test_a_stored_generation_made_with_other_settings_is_labelled_with_its_own():
    from restpg.app.explore import settings_note

    row = {"settings": json.dumps({"k": 5, "max_new_tokens": 256, "temperature": 0.1})}
    assert settings_note(row, {"k": 5, "max_new_tokens": 256, "temperature": 0.1}) == ""
    note = settings_note(row, {"k": 3, "max_new_tokens": 96, "temperature": 0.7})
    assert note.startswith(" made with k = 5, max new tokens 256, temperature 0.1, not the settings above")
