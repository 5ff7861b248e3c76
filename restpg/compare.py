"""The paper's comparison: six methods on the same held-out records, the tables (overall, and
per task with their average, as the paper's Table 1) and the per-round figure."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from statistics import fmean
from typing import Sequence

from .em import Models, RunControl, load_split, run_em
from .evaluate import SCORE_NAMES, inference_settings, paired_bootstrap, predict, score_predictions, summarize
from .prompts import PromptSettings
from .runs import RunFolder

# ----------------------------------------------------------------------------------------------
# The paper's comparison: six methods on the same held-out records

# (name, prompt kind, run that provides the adapter: None = base model, and which of its steps)
METHODS = (
    ("no personalization", "plain", None, None),
    ("RAG", "rag", None, None),
    ("SFT", "rag", "rest-em", "sft"),
    ("SFT with reasoning", "reasoning", "rest-pg", "sft"),
    ("ReST-EM", "rag", "rest-em", "last"),
    ("REST-PG", "reasoning", "rest-pg", "last"),
)
BASELINE = "SFT"


def _adapter_for(run_root, run: str | None, step: str | None, rounds: int):
    if run is None:
        return None
    return RunFolder(Path(run_root) / run).round(0 if step == "sft" else rounds).adapter


def compare_methods(config, run_root, split: str = "test", control=None) -> dict:
    """Train (or resume) REST-PG and ReST-EM-without-reasoning, then score all six methods on ``split``.

    Writes ``run_root/comparison/{table.csv, table.md, table_by_task.csv, table_by_task.md,
    rounds.png, predictions.jsonl}`` and returns the tables and each run's rounds.
    """
    control = control or RunControl()
    run_root = Path(run_root)
    histories = {}
    for run, reasoning in (("rest-pg", True), ("rest-em", False)):
        histories[run] = run_em(dataclasses.replace(config, reasoning=reasoning), run_root / run, control)
    records = load_split(config, split, config.eval_users)
    models = Models(config)
    settings = inference_settings(
        config.max_new_tokens, config.generation_batch_size, config.seed, config.max_input_tokens
    )
    prompt_settings = PromptSettings(max_item_words=config.max_item_words)
    out_dir = run_root / "comparison"
    out_dir.mkdir(parents=True, exist_ok=True)
    per_method: dict[str, list[dict]] = {}
    with (out_dir / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for name, kind, run, step in METHODS:
            loaded = models.generator(_adapter_for(run_root, run, step, config.rounds))
            predictions = predict(loaded, records, kind, settings, config.k, prompt_settings)
            answers = [p[0].answer for p in predictions]
            rows = score_predictions(records, answers, models.metrics(), models.judge(RunFolder(run_root).judge_cache))
            per_method[name] = rows
            for record, p, row in zip(records, predictions, rows):
                handle.write(
                    json.dumps(
                        {
                            "method": name,
                            "record_id": record.record_id,
                            "reasoning": p[0].reasoning,
                            "answer": p[0].answer,
                            **row,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
            control.on_progress(f"comparison: {name}", len(per_method), len(METHODS))
    table = comparison_table(per_method)
    judge_name = models.judge(RunFolder(run_root).judge_cache).name
    write_table(table, out_dir, split, len(records), judge_name, models.metrics().variant)
    by_task = task_table(per_method, [r.task for r in records])
    write_task_table(by_task, out_dir, split, judge_name)
    plot_rounds(histories, out_dir / "rounds.png")
    return {"table": table, "by_task": by_task, "histories": histories}


# ----------------------------------------------------------------------------------------------
# Table 1 as the paper reports it: each task, and their average


AVERAGE = "average"


def bootstrap_interval(
    groups: Sequence[Sequence[float]], samples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean of the groups' means, 95% interval low, high): records resampled within each group
    (a task), the groups' means averaged, as Table 1 averages its tasks."""
    groups = [list(g) for g in groups if len(g)]
    if not groups:
        raise ValueError("bootstrap_interval needs at least one non-empty group")
    rng = random.Random(seed)
    point = fmean(fmean(g) for g in groups)
    means = sorted(fmean(fmean(g[rng.randrange(len(g))] for _ in g) for g in groups) for _ in range(samples))
    return point, means[int(0.025 * samples)], means[int(0.975 * samples) - 1]


def task_table(per_method: dict[str, list[dict]], tasks: Sequence[str], samples: int = 2000) -> list[dict]:
    """One row per method, metric and task (plus the average over tasks): mean, 95% bootstrap
    interval and record count."""
    names = sorted(set(tasks), key=list(tasks).index)
    rows = []
    for method, scores in per_method.items():
        for metric in (m for m in SCORE_NAMES if scores and m in scores[0]):
            per_task = {t: [row[metric] for row, task in zip(scores, tasks) if task == t] for t in names}
            for task in names + [AVERAGE]:
                groups = list(per_task.values()) if task == AVERAGE else [per_task[task]]
                mean, low, high = bootstrap_interval(groups, samples)
                rows.append(
                    {
                        "method": method,
                        "metric": metric,
                        "task": task,
                        "mean": mean,
                        "low": low,
                        "high": high,
                        "n": sum(len(g) for g in groups),
                    }
                )
    return rows


