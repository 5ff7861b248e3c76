import pytest

from restpg.evaluate import comparison_table, paired_bootstrap, plot_rounds, summarize


def test_paired_bootstrap():
    better = [0.5, 0.6, 0.7, 0.55, 0.65] * 4
    base = [0.4, 0.5, 0.6, 0.45, 0.55] * 4
    diff, low, high, p = paired_bootstrap(better, base)
    assert diff == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1) and p == 0.0
    diff, low, high, p = paired_bootstrap(base, better)
    assert diff < 0 and p == 1.0
    noisy_diff, low, high, p = paired_bootstrap([0.1, 0.9, 0.2, 0.8], [0.5, 0.5, 0.5, 0.5])
    assert low < 0 < high and 0 < p < 1
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [])


def test_comparison_table_and_plot(tmp_path):
    rows = lambda v: [{"judge": v, "rouge1": v, "rougeL": v, "meteor": v}] * 5
    table = comparison_table({"SFT": rows(0.2), "REST-PG": rows(0.3)})
    assert table[0]["method"] == "SFT" and "rougeL_vs_sft" not in table[0]
    assert table[1]["rougeL_vs_sft"] == pytest.approx(0.1) and table[1]["rougeL_vs_sft_p"] == 0.0
    assert summarize(rows(0.2))["meteor"] == pytest.approx(0.2)
    history = {0: {"summary": {"judge": 0.1, "rouge1": 0.2, "rougeL": 0.1, "meteor": 0.1}},
               1: {"summary": {"judge": 0.3, "rouge1": 0.25, "rougeL": 0.12, "meteor": 0.11}}}
    plot_rounds({"rest-pg": history, "rest-em": history}, tmp_path / "rounds.png")
    assert (tmp_path / "rounds.png").read_bytes()[:4] == b"\x89PNG"


def test_write_table(tmp_path):
    from restpg.evaluate import write_table

    rows = lambda v: [{"judge": v, "rouge1": v, "rougeL": v, "meteor": v}] * 5
    table = comparison_table({"SFT": rows(0.2), "REST-PG": rows(0.3)})
    write_table(table, tmp_path, "test", 5, "judge:m", "meteor: x")
    markdown = (tmp_path / "table.md").read_text()
    assert "| REST-PG | 0.3000* (+0.100 [+0.100, +0.100])" in markdown and "Judge: `judge:m`" in markdown
    assert (tmp_path / "table.csv").read_text().splitlines()[0].startswith("method,judge,rouge1,rougeL,meteor")


def test_the_table_per_task_and_their_average_with_bootstrap_intervals(tmp_path):
    """#12.7: Table 1's shape: every method per task, the average of the task means, 95% intervals."""
    from restpg.evaluate import AVERAGE, bootstrap_interval, task_table, write_task_table

    scores = lambda values: [{"judge": v, "rouge1": v, "rougeL": v, "meteor": v} for v in values]
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
