"""The paper's six-method comparison and its tables (restpg.evaluation.compare)."""

import dataclasses
import json

import pytest

import restpg.training.em as em
from restpg.evaluation.compare import (
    AVERAGE,
    METHODS,
    bootstrap_interval,
    compare_methods,
    comparison_table,
    judge_verdict,
    plot_rounds,
    task_table,
    write_table,
    write_task_table,
)


def test_comparison_table_and_plot(tmp_path):
    def rows(v):
        return [{"judge": v, "rouge1": v, "rougeL": v, "meteor": v}] * 5

    table = comparison_table({"SFT": rows(0.2), "REST-PG": rows(0.3)}, ["product_review"] * 5)
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

    tasks = ["product_review"] * 5
    table = comparison_table({"SFT": rows(0.2), "REST-PG": rows(0.3)}, tasks)
    write_table(table, tmp_path, "test", tasks, "judge:m", "meteor: x")
    markdown = (tmp_path / "table.md").read_text()
    assert "| REST-PG | 0.3000* (+0.100 [+0.100, +0.100], p 0.000)" in markdown and "Judge: `judge:m`" in markdown
    header = (tmp_path / "table.csv").read_text().splitlines()[0]
    assert header.startswith("method,n,empty_answer,judge,judge_pooled,judge_vs_sft,")
    assert "rougeL_vs_sft_p" in header and header.endswith("judge_informative")


def test_without_a_plain_sft_the_differences_are_to_sft_with_reasoning(tmp_path):
    def rows(v):
        return [{"judge": v, "rouge1": v, "rougeL": v, "meteor": v}] * 5

    tasks = ["product_review"] * 5
    table = comparison_table({"RAG": rows(0.1), "SFT with reasoning": rows(0.2), "REST-PG": rows(0.3)}, tasks)
    assert [round(row.get("rougeL_vs_sft", 0.0), 6) for row in table] == [-0.1, 0.0, 0.1]
    assert "rougeL_vs_sft" not in table[1]
    write_table(table, tmp_path, "test", tasks, "judge:m", "meteor: x")
    assert "paired difference to SFT with reasoning on the same records" in (tmp_path / "table.md").read_text()


def test_the_overall_figure_is_the_mean_of_the_task_means_with_pooled_beside_it(tmp_path):
    """Table 1's overall figure averages the tasks, whatever their sizes; the pooled mean is beside it."""

    def scores(values, judge=0.1):
        return [{"judge": judge, "rouge1": v, "rougeL": v, "meteor": v, "empty_answer": float(v == 0)} for v in values]

    tasks = ["product_review"] * 3 + ["topic_writing"]
    per_method = {"SFT": scores([0.2, 0.2, 0.2, 0.2]), "REST-PG": scores([0.3, 0.3, 0.0, 0.6])}
    table = comparison_table(per_method, tasks, samples=500)
    rest = table[1]
    assert rest["rougeL"] == pytest.approx((0.2 + 0.6) / 2) and rest["rougeL_pooled"] == pytest.approx(0.3)
    assert rest["rougeL_vs_sft"] == pytest.approx(((0.1 + 0.1 - 0.2) / 3 + 0.4) / 2)  # task means of the differences
    assert rest["empty_answer"] == pytest.approx(0.25) and rest["n"] == 4
    flat = judge_verdict(per_method)
    assert flat == pytest.approx(0.1)  # every answer the same judge score: uninformative
    write_table(table, tmp_path, "test", tasks, "judge:m", "meteor: x", flat)
    markdown = (tmp_path / "table.md").read_text()
    assert "| REST-PG | uninformative |" in markdown and "it tells none apart" in markdown
    import csv

    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert rows[1]["judge"] == "" and rows[1]["judge_informative"] == "False" and rows[1]["rougeL"] == "0.4000"
    by_task = task_table(per_method, tasks, samples=500)
    write_task_table(by_task, tmp_path, "test", "judge:m", flat)
    assert "### judge" not in (tmp_path / "table_by_task.md").read_text()
    per_method["SFT"][0]["judge"] = 0.3
    assert judge_verdict(per_method) is None


def test_the_table_per_task_and_their_average_with_bootstrap_intervals(tmp_path):
    """Table 1's shape: every method per task, the average of the task means, 95% intervals."""

    def scores(values):
        return [{"judge": v, "rouge1": v, "rougeL": v, "meteor": v} for v in values]

    tasks = ["product_review"] * 4 + ["topic_writing"] * 2
    per_method = {"SFT": scores([0.1, 0.2, 0.3, 0.4, 0.9, 0.9]), "REST-PG": scores([0.5] * 6)}
    rows = task_table(per_method, tasks, samples=500)
    cell = {(r["method"], r["metric"], r["task"]): r for r in rows}
    assert "vs_sft" not in cell["SFT", "rougeL", AVERAGE] and cell["REST-PG", "rougeL", AVERAGE]["vs_sft_p"] <= 1
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
    assert "| REST-PG | 0.5000* [0.500, 0.500] | 0.5000* [0.500, 0.500] | 0.5000* [0.500, 0.500] |" in markdown
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
    # Scored again with the first comparison's outputs: methods whose model, adapter weights, prompt
    # and settings are unchanged are rescored from them; a retrained adapter is generated again.
    from restpg.evaluation.compare import compare_runs

    earlier = out / "earlier.jsonl"
    (out / "predictions.jsonl").rename(earlier)
    adapter = tmp_path / "rest-pg" / "round-1" / "adapter"
    weights = next(adapter.glob("*.safetensors"))
    used.clear()
    runs = {run: tmp_path / run for run in ("rest-pg", "rest-em")}
    again = compare_runs(config, runs, tmp_path / "again", "test", reuse=earlier)
    assert used == [] and again["table"] == result["table"]
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)  # other weights: generated again
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1e-3
    save_file(tensors, weights)
    used.clear()
    compare_runs(config, runs, tmp_path / "again", "test", reuse=earlier)
    assert used == ["rest-pg/round-1/adapter"]
    # A run without reasoning that stopped after SFT (0 rounds) gives the SFT row and no ReST-EM row.
    import shutil

    sft_only = tmp_path / "sft-only"
    shutil.copytree(tmp_path / "rest-em", sft_only, ignore=shutil.ignore_patterns("round-*"))
    manifest = json.loads((sft_only / "manifest.json").read_text())
    manifest["config"]["rounds"] = 0
    (sft_only / "manifest.json").write_text(json.dumps(manifest))
    used.clear()
    runs = {"rest-pg": tmp_path / "rest-pg", "rest-em": sft_only}
    table = compare_runs(config, runs, tmp_path / "sft-only-cmp", "test", reuse=earlier)
    assert [row["method"] for row in table["table"]] == [name for name, *_ in METHODS if name != "ReST-EM"]
    assert used == ["rest-pg/round-1/adapter"]  # the SFT row's outputs are the first comparison's
