import json

import pytest

from helpers import review_record
from restpg.inference.models import GenerationSettings
from restpg.training.reasoning import ReasoningSettings, cache_key, drop_copied_lines, read_cache, reasoning_paths

FAST = ReasoningSettings(k=2, generation=GenerationSettings(max_new_tokens=6, temperature=0.0, batch_size=2))


def test_copied_lines_are_dropped():
    output = "My kids adore this tent and the poles are covered so nobody gets hurt at all."
    reasoning = (
        "- the user mentions kids and safety\n"
        "- she writes: my kids adore this tent and the poles are covered so nobody\n"
        "- short sentences"
    )
    kept, dropped = drop_copied_lines(reasoning, output)
    assert dropped == 1 and kept == "- the user mentions kids and safety\n- short sentences"


def test_paths_are_cached_and_a_rerun_does_nothing(tiny_model, tmp_path, monkeypatch):
    records = [review_record(user=f"U{i}") for i in range(3)]
    cache = tmp_path / "reasoning.jsonl"
    done = []
    paths = reasoning_paths(tiny_model, records, cache, FAST, on_batch=done.append)
    assert sorted(paths) == sorted(r.record_id for r in records) and sum(done) == 3
    assert all(p.teacher == tiny_model.name and p.truncated for p in paths.values())
    lines = cache.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["key"] == cache_key(records[0].record_id, tiny_model.name)

    import restpg.training.reasoning as module

    monkeypatch.setattr(module, "generate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("regenerated")))
    assert reasoning_paths(tiny_model, records, cache, FAST) == paths


def test_a_crash_mid_file_redoes_only_the_torn_record(tiny_model, tmp_path):
    records = [review_record(user=f"U{i}") for i in range(3)]
    cache = tmp_path / "reasoning.jsonl"
    reasoning_paths(tiny_model, records, cache, FAST)
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # the last line torn by a kill
    assert len(read_cache(cache)) == 2
    again = reasoning_paths(tiny_model, records, cache, FAST)
    assert len(again) == 3 and len(read_cache(cache)) == 3


def sample_training_records():
    from restpg.data.longlamp import PUBLIC_TASKS, SPLIT_FAMILIES, load_records, sample_path

    return [
        r
        for task in PUBLIC_TASKS
        for family in SPLIT_FAMILIES
        for r in load_records(sample_path(task, family, "train"), task, family, "train").records
    ]


def test_the_sample_ships_a_hand_written_path_for_every_training_record():
    from restpg.training.reasoning import SAMPLE_REASONING_FILE, reasoning_from_file

    records = sample_training_records()
    paths = reasoning_from_file(SAMPLE_REASONING_FILE, records)
    assert set(paths) == {r.record_id for r in records} and len(paths) == 150
    for record in records:
        path = paths[record.record_id]
        lines = path.reasoning.splitlines()
        assert path.dropped_copied_lines == 0, record.record_id  # passes the project's copy check whole
        assert 3 <= len(lines) <= 5 and all(line.startswith("- ") for line in lines), record.record_id
        assert len(path.reasoning.split()) <= 60 and path.teacher.startswith("hand-written")
        assert record.output[:40] not in path.reasoning


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"record_id": "x", "reasoning": "- a"}\n', "line 1: field 'teacher' missing"),
        ("not json\n", "line 1: not JSON"),
        ('\n{"record_id": "x", "reasoning": "", "teacher": "t"}\n', "line 2: field 'reasoning' missing"),
        (
            '{"record_id": "other", "reasoning": "- a", "teacher": "t"}\n',
            "no reasoning path for 1 of 1 training records",
        ),
    ],
    ids=["no teacher", "not json", "empty reasoning", "record not covered"],
)
def test_a_bad_reasoning_file_names_the_file_and_line(tmp_path, content, message):
    from restpg.training.reasoning import ReasoningFileError, reasoning_from_file

    path = tmp_path / "paths.jsonl"
    path.write_text(content)
    with pytest.raises(ReasoningFileError, match=message) as caught:
        reasoning_from_file(path, [review_record()])
    assert str(path) in str(caught.value)
    with pytest.raises(ReasoningFileError, match="cannot read"):
        reasoning_from_file(tmp_path / "missing.jsonl", [review_record()])


def test_a_reasoning_file_row_that_copies_the_output_loses_that_line(tmp_path):
    from restpg.training.reasoning import reasoning_from_file

    record = review_record()
    path = tmp_path / "paths.jsonl"
    path.write_text(
        json.dumps(
            {"record_id": record.record_id, "teacher": "gemma-7b-it", "reasoning": f"- safety first\n- {record.output}"}
        )
        + "\n"
    )
    found = reasoning_from_file(path, [record])[record.record_id]
    assert found.reasoning == "- safety first" and found.dropped_copied_lines == 1 and found.teacher == "gemma-7b-it"
