"""The Train tab's views: the jobs table, the progress bar (job text escaped), the per-round plot."""

import time

import pytest

from restpg.app.jobs import JobError
from restpg.app.train_tab import jobs_table, metrics_figure, parse_tau, progress_html


def _row(**changes):
    row = {
        "run_id": "/x/runs/jobs/demo",
        "run_dir": "/x/runs/jobs/demo",
        "status": "running",
        "stage": "round-1: M-step",
        "progress": 0.25,
        "message": "",
        "created": time.time(),
        "updated": time.time(),
    }
    return {**row, **changes}


def test_jobs_table_has_a_row_per_job():
    table = jobs_table(
        [_row(), _row(run_dir="/x/runs/jobs/old", status="failed", progress=None, message="process 12 is gone")]
    )
    assert list(table["job"]) == ["demo (running)", "old (failed)"]
    assert list(table["progress"]) == ["25%", "0%"] and table["message"][1] == "process 12 is gone"


def test_progress_escapes_text_from_the_job():
    html = progress_html(_row(stage="<script>alert(1)</script>", message="<img src=x onerror=alert(1)>"))
    assert "<script>" not in html and "<img" not in html and "&lt;script&gt;" in html
    assert "value='25.0'" in html and progress_html(None) == "<p>no job selected</p>"


def test_metrics_figure_plots_every_round_and_metric():
    figure = metrics_figure("demo", {0: {"rougeL": 0.15, "judge": 0.1}, 1: {"rougeL": 0.14, "judge": 0.1}})
    lines = {axis.get_title(): axis.lines[0].get_ydata().tolist() for axis in figure.axes if axis.lines}
    assert lines["rougeL"] == [0.15, 0.14] and "judge" not in lines  # one value everywhere: said, not drawn
    assert "judge: one value everywhere" in figure.get_suptitle()
    first = metrics_figure("demo", {0: {"rougeL": 0.15, "judge": 0.1}})  # one point: every metric drawn
    assert {axis.get_title() for axis in first.axes} >= {"rougeL", "judge"}
    assert metrics_figure("demo", {}).axes  # an empty plot, not an error, before the first round


def test_an_empty_threshold_means_the_presets_rule():
    assert parse_tau("") is None and parse_tau(None) is None and parse_tau(" 0.5 ") == 0.5
    with pytest.raises(JobError, match="tau"):
        parse_tau("high")
