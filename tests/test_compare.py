"""The paper's six-method comparison and its tables (restpg.compare)."""

import dataclasses
import json

import pytest

import restpg.em as em
from restpg.compare import (
    AVERAGE,
    METHODS,
    bootstrap_interval,
    compare_methods,
    comparison_table,
    plot_rounds,
    task_table,
    write_table,
    write_task_table,
)


def test_comparison_table_and_plot(tmp_path):
    def rows(v):
        return [{"judge": v, "rouge1": v, "rougeL": v, "meteor": v}] * 5

    table = comparison_table({"SFT": rows(0.2), "REST-PG": rows(0.3)})
    assert table[0]["method"] == "SFT" and "rougeL_vs_sft" not in table[0]
    assert table[1]["rougeL_vs_sft"] == pytest.approx(0.1) and table[1]["rougeL_vs_sft_p"] == 0.0
    history = {
        0: {"summary": {"judge": 0.1, "rouge1": 0.2, "rougeL": 0.1, "meteor": 0.1}},
        1: {"summary": {"judge": 0.3, "rouge1": 0.25, "rougeL": 0.12, "meteor": 0.11}},
    }
    plot_rounds({"rest-pg": history, "rest-em": history}, tmp_path / "rounds.png")
    assert (tmp_path / "rounds.png").read_bytes()[:4] == b"\x89PNG"


def test_write_table(tmp_path):
    def rows(v):
        return [{"judge": v, "rouge1": v, "rougeL": v, "meteor": v}] * 5

    table = comparison_table({"SFT": rows(0.2), "REST-PG": rows(0.3)})
    write_table(table, tmp_path, "test", 5, "judge:m", "meteor: x")
    markdown = (tmp_path / "table.md").read_text()
    assert "| REST-PG | 0.3000* (+0.100 [+0.100, +0.100])" in markdown and "Judge: `judge:m`" in markdown
    assert (tmp_path / "table.csv").read_text().splitlines()[0].startswith("method,judge,rouge1,rougeL,meteor")


def test_the_table_per_task_and_their_average_with_bootstrap_intervals(tmp_path):
    """#12.7: Table 1's shape: every method per task, the average of the task means, 95% intervals."""

    def scores(values):
        return [{"judge": v, "rouge1": v, "rougeL": v, "meteor": v} for v in values]

    tasks = ["product_review"] * 4 + ["topic_writing"] * 2
    per_method = {"SFT": scores([0.1, 0.2, 0.3, 0.4, 0.9, 0.9]), "REST-PG": scores([0.5] * 6)}
    rows = task_table(per_method, tasks, samples=500)
    cell = {(r["method"], r["metric"], r["task"]): r for r in rows}
    assert len(rows) == 2 * 4 * 3
    review = cell["SFT", "rougeL", "product_review"]
    assert review["mean"] == pytest.approx(0.25) and review["n"] == 4 and review["low"] < 0.25 < review["high"]
    assert cell["SFT", "rougeL", "topic_writing"]["low"] == pytest.approx(0.9)  # no spread, no interval
    average = cell["SFT", "rougeL", AVERAGE]
    assert average["mean"] == pytest.approx((0.25 + 0.9) / 2) and average["n"] == 6  # tasks weigh alike
    assert cell["REST-PG", "judge", AVERAGE]["low"] == cell["REST-PG", "judge", AVERAGE]["high"] == pytest.approx(0.5)
    assert bootstrap_interval([[1.0, 0.0]], samples=1000)[1:] == (0.0, 1.0)
    write_task_table(rows, tmp_path, "test", "judge:m")
    markdown = (tmp_path / "table_by_task.md").read_text()
    assert "| method | product_review (n=4) | topic_writing (n=2) | average (n=6) |" in markdown
    assert "| REST-PG | 0.5000 [0.500, 0.500] | 0.5000 [0.500, 0.500] | 0.5000 [0.500, 0.500] |" in markdown
    assert len((tmp_path / "table_by_task.csv").read_text().splitlines()) == 1 + len(rows)


def test_compare_methods_scores_six_methods_with_their_own_adapters(format_model_dir, tmp_path, monkeypatch):
    """The paper's comparison on a tiny run: each method reads its own prompt with its own adapter."""
    from helpers import FORMAT_REASONING, format_config, write_reasoning_file

    config = format_config(format_model_dir)
    paths = write_reasoning_file(
        tmp_path / "paths.jsonl", em.load_split(config, "train", config.train_users), FORMAT_REASONING, "t"
    )
    config = dataclasses.replace(config, reasoning_from=str(paths), tau=0.0)  # tau 0: ReST-EM keeps any answer
    used = []
    generator = em.Models.generator

    def spy(self, adapter):
        used.append(None if adapter is None else adapter.relative_to(tmp_path).as_posix())
        return generator(self, adapter)

    monkeypatch.setattr(em.Models, "generator", spy)
    result = compare_methods(config, tmp_path, split="test")
    assert [row["method"] for row in result["table"]] == [name for name, *_ in METHODS]
    assert used[-len(METHODS) :] == [
        None,
        None,
        "rest-em/sft/adapter",
        "rest-pg/sft/adapter",
        "rest-em/round-1/adapter",
        "rest-pg/round-1/adapter",
    ]
    assert sorted(result["histories"]) == ["rest-em", "rest-pg"] and sorted(result["histories"]["rest-pg"]) == [0, 1]
    out = tmp_path / "comparison"
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    test_records = len(em.load_split(config, "test", config.eval_users))
    assert len(predictions) == len(METHODS) * test_records
    assert {p["method"] for p in predictions if p["reasoning"]} <= {"SFT with reasoning", "REST-PG"}
    assert "| REST-PG |" in (out / "table.md").read_text() and (out / "rounds.png").exists()
    assert {(r["method"], r["task"]) for r in result["by_task"]} == {
        (name, task) for name, *_ in METHODS for task in ("product_review", "average")
    }