def write_task_table(rows: list[dict], out_dir, split: str, judge_name: str) -> None:
    """``table_by_task.csv`` (one line per method, metric, task) and ``table_by_task.md`` (per
    metric, methods x tasks + average, with 95% bootstrap intervals)."""
    import csv

    out_dir = Path(out_dir)
    with (out_dir / "table_by_task.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["method", "metric", "task", "mean", "low", "high", "n"])
        writer.writeheader()
        writer.writerows(rows)
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    lines = [
        f"Held-out split `{split}`, per task and their average (as the paper's Table 1). Judge: "
        f"`{judge_name}`. In brackets: 95% bootstrap interval (records resampled within each task)."
    ]
    for metric in dict.fromkeys(row["metric"] for row in rows):
        cell = {(r["method"], r["task"]): r for r in rows if r["metric"] == metric}
        counts = {t: next(r["n"] for r in rows if r["task"] == t and r["metric"] == metric) for t in tasks}
        lines += [
            "",
            f"### {metric}",
            "",
            "| method | " + " | ".join(f"{t} (n={counts[t]})" for t in tasks) + " |",
            "|---|" + "---|" * len(tasks),
        ]
        for method in methods:
            lines.append(
                f"| {method} | "
                + " | ".join(
                    f"{cell[method, t]['mean']:.4f} [{cell[method, t]['low']:.3f}, {cell[method, t]['high']:.3f}]"
                    for t in tasks
                )
                + " |"
            )
    (out_dir / "table_by_task.md").write_text("\n".join(lines) + "\n")


def comparison_table(per_method: dict[str, list[dict]]) -> list[dict]:
    """Means per method, and per metric the paired bootstrap difference to SFT."""
    table = []
    baseline = per_method.get(BASELINE)
    for name, rows in per_method.items():
        entry = {"method": name, **summarize(rows)}
        if baseline is not None and name != BASELINE:
            for metric in SCORE_NAMES:
                diff, low, high, p = paired_bootstrap([r[metric] for r in rows], [r[metric] for r in baseline])
                entry[f"{metric}_vs_sft"] = diff
                entry[f"{metric}_vs_sft_ci"] = (low, high)
                entry[f"{metric}_vs_sft_p"] = p
        table.append(entry)
    return table


def write_table(table: list[dict], out_dir, split: str, n_records: int, judge_name: str, metrics_variant: str) -> None:
    import csv

    columns = list(SCORE_NAMES)
    with (out_dir / "table.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", *columns, *[f"{m}_vs_sft" for m in columns], *[f"{m}_vs_sft_p" for m in columns]])
        for row in table:
            writer.writerow(
                [
                    row["method"],
                    *[f"{row[m]:.4f}" for m in columns],
                    *[f"{row.get(m + '_vs_sft', 0.0):.4f}" for m in columns],
                    *[f"{row.get(m + '_vs_sft_p', float('nan')):.4f}" for m in columns],
                ]
            )
    lines = [
        f"Held-out split `{split}`, {n_records} records. Judge: `{judge_name}`. "
        f"{metrics_variant}. `*`: better than SFT, paired bootstrap p < 0.05; "
        "in brackets: difference to SFT with its 95% interval.",
        "",
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row in table:
        cells = []
        for m in columns:
            cell = f"{row[m]:.4f}"
            if f"{m}_vs_sft" in row:
                low, high = row[f"{m}_vs_sft_ci"]
                star = "*" if row[f"{m}_vs_sft_p"] < 0.05 else ""
                cell += f"{star} ({row[m + '_vs_sft']:+.3f} [{low:+.3f}, {high:+.3f}])"
            cells.append(cell)
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    (out_dir / "table.md").write_text("\n".join(lines) + "\n")


def rounds_figure(histories: dict[str, dict[int, dict]]):
    """Held-out metrics per EM round (round 0 = SFT), one panel per metric, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(SCORE_NAMES), 3.4))
    axes = figure.subplots(1, len(SCORE_NAMES))
    for axis, metric in zip(axes, SCORE_NAMES):
        for run, history in histories.items():
            rounds = sorted(history)
            axis.plot(rounds, [history[r]["summary"].get(metric, float("nan")) for r in rounds], marker="o", label=run)
        axis.set_title(metric)
        axis.set_xlabel("EM round (0 = SFT)")
        axis.set_xticks(sorted({r for h in histories.values() for r in h}))
        axis.grid(alpha=0.3)
    if histories:
        axes[0].legend()
    figure.tight_layout()
    return figure


def plot_rounds(histories: dict[str, dict[int, dict]], path) -> None:
    rounds_figure(histories).savefig(path, dpi=110)
