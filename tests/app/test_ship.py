"""Shipping a trained run: adapters in bf16 with their manifest and metrics, and the demo
generations the page shows at once, loaded into the store once."""

import dataclasses
import json

import pytest
import torch

from restpg.app.explore import SAMPLE_DATASET, AppPaths, ExploreService
from restpg.app.ship import ShipError, ship_run
from restpg.inference.models import ModelConfig
from restpg.training.em import EMConfig, run_em
from restpg.training.train import TrainConfig

TINY = TrainConfig(
    select_by="last",
    learning_rate=1e-2,
    warmup_steps=0,
    max_steps=2,
    batch_size=2,
    per_device_batch_size=2,
    optimizer="adamw_torch",
    lora_r=2,
    lora_alpha=4,
    lora_dropout=0.0,
    save_steps=2,
)


@pytest.fixture(scope="module")
def shipped(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ship")
    config = EMConfig(
        tasks=("product_review",),
        train_users=1,
        eval_users=1,
        model=str(tiny_model_dir),
        reasoning=False,
        rounds=1,
        samples_per_input=2,
        reward="rougeL",
        tau=0.0,
        max_item_words=8,
        max_new_tokens=4,
        generation_batch_size=4,
        sft=TINY,
        mstep=TINY,
        device="cpu",
        dtype="float32",
        keep_truncated=True,
    )
    run_em(config, root / "run")
    report = ship_run(
        root / "run",
        "tiny",
        root / "shipped",
        model_config=ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32"),
    )
    return root, report


def test_a_shipped_run_has_its_adapters_metrics_and_generations(shipped):
    from safetensors.torch import load_file

    root, report = shipped
    out = root / "shipped" / "tiny"
    assert report.out_dir == out and report.steps == ["sft", "round-1"]
    assert not (root / "shipped" / ".staging").exists()
    for step in report.steps:
        weights = load_file(str(out / step / "adapter" / "adapter_model.safetensors"))
        assert weights and all(v.dtype == torch.bfloat16 for v in weights.values())
        assert json.loads((out / step / "metrics.json").read_text())["summary"]
    assert (out / "manifest.json").exists() and (out / "round-1" / "selection.json").exists()
    assert all((out / step / "train_result.json").exists() for step in report.steps)  # tokens, time, precision
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    versions = {row["model_version"].split(" + ")[-1] for row in rows}
    assert versions == {rows[0]["model_version"].split(" + ")[0], "shipped tiny sft", "shipped tiny round-1"}
    assert len(rows) == report.generations == 3 * 42  # 3 versions x (12 validation + 30 test requests)
    assert {row["split"] for row in rows} == {"val", "test"} and all(row["dataset"] == SAMPLE_DATASET for row in rows)


def test_the_page_finds_the_shipped_versions_and_their_generations_once(shipped, tiny_model_dir, tmp_path):
    root, _ = shipped
    paths = AppPaths(tmp_path / "data", tmp_path / "runs", shipped_dir=root / "shipped")
    paths.data_dir.mkdir()
    config = ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32")
    service = ExploreService(config, paths, use_judge=False)
    assert {"shipped tiny sft", "shipped tiny round-1"} <= set(service.versions())
    count = len(service.generations.list())
    assert count == 3 * 42
    again = ExploreService(config, paths, use_judge=False)  # a second launch adds nothing
    assert len(again.generations.list()) == count
    version = service.default_version()
    record = service.dataset(SAMPLE_DATASET, "product_review", "user", "test").records[0]
    settings = service.settings_for(5, None, 0.1)
    stored = service.stored(SAMPLE_DATASET, record, version, settings)
    assert stored is not None and stored["model_version"].endswith(version)
    other = service.stored(SAMPLE_DATASET, record, version, dict(settings, max_new_tokens=7))
    assert other["generation_id"] == stored["generation_id"]  # other settings: the stored one, with its own


def test_an_unfinished_run_is_refused(tmp_path):
    with pytest.raises(ShipError, match="no manifest.json"):
        ship_run(tmp_path, "x", tmp_path / "out")
    config = EMConfig(rounds=1)
    (tmp_path / "manifest.json").write_text(json.dumps({"config": dataclasses.asdict(config)}))
    with pytest.raises(ShipError, match="unfinished run, no metrics yet for sft, round-1"):
        ship_run(tmp_path, "x", tmp_path / "out")


def test_a_run_shipped_without_base_stores_only_its_own_versions(shipped, tiny_model_dir):
    """--without-base: the base model's generations are left to the run that already ships them."""
    root, _ = shipped
    report = ship_run(
        root / "run",
        "tiny-own",
        root / "shipped",
        model_config=ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32"),
        with_base=False,
    )
    rows = [json.loads(line) for line in (report.out_dir / "generations.jsonl").read_text().splitlines()]
    versions = {row["model_version"].split(" + ")[-1] for row in rows}
    assert versions == {"shipped tiny-own sft", "shipped tiny-own round-1"} and len(rows) == 2 * 42


def test_the_quality_table_counts_a_direct_answer_as_answered_only_for_a_version_without_reasoning():
    from restpg.app.ship import quality_table

    scores = json.dumps({"rougeL": 0.2, "meteor": 0.3, "judge": 0.1})
    rows = [
        {"model_version": version, "split": "test", "reasoning": "", "response": "an answer", "scores": scores}
        for version in ("m + shipped plain sft", "m + shipped reasoning sft")
    ]
    table = {row["version"]: row["answered"] for row in quality_table(rows, {"m + shipped plain sft"})}
    assert table == {"m + shipped plain sft": 1.0, "m + shipped reasoning sft": 0.0}
