"""The Results tab: the paper's six methods on the sample's test split, per task with 95% intervals
and the difference to SFT, as ``restpg evaluate`` wrote them for the shipped runs
(``assets/models/<run>/comparison/``), the metrics per EM round, and what each round sampled and
kept. Read from the shipped files (restpg.evaluation.results), never recomputed."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ..evaluation.results import METRIC_LABELS, Comparison, empty_answers, find_comparison, round_evidence, task_rows


def metric_choices(comparison: Comparison | None) -> list[tuple[str, str]]:
    if comparison is None:
        return []
    order = list(METRIC_LABELS)  # ROUGE-L first: the judge may be uninformative
    metrics = sorted(comparison.metrics, key=lambda m: order.index(m) if m in order else len(order))
    return [(METRIC_LABELS.get(m, m), m) for m in metrics]


def task_frame(comparison: Comparison | None, metric: str | None) -> pd.DataFrame:
    if comparison is None or not metric:
        return pd.DataFrame()
    rows = task_rows(comparison, metric)
    empties = empty_answers(comparison)
    for row in rows:
        row["empty answers"] = f"{empties.get(row['method'], 0.0):.0%}"
    return pd.DataFrame(rows)


def evidence_frame(comparison: Comparison | None) -> pd.DataFrame:
    if comparison is None:
        return pd.DataFrame()
    return pd.DataFrame([row for run in comparison.runs for row in round_evidence(run)])


def header_text(comparison: Comparison | None) -> str:
    if comparison is None:
        return (
            "No comparison is shipped here: `python -m restpg evaluate --preset cpu-small --split test --run-dir "
            "runs/cmp` trains REST-PG and ReST-EM and writes one (README, Results on the sample)."
        )
    judge = (
        ""
        if comparison.judge_informative
        else " The 135M judge gave every answer the same score, so the judge's rows read 'uninformative'."
    )
    return comparison.header + judge


def on_metric(metric: str) -> pd.DataFrame:
    return task_frame(find_comparison(), metric)


def on_load():
    """The page's load: the files as they are now (a new comparison shows without a restart)."""
    found = find_comparison()
    chosen = metric_choices(found)
    value = chosen[0][1] if chosen else None
    return header_text(found), gr.update(choices=chosen, value=value), task_frame(found, value), evidence_frame(found)


def results_tab(parts) -> tuple:
    """Builds the tab; returns its page-load handler (inputs, outputs)."""
    comparison = find_comparison()
    choices = metric_choices(comparison)
    gr.Markdown(
        "### REST-PG against the paper's baselines, on the sample's test users\n"
        "Each cell: the mean over the task's test records and its 95% bootstrap interval; `average` is the mean "
        "of the task means (the paper's Table 1). `*`: the paired difference to SFT (SFT with reasoning where no "
        "ReST-EM run was compared) on the same records excludes 0."
    )
    header = gr.Textbox(value=header_text(comparison), label="what the table holds", interactive=False, lines=3)
    metric = gr.Dropdown(
        choices=choices, value=choices[0][1] if choices else None, label="metric", interactive=bool(choices)
    )
    table = gr.Dataframe(value=task_frame(comparison, metric.value), label="per task, with 95% intervals", wrap=True)
    with gr.Row():
        gr.Image(
            value=str(comparison.figure) if comparison and comparison.figure else None,
            label="held-out (validation) metrics per EM round (round 0 = SFT)",
            interactive=False,
        )
    evidence = gr.Dataframe(
        value=evidence_frame(comparison),
        label="each shipped step: validation scores, and what its E-step sampled, cut, kept and was rewarded",
        wrap=True,
    )
    metric.change(on_metric, metric, table, api_visibility="private")
    return on_load, None, [header, metric, table, evidence]
