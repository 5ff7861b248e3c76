"""The paper's personalization check: answer each request with part (or all) of its profile swapped
for another user's, and see the scores fall. If they do not, the data (or the model) does not
measure personalization at all.

``swap_profiles(records, share)`` replaces the first ``share`` of each record's profile items with
items of another user of the same task (the next user in sorted order, wrapping around), so the
retrieved items come from a mix of the two. :func:`profile_swap` predicts with one version at each
share and compares the scores with the unswapped ones on the same records (paired bootstrap, the
task means averaged as in Table 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

from ..data.longlamp import Record
from ..data.prompts import PromptSettings
from .evaluate import inference_settings, paired_bootstrap, predict, score_predictions

SHARES = (0.0, 0.5, 1.0)  # of the profile's items swapped for another user's


def donor_of(records: Sequence[Record]) -> dict[str, str]:
    """Each user's donor: the next user of the same task, in sorted order (the last one's is the first)."""
    donors = {}
    for task in dict.fromkeys(r.task for r in records):
        users = sorted({r.user_id for r in records if r.task == task})
        if len(users) < 2:
            raise ValueError(f"a profile swap needs two users or more in task {task!r}")
        donors.update({user: users[(i + 1) % len(users)] for i, user in enumerate(users)})
    return donors


def swap_profiles(records: Sequence[Record], share: float) -> list[Record]:
    """The records with the first ``share`` of each profile's items replaced by the donor user's
    items (as many as it has, in its order); ``share`` 0 leaves them as they are."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    donors = donor_of(records)
    profiles = {}
    for record in records:  # a user's profile: the one of their first record
        profiles.setdefault((record.task, record.user_id), record.profile)
    swapped = []
    for record in records:
        count = math.ceil(share * len(record.profile))
        donor = profiles[record.task, donors[record.user_id]]
        profile = tuple(donor[:count]) + record.profile[count:]
        swapped.append(dataclasses.replace(record, profile=profile))
    return swapped


def profile_swap(
    loaded,
    records: Sequence[Record],
    kind: str,
    metrics,
    k: int,
    prompt_settings: PromptSettings,
    max_new_tokens: int,
    max_input_tokens: int,
    shares: Sequence[float] = SHARES,
    batch_size: int = 16,
    seed: int = 0,
) -> list[dict]:
    """Per share of swapped profile items: the mean ROUGE-L, ROUGE-1 and METEOR (mean of the task
    means) of ``loaded``'s answers, and ROUGE-L's paired difference to the unswapped profiles with
    its 95% interval and two-sided p."""
    settings = inference_settings(max_new_tokens, batch_size, seed, max_input_tokens)
    tasks = [r.task for r in records]
    scores = {}
    for share in shares:
        predictions = predict(loaded, swap_profiles(records, share), kind, settings, k, prompt_settings)
        scores[share] = score_predictions(records, [p[0].answer for p in predictions], metrics)
    rows = []
    own = next((s for s in shares if s == 0.0), None)
    for share in shares:
        row = {"swapped_share": share, "n": len(records)}
        for metric in ("rougeL", "rouge1", "meteor"):
            values = [s[metric] for s in scores[share]]
            by_task = [[v for v, t in zip(values, tasks) if t == task] for task in dict.fromkeys(tasks)]
            row[metric] = sum(sum(g) / len(g) for g in by_task) / len(by_task)
        if own is not None and share != own:
            diff, low, high, p = paired_bootstrap(
                [s["rougeL"] for s in scores[share]], [s["rougeL"] for s in scores[own]], tasks
            )
            row.update(rougeL_vs_own=diff, rougeL_vs_own_low=low, rougeL_vs_own_high=high, rougeL_vs_own_p=p)
        rows.append(row)
    return rows


def write_swap_table(rows: list[dict], out_dir: Path, version: str, split: str) -> None:
    """``profile_swap.csv`` and ``profile_swap.md`` in ``out_dir``."""
    import csv

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (out_dir / "profile_swap.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"Profile swap on `{split}` with {version}: the first share of each record's profile items replaced by "
        "another user's (same task). Scores: mean of the task means. In brackets: ROUGE-L's paired difference "
        "to the user's own profile, 95% interval, two-sided p.",
        "",
        "| profile items swapped | ROUGE-L | ROUGE-1 | METEOR | ROUGE-L vs own profile |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        versus = (
            f"{row['rougeL_vs_own']:+.4f} [{row['rougeL_vs_own_low']:+.3f}, {row['rougeL_vs_own_high']:+.3f}], "
            f"p {row['rougeL_vs_own_p']:.3f}"
            if "rougeL_vs_own" in row
            else ""
        )
        lines.append(
            f"| {row['swapped_share']:.0%} | {row['rougeL']:.4f} | {row['rouge1']:.4f} | {row['meteor']:.4f} | {versus} |"
        )
    (out_dir / "profile_swap.md").write_text("\n".join(lines) + "\n")
