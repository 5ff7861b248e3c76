import json

from helpers import review_record
from restpg.models import GenerationSettings
from restpg.reasoning import ReasoningSettings, cache_key, drop_copied_lines, read_cache, reasoning_paths

FAST = ReasoningSettings(k=2, generation=GenerationSettings(max_new_tokens=6, temperature=0.0, batch_size=2))


def test_copied_lines_are_dropped():
    output = "My kids adore this tent and the poles are covered so nobody gets hurt at all."
    reasoning = ("- the user mentions kids and safety\n"
                 "- she writes: my kids adore this tent and the poles are covered so nobody\n"
                 "- short sentences")
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

    import restpg.reasoning as module

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
