"""The trained versions that ship with restpg (assets/models), with the real default model: what a
new user's first page and first Generate rest on."""

import json
from collections import defaultdict

from restpg.app.explore import SAMPLE_DATASET, AppPaths, ExploreService
from restpg.data.longlamp import PUBLIC_TASKS, load_records, sample_path
from restpg.inference.models import DEFAULT_MODEL, ModelConfig
from restpg.training.em import PRESETS
from restpg.training.versions import SHIPPED_DIR, find_versions

RUN = SHIPPED_DIR / "restpg-sample"


def shipped_rows():
    return [json.loads(line) for line in (RUN / "generations.jsonl").read_text().splitlines()]


def test_the_shipped_run_is_multi_task_with_hand_written_reasoning_and_small_adapters():
    manifest = json.loads((RUN / "manifest.json").read_text())
    assert manifest["config"]["tasks"] == list(PUBLIC_TASKS) and manifest["config"]["model"] == DEFAULT_MODEL
    assert manifest["models"]["teacher"].startswith("hand-written reference")
    steps = ["sft"] + [f"round-{t}" for t in range(1, manifest["config"]["rounds"] + 1)]
    for step in steps:
        weights = RUN / step / "adapter" / "adapter_model.safetensors"
        assert weights.stat().st_size < 8 * 2**20  # a few MB: fits in git
        assert json.loads((RUN / step / "metrics.json").read_text())["summary"]["rougeL"] > 0
    assert json.loads((RUN / "timings.json").read_text())["stage2_sft"] > 0


def test_stored_generations_cover_every_held_out_request_for_base_sft_and_rest_pg():
    by_version = defaultdict(set)
    for row in shipped_rows():
        assert row["dataset"] == SAMPLE_DATASET
        by_version[row["model_version"].split(" + ")[-1]].add((row["split"], row["record_id"]))
    held_out = {
        (split, r.record_id)
        for task in PUBLIC_TASKS
        for split in ("val", "test")
        for r in load_records(sample_path(task, "user", split), task, "user", split).records
    }
    rounds = json.loads((RUN / "manifest.json").read_text())["config"]["rounds"]
    assert set(by_version) == {DEFAULT_MODEL, "shipped restpg-sample sft", f"shipped restpg-sample round-{rounds}"}
    assert all(seen == held_out for seen in by_version.values())


def test_the_default_version_reaches_a_final_answer_on_nine_in_ten_held_out_requests(tmp_path):
    service = ExploreService(ModelConfig(), AppPaths(tmp_path / "data", tmp_path / "runs"), use_judge=False)
    default = service.default_version()
    assert default.startswith("shipped restpg-sample")
    rows = [r for r in shipped_rows() if r["model_version"] == service.version_id(default)]
    answered = sum(1 for r in rows if r["response"].strip() and r["reasoning"].strip())
    assert answered >= 0.9 * len(rows), f"{answered} of {len(rows)}"
    start = service.demo_start()
    assert start["version"] == default and start["split"] == "test"


def test_a_live_generation_with_the_default_version_reasons_then_answers(tmp_path):
    """The real model with the shipped adapter, streamed at the CPU token limit, as the page does."""
    (tmp_path / "data").mkdir()
    service = ExploreService(
        ModelConfig(device="cpu", dtype="float32"), AppPaths(tmp_path / "data", tmp_path / "runs"), use_judge=False
    )
    version = service.default_version()
    record = load_records(sample_path("topic_writing", "user", "val"), "topic_writing").records[0]
    settings = service.settings_for(5, 256, 0.1)
    updates = list(service.stream(SAMPLE_DATASET, record, version, settings))
    final = updates[-1]
    assert len(updates) > 10 and final.done  # streamed
    assert final.reasoning.strip() and final.response.strip(), final.note
    assert final.row["scores"] and json.loads(final.row["scores"])["rougeL"] > 0


def test_the_shipped_prompt_is_the_cpu_presets():
    versions = find_versions(SHIPPED_DIR / "none", DEFAULT_MODEL, None)
    sft = versions["shipped restpg-sample sft"]
    assert (sft.prompt_kind, sft.k, sft.max_item_words) == ("reasoning", 5, PRESETS["cpu-small"].max_item_words)
