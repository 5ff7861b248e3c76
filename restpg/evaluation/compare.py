"""The paper's comparison: six methods on the same held-out records, the tables (overall, and
per task with their average, as the paper's Table 1) and the per-round figure."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean

from ..data.prompts import PromptSettings
from ..runs import RunFolder
from ..training.em import Models, RunControl, load_split, run_em
from .evaluate import (
    SCORE_NAMES,
    bootstrap_interval,
    flat_judge,
    inference_settings,
    paired_bootstrap,
    predict,
    score_predictions,
)

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
FALLBACK_BASELINE = "SFT with reasoning"  # where no ReST-EM run was given (the paper: SFT ~ SFT with reasoning)


def baseline_method(methods) -> str | None:
    """The method the differences are taken against: SFT, else SFT with reasoning, else none."""
    return next((m for m in (BASELINE, FALLBACK_BASELINE) if m in methods), None)


RUNS = ("rest-pg", "rest-em")  # the two trained runs: with reasoning (REST-PG) and without (ReST-EM)
OUTPUTS = ("table.csv", "table.md", "table_by_task.csv", "table_by_task.md", "rounds.png", "predictions.jsonl")


def compare_methods(config, run_root, split: str = "test", control=None) -> dict:
    """Train (or resume) REST-PG and ReST-EM-without-reasoning under ``run_root``, then score all six
    methods on ``split`` (:func:`compare_runs`), written to ``run_root/comparison``."""
    control = control or RunControl()
    run_root = Path(run_root)
    for run, reasoning in zip(RUNS, (True, False)):
        run_em(dataclasses.replace(config, reasoning=reasoning), run_root / run, control)
    runs = {run: run_root / run for run in RUNS}
    return compare_runs(config, runs, run_root / "comparison", split, control, RunFolder(run_root).judge_cache)


def round_history(run_dir: Path) -> dict[int, dict]:
    """{round: held-out metrics} of a finished run's steps (round 0: SFT), from their metrics.json."""
    history = {}
    for t in range(0, 1000):
        metrics = RunFolder(run_dir).round(t).metrics
        if not metrics.exists():
            break
        history[t] = json.loads(metrics.read_text())
    return history


