"""The shipped results, read for the page: the six methods per task with their intervals (the files
``restpg evaluate`` writes, ``assets/models/<run>/comparison/``) and what each EM round of the
shipped runs sampled, kept and scored. Nothing here recomputes a number: the page shows the files."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..runs import RunFolder, StepFolder, round_name
from ..training.versions import SHIPPED_DIR

COMPARISON = "comparison"
METRIC_LABELS = {"rougeL": "ROUGE-L", "rouge1": "ROUGE-1", "meteor": "METEOR", "judge": "LLM judge"}


@dataclass(frozen=True)
class Comparison:
    """One comparison folder: the overall table, the per-task table, their header and the figure."""

    folder: Path
    overall: list[dict]  # table.csv rows
    by_task: list[dict]  # table_by_task.csv rows
    header: str  # table.md's first paragraph: split, records, judge, how to read the brackets
    figure: Path | None  # rounds.png
    runs: list[Path] = field(default_factory=list)  # the shipped run folders beside it

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(row["metric"] for row in self.by_task))

    @property
    def baseline(self) -> str:
        """The method the differences are taken against: the one whose average has a mean but no
        difference (SFT, or SFT with reasoning where no ReST-EM run was compared)."""
        return next(
            (
                row["method"]
                for row in self.by_task
                if row["task"] == "average" and row["mean"] not in ("", None) and row.get("vs_sft") in ("", None)
            ),
            "SFT",
        )

    @property
    def judge_informative(self) -> bool:
        return all(row.get("judge_informative", "True") == "True" for row in self.overall)


def _csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def find_comparison(shipped_root: Path = SHIPPED_DIR) -> Comparison | None:
    """The comparison shipped under ``shipped_root`` (the first run folder holding one), or None."""
    root = Path(shipped_root)
    for folder in sorted(root.glob(f"*/{COMPARISON}")) if root.is_dir() else []:
        if (folder / "table.csv").exists() and (folder / "table_by_task.csv").exists():
            header = (
                (folder / "table.md").read_text(encoding="utf-8").split("\n\n")[0]
                if (folder / "table.md").exists()
                else ""
            )
            runs = [p.parent for p in sorted(root.glob("*/manifest.json"))]
            figure = folder / "rounds.png"
            return Comparison(
                folder,
                _csv(folder / "table.csv"),
                _csv(folder / "table_by_task.csv"),
                header,
                figure if figure.exists() else None,
                runs,
            )
    return None


def _number(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def task_rows(comparison: Comparison, metric: str) -> list[dict]:
    """Methods x tasks for one metric: each cell "mean [low, high]" (95% interval, records resampled
    within each task), ``*`` where the paired interval against the baseline (SFT, or SFT with
    reasoning where no ReST-EM run was compared) excludes 0; then the average's difference to it
    with its interval and p. An uninformative judge reads as such."""
    cells = [row for row in comparison.by_task if row["metric"] == metric]
    tasks = list(dict.fromkeys(row["task"] for row in cells))
    counts = {row["task"]: row["n"] for row in cells}
    baseline = comparison.baseline
    versus = f"average vs {baseline} [95% interval]"
    table = []
    for method in dict.fromkeys(row["method"] for row in cells):
        line = {"method": method}
        mine = {row["task"]: row for row in cells if row["method"] == method}
        for task in tasks:
            row = mine[task]
            mean = _number(row["mean"])
            if mean is None:
                line[f"{task} (n={counts[task]})"] = "uninformative"
                continue
            p = _number(row.get("vs_sft_p", ""))
            star = "*" if p is not None and p < 0.05 else ""
            line[f"{task} (n={counts[task]})"] = f"{mean:.4f}{star} [{float(row['low']):.3f}, {float(row['high']):.3f}]"
        average = mine.get("average", {})
        diff = _number(average.get("vs_sft", ""))
        if diff is None:
            line[versus] = "" if method == baseline or average.get("mean") else "uninformative"
            line["p (two-sided)"] = ""
        else:
            low, high = float(average["vs_sft_low"]), float(average["vs_sft_high"])
            line[versus] = f"{diff:+.4f} [{low:+.3f}, {high:+.3f}]"
            line["p (two-sided)"] = f"{float(average['vs_sft_p']):.3f}"
        table.append(line)
    return table


def empty_answers(comparison: Comparison) -> dict[str, float]:
    """Each method's share of empty answers on the compared records (table.csv)."""
    return {row["method"]: float(row["empty_answer"]) for row in comparison.overall if row.get("empty_answer")}


def round_evidence(run_dir: Path) -> list[dict]:
    """Per step of a shipped run: its held-out scores and empty answers, and for each EM round what
    the E-step sampled, cut at the token limit, kept, and the rewards (mean, of the kept, histogram)."""
    run = RunFolder(Path(run_dir))
    rows = []
    for t in range(0, 100):
        step = StepFolder(run.round(t).path)
        if not step.metrics.exists():
            break
        summary = json.loads(step.metrics.read_text()).get("summary", {})
        row = {
            "run": Path(run_dir).name,
            "step": round_name(t),
            "val ROUGE-L": round(summary.get("rougeL", 0.0), 4),
            "val empty answers": f"{summary.get('empty_answers', 0.0):.0%}",
        }
        if step.selection.exists():
            selection = json.loads(step.selection.read_text())
            row.update(
                {
                    "sampled": selection["samples"],
                    "cut at the token limit": selection["truncated"],
                    "kept": selection["kept"],
                    "reward mean": round(selection["reward_mean"], 4),
                    "kept reward mean": round(selection["kept_reward_mean"], 4),
                    "reward histogram (0-0.1, ..., 0.9-1)": " ".join(str(n) for n in selection["reward_histogram"]),
                }
            )
        rows.append(row)
    return rows
