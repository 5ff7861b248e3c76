"""The shipped results as the page reads them (restpg.evaluation.results, restpg.app.results_tab)."""

import json

import pytest

from restpg.app.results_tab import metric_choices, task_frame
from restpg.evaluation.compare import comparison_table, judge_verdict, task_table, write_table, write_task_table
from restpg.evaluation.results import empty_answers, find_comparison, round_evidence, task_rows


def _scores(values, judge=0.1):
    return [{"judge": judge, "rouge1": v, "rougeL": v, "meteor": v, "empty_answer": float(v == 0)} for v in values]


def _shipped(tmp_path, judge=0.1):
    """A shipped root with one run folder (a finished SFT and round 1) and its comparison."""
    run = tmp_path / "restpg-sample"
    (run / "sft").mkdir(parents=True)
    (run / "round-1").mkdir()
    (run / "manifest.json").write_text("{}")
    (run / "sft" / "metrics.json").write_text(json.dumps({"summary": {"rougeL": 0.15, "empty_answers": 0.0}}))
    (run / "round-1" / "metrics.json").write_text(json.dumps({"summary": {"rougeL": 0.17, "empty_answers": 0.05}}))
    selection = {"samples": 8, "truncated": 1, "kept": 3, "reward_mean": 0.2, "kept_reward_mean": 0.3}
    selection["reward_histogram"] = [0, 2, 6, 0, 0, 0, 0, 0, 0, 0]
    (run / "round-1" / "selection.json").write_text(json.dumps(selection))
    tasks = ["product_review"] * 3 + ["topic_writing"] * 2
    per_method = {
        "SFT": _scores([0.2, 0.2, 0.2, 0.3, 0.3], judge),
        "REST-PG": _scores([0.3, 0.3, 0.0, 0.4, 0.4], judge),
    }
    out = run / "comparison"
    out.mkdir()
    flat = judge_verdict(per_method)
    write_table(comparison_table(per_method, tasks, 500), out, "test", tasks, "judge:m", "meteor: x", flat)
    write_task_table(task_table(per_method, tasks, 500), out, "test", "judge:m", flat)
    return tmp_path


def test_the_page_shows_the_shipped_tables_numbers(tmp_path):
    comparison = find_comparison(_shipped(tmp_path))
    assert comparison is not None and not comparison.judge_informative
    assert [value for _, value in metric_choices(comparison)][0] == "rougeL"
    rows = {row["method"]: row for row in task_rows(comparison, "rougeL")}
    by_task = {(r["method"], r["task"]): r for r in comparison.by_task if r["metric"] == "rougeL"}
    cell = by_task["REST-PG", "product_review"]
    expected = f"{float(cell['mean']):.4f}"
    assert rows["REST-PG"]["product_review (n=3)"].startswith(expected)
    assert rows["REST-PG"]["topic_writing (n=2)"].startswith("0.4000*")  # paired interval excludes 0
    average = by_task["REST-PG", "average"]
    assert rows["REST-PG"]["average vs SFT [95% interval]"].startswith(f"{float(average['vs_sft']):+.4f}")
    assert rows["SFT"]["average vs SFT [95% interval]"] == ""
    assert task_rows(comparison, "judge")[1]["product_review (n=3)"] == "uninformative"
    assert empty_answers(comparison) == {"SFT": 0.0, "REST-PG": pytest.approx(0.2)}
    frame = task_frame(comparison, "rougeL")
    assert list(frame["method"]) == ["SFT", "REST-PG"] and list(frame["empty answers"]) == ["0%", "20%"]


def test_each_shipped_step_shows_what_it_sampled_and_kept(tmp_path):
    rows = round_evidence(_shipped(tmp_path) / "restpg-sample")
    assert [r["step"] for r in rows] == ["sft", "round-1"]
    assert rows[1]["kept"] == 3 and rows[1]["cut at the token limit"] == 1 and rows[1]["val empty answers"] == "5%"
    assert "kept" not in rows[0]
    assert find_comparison(tmp_path / "nothing") is None