def generation_key(config, kind: str, adapter: Path | None) -> str:
    """What a method's greedy outputs depend on: the base model, the adapter's weights (their
    sha256), the prompt kind and the generation settings. Equal keys: the same outputs."""
    import hashlib

    weights = "base"
    if adapter is not None:
        digest = hashlib.sha256()
        for path in sorted(Path(adapter).glob("*.safetensors")):
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        weights = digest.hexdigest()
    parts = [
        config.model,
        weights,
        kind,
        config.k,
        config.max_new_tokens,
        config.max_item_words,
        config.max_input_tokens,
        config.seed,
        config.generation_batch_size,
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def reusable_predictions(path: Path | None, records, keys: dict[str, str]) -> dict[str, list[dict]]:
    """The predictions of an earlier comparison (its ``predictions.jsonl``) that a method can take
    instead of generating again: the same generation key and the same records, in order."""
    if path is None or not Path(path).is_file():
        return {}
    by_method: dict[str, list[dict]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            by_method.setdefault(row["method"], []).append(row)
    ids = [r.record_id for r in records]
    return {
        method: rows
        for method, rows in by_method.items()
        if method in keys
        and [r["record_id"] for r in rows] == ids
        and all(r.get("generation_key") == keys[method] for r in rows)
    }


def compare_runs(
    config, runs: dict[str, Path], out_dir, split: str = "test", control=None, judge_cache=None, reuse=None
) -> dict:
    """Score the paper's six methods on the same held-out records of ``split``: the base model with
    the plain and the RAG prompt, the SFT step and the last round of ``runs["rest-em"]`` (no
    reasoning) and of ``runs["rest-pg"]`` (reasoning first). Any two finished runs (the shipped ones
    too: their adapters are what is scored); with ``rest-pg`` alone, the methods of the missing run
    are left out and the differences are taken to SFT with reasoning. Writes ``out_dir/{table.csv, table.md,
    table_by_task.csv, table_by_task.md, rounds.png, predictions.jsonl}`` and returns the tables and
    each run's rounds. ``reuse``: an earlier ``predictions.jsonl`` whose methods with the same
    generation key (:func:`generation_key`) are rescored from their stored outputs, not generated again."""
    control = control or RunControl()
    histories = {run: round_history(Path(runs[run])) for run in RUNS if run in runs}
    records = load_split(config, split, config.eval_users)
    models = Models(config)
    settings = inference_settings(
        config.max_new_tokens, config.generation_batch_size, config.seed, config.max_input_tokens
    )
    prompt_settings = PromptSettings(max_item_words=config.max_item_words)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    judge = models.judge(judge_cache)
    per_method: dict[str, list[dict]] = {}
    last_round = {run: max(history, default=0) for run, history in histories.items()}
    # A run's EM method needs a round: a run of SFT alone (0 rounds) gives its SFT row only.
    methods = [m for m in METHODS if m[2] is None or (m[2] in runs and (m[3] == "sft" or last_round[m[2]] > 0))]
    adapters, keys = {}, {}
    for name, kind, run, step in methods:
        adapter = None
        if run is not None:
            adapter = RunFolder(Path(runs[run])).round(0 if step == "sft" else last_round[run]).adapter
        adapters[name], keys[name] = adapter, generation_key(config, kind, adapter)
    reused = reusable_predictions(reuse, records, keys)
    written = out_dir / "predictions.jsonl.tmp"
    with written.open("w", encoding="utf-8") as handle:
        for name, kind, _, _ in methods:
            if name in reused:
                outputs = [(row["reasoning"], row["answer"]) for row in reused[name]]
            else:
                loaded = models.generator(adapters[name])
                predictions = predict(loaded, records, kind, settings, config.k, prompt_settings, cancel=control.cancel)
                outputs = [(p[0].reasoning, p[0].answer) for p in predictions]
            answers = [answer for _, answer in outputs]
            rows = score_predictions(records, answers, models.metrics(), judge)
            for row, answer in zip(rows, answers):
                row[EMPTY] = 0.0 if answer.strip() else 1.0
            per_method[name] = rows
            for record, (reasoning, answer), row in zip(records, outputs, rows):
                line = {"method": name, "record_id": record.record_id, "task": record.task}
                line.update(reasoning=reasoning, answer=answer, generation_key=keys[name], **row)
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            control.on_progress("comparison", len(per_method), len(methods))
    written.replace(out_dir / "predictions.jsonl")
    tasks = [r.task for r in records]
    table = comparison_table(per_method, tasks)
    flat = judge_verdict(per_method)
    write_table(table, out_dir, split, tasks, judge.name, models.metrics().variant, flat)
    by_task = task_table(per_method, tasks)
    write_task_table(by_task, out_dir, split, judge.name, flat)
    plot_rounds(histories, out_dir / "rounds.png")
    return {"table": table, "by_task": by_task, "histories": histories, "judge_flat": flat}


# ----------------------------------------------------------------------------------------------
# Table 1 as the paper reports it: each task, and the average of the task means

AVERAGE = "average"
EMPTY = "empty_answer"  # 1.0 where a method's parsed answer was empty (it scores 0), else 0.0


def _metrics(per_method: dict[str, list[dict]]) -> list[str]:
    first = next((rows[0] for rows in per_method.values() if rows), {})
    return [m for m in SCORE_NAMES if m in first]


def judge_verdict(per_method: dict[str, list[dict]]) -> float | None:
    """The one score the judge gave every answer of every method (then it is uninformative, shown
    as such rather than as a score), or None when its scores vary."""
    return flat_judge([row for rows in per_method.values() for row in rows])


def task_table(per_method: dict[str, list[dict]], tasks: Sequence[str], samples: int = 10_000) -> list[dict]:
    """One row per method, metric and task (and the average of the task means, the paper's
    overall figure): mean, 95% bootstrap interval (records resampled within each task), n, and the
    paired difference to SFT (:func:`baseline_method`) on the same records with its interval and
    two-sided p."""
    names = list(dict.fromkeys(tasks))
    baseline_name = baseline_method(per_method)
    baseline = per_method.get(baseline_name)
    rows = []
    for method, scores in per_method.items():
        for metric in _metrics(per_method):
            values = [row[metric] for row in scores]
            for task in names + [AVERAGE]:
                chosen = [i for i, t in enumerate(tasks) if task in (AVERAGE, t)]
                groups = [[values[i] for i in chosen if tasks[i] == t] for t in names]
                mean, low, high = bootstrap_interval(groups, samples)
                row = {"method": method, "metric": metric, "task": task, "mean": mean, "low": low, "high": high}
                row["n"] = len(chosen)
                if baseline is not None and method != baseline_name:
                    base = [baseline[i][metric] for i in chosen]
                    diff, d_low, d_high, p = paired_bootstrap(
                        [values[i] for i in chosen], base, [tasks[i] for i in chosen], samples
                    )
                    row.update(vs_sft=diff, vs_sft_low=d_low, vs_sft_high=d_high, vs_sft_p=p)
                rows.append(row)
    return rows


def comparison_table(per_method: dict[str, list[dict]], tasks: Sequence[str], samples: int = 10_000) -> list[dict]:
    """One row per method: per metric the mean of the task means (the paper's overall figure), the
    pooled mean over all records beside it, the paired difference to SFT (mean of the tasks' mean
    differences) with its 95% interval and two-sided p; the records, and the share of empty answers."""
    by_task = {(r["method"], r["metric"]): r for r in task_table(per_method, tasks, samples) if r["task"] == AVERAGE}
    table = []
    for method, scores in per_method.items():
        entry = {"method": method, "n": len(scores)}
        for metric in _metrics(per_method):
            cell = by_task[method, metric]
            entry[metric] = cell["mean"]
            entry[f"{metric}_pooled"] = fmean(row[metric] for row in scores)
            if "vs_sft" in cell:
                entry[f"{metric}_vs_sft"] = cell["vs_sft"]
                entry[f"{metric}_vs_sft_ci"] = (cell["vs_sft_low"], cell["vs_sft_high"])
                entry[f"{metric}_vs_sft_p"] = cell["vs_sft_p"]
        entry[EMPTY] = fmean(row.get(EMPTY, 0.0) for row in scores)
        table.append(entry)
    return table


def _judge_note(flat: float | None) -> str:
    if flat is None:
        return ""
    return (
        f" The judge gave every answer of every method the same score ({flat:.3f}): it tells none apart, so its "
        "column is uninformative and shown as such, not as a score."
    )


def write_table(
    table: list[dict], out_dir, split: str, tasks: Sequence[str], judge_name: str, metrics_variant: str, flat=None
) -> None:
    """``table.csv`` and ``table.md``: per method and metric the mean of the task means, the pooled
    mean, the difference to SFT with its 95% interval and two-sided p; n and empty answers."""
    import csv

    metrics = [m for m in SCORE_NAMES if m in table[0]]
    columns = ["method", "n", EMPTY]
    for m in metrics:
        columns += [m, f"{m}_pooled", f"{m}_vs_sft", f"{m}_vs_sft_low", f"{m}_vs_sft_high", f"{m}_vs_sft_p"]
    columns.append("judge_informative")
    with (Path(out_dir) / "table.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in table:
            cells = [row["method"], row["n"], f"{row[EMPTY]:.4f}"]
            for m in metrics:
                hidden = m == "judge" and flat is not None
                low, high = row.get(f"{m}_vs_sft_ci", ("", ""))
                values = [
                    row[m],
                    row[f"{m}_pooled"],
                    row.get(f"{m}_vs_sft", ""),
                    low,
                    high,
                    row.get(f"{m}_vs_sft_p", ""),
                ]
                cells += ["" if hidden or v == "" else f"{v:.4f}" for v in values]
            writer.writerow(cells + [flat is None])
    counts = {t: list(tasks).count(t) for t in dict.fromkeys(tasks)}
    baseline = baseline_method([row["method"] for row in table])
    lines = [
        f"Held-out split `{split}`, {len(tasks)} records ({', '.join(f'{t} {n}' for t, n in counts.items())}). "
        f"Judge: `{judge_name}`. {metrics_variant}. Each score is the mean of the task means (the paper's "
        f"Table 1). In brackets: the paired difference to {baseline} on the same records (the mean of the tasks' "
        "mean differences) with its 95% bootstrap interval (records resampled within each task); `*`: the "
        "interval excludes 0 (two-sided p < 0.05)." + _judge_note(flat),
        "",
        "| method | " + " | ".join(metrics) + " | pooled ROUGE-L | empty answers |",
        "|---|" + "---|" * (len(metrics) + 2),
    ]
    for row in table:
        cells = []
        for m in metrics:
            if m == "judge" and flat is not None:
                cells.append("uninformative")
                continue
            cell = f"{row[m]:.4f}"
            if f"{m}_vs_sft" in row:
                low, high = row[f"{m}_vs_sft_ci"]
                star = "*" if row[f"{m}_vs_sft_p"] < 0.05 else ""
                cell += f"{star} ({row[m + '_vs_sft']:+.3f} [{low:+.3f}, {high:+.3f}], p {row[m + '_vs_sft_p']:.3f})"
            cells.append(cell)
        pooled = f"{row['rougeL_pooled']:.4f}" if "rougeL_pooled" in row else ""
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {pooled} | {row[EMPTY]:.0%} |")
    (Path(out_dir) / "table.md").write_text("\n".join(lines) + "\n")


TASK_COLUMNS = [
    "method",
    "metric",
    "task",
    "mean",
    "low",
    "high",
    "n",
    "vs_sft",
    "vs_sft_low",
    "vs_sft_high",
    "vs_sft_p",
]


def write_task_table(rows: list[dict], out_dir, split: str, judge_name: str, flat=None) -> None:
    """``table_by_task.csv`` (one line per method, metric, task) and ``table_by_task.md`` (per
    metric, methods x tasks + average, with 95% bootstrap intervals)."""
    import csv

    out_dir = Path(out_dir)
    with (out_dir / "table_by_task.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TASK_COLUMNS)
        writer.writeheader()
        for row in rows:
            hidden = row["metric"] == "judge" and flat is not None
            writer.writerow(
                {k: ("" if hidden and k not in ("method", "metric", "task", "n") else v) for k, v in row.items()}
            )
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    baseline = baseline_method(methods)
    lines = [
        f"Held-out split `{split}`, per task and the average of the task means (as the paper's Table 1). Judge: "
        f"`{judge_name}`. In brackets: 95% bootstrap interval (records resampled within each task); "
        f"`*`: better or worse than {baseline} on the same records, the paired interval excluding 0."
        + _judge_note(flat)
    ]
    for metric in dict.fromkeys(row["metric"] for row in rows):
        if metric == "judge" and flat is not None:
            continue
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
            lines.append(f"| {method} | " + " | ".join(_task_cell(cell[method, t]) for t in tasks) + " |")
    (out_dir / "table_by_task.md").write_text("\n".join(lines) + "\n")


def _task_cell(row: dict) -> str:
    star = "*" if "vs_sft_p" in row and row["vs_sft_p"] < 0.05 else ""
    return f"{row['mean']:.4f}{star} [{row['low']:.3f}, {row['high']:.3f}]"


MIN_SPAN = 0.04  # a panel's y range at least this wide: a 0.002 change should not fill the plot


def rounds_figure(histories: dict[str, dict[int, dict]]):
    """Held-out (validation) metrics per EM round (round 0 = SFT), one panel per metric, one line
    per run. A metric with the same value everywhere (a judge that gives every answer one level)
    gets no panel; each panel spans at least MIN_SPAN so small changes look small."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    def values(metric):
        return [h[r]["summary"][metric] for h in histories.values() for r in h if metric in h[r]["summary"]]

    def flat(metric):  # two points or more, all the same: nothing to read from a line
        seen = values(metric)
        return len(seen) > 1 and len(set(seen)) == 1

    metrics = [m for m in SCORE_NAMES if not flat(m)] or list(SCORE_NAMES)
    figure = Figure(figsize=(4 * len(metrics), 3.6))
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for axis, metric in zip(axes, metrics):
        for run, history in histories.items():
            rounds = sorted(history)
            axis.plot(rounds, [history[r]["summary"].get(metric, float("nan")) for r in rounds], marker="o", label=run)
        seen = values(metric)
        if seen and max(seen) - min(seen) < MIN_SPAN:
            middle = (max(seen) + min(seen)) / 2
            axis.set_ylim(middle - MIN_SPAN / 2, middle + MIN_SPAN / 2)
        axis.set_title(metric)
        axis.set_xlabel("EM round (0 = SFT)")
        axis.set_xticks(sorted({r for h in histories.values() for r in h}))
        axis.grid(alpha=0.3)
    if histories:
        axes[0].legend()
        axes[0].set_ylabel("validation mean")
    hidden = [m for m in SCORE_NAMES if m not in metrics]
    note = f" ({', '.join(hidden)}: one value everywhere, not shown)" if hidden else ""
    figure.suptitle("Held-out validation metrics per EM round" + note, fontsize=10)
    figure.tight_layout()
    return figure


def plot_rounds(histories: dict[str, dict[int, dict]], path) -> None:
    rounds_figure(histories).savefig(path, dpi=110)
