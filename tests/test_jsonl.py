from restpg.jsonl import append_jsonl, read_jsonl, write_jsonl


def test_torn_line_is_skipped_and_not_glued_to_the_next_append(tmp_path):
    path = tmp_path / "a.jsonl"
    append_jsonl(path, [{"n": 1}, {"n": 2}])
    path.write_text(path.read_text() + '{"n": 3, "cut')  # a kill in the middle of a write
    assert read_jsonl(path) == [{"n": 1}, {"n": 2}]
    append_jsonl(path, [{"n": 4}])
    assert read_jsonl(path) == [{"n": 1}, {"n": 2}, {"n": 4}]
    write_jsonl(path, [{"n": 5}])
    assert read_jsonl(path) == [{"n": 5}] and not (tmp_path / "a.jsonl.tmp").exists()
    assert read_jsonl(tmp_path / "missing.jsonl") == []
