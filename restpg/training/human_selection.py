"""Human ratings in the E-step's selection (not in the paper: restpg's human-in-the-loop rule).

The E-step keeps the high-reward samples (``restpg.training.em.select_samples``). When a run is given a
ratings store (``--ratings-from runs/restpg.db``, the app's store), the raters' ratings of that
round's samples then steer what the M-step trains on:

- a sample flagged as copying the user's real text is dropped (``veto_copy``);
- a sample whose faithfulness, averaged over its raters, is at or below ``veto_faithfulness``
  is dropped (0: never);
- a veto needs what the run's owner chose: ``quorum`` distinct raters (default 2, so no single
  rater decides alone), or one of ``vetoers`` (e.g. the app's trainers), whose own rating suffices;
- with ``weight``, each rated sample's weight (its reward) is multiplied by its mean human score
  over the three criteria and the raters, divided by 5.

Samples are rated under stable generation ids, ``<run id>/<sample id>`` (:func:`sample_generation_id`).
The rule is applied once, when the round's M-step starts, and its result is written to the round's
``training_set.jsonl`` before training: a resumed M-step reuses it (the same selection), and a
finished round is never changed by later ratings.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean

from ..errors import RestpgError
from ..store.ratings import CRITERIA


class HumanSelectionError(RestpgError, ValueError):
    """The ratings store cannot be read, or a rule value is out of range."""


def sample_generation_id(run_id: str, sample_id: str) -> str:
    """The id an E-step sample is rated under: stable across imports and resumes."""
    return f"{run_id}/{sample_id}"


@dataclass(frozen=True)
class HumanRule:
    veto_copy: bool = True  # drop a sample flagged as copying the real text (by a quorum or a vetoer)
    veto_faithfulness: int = 2  # drop a sample whose mean faithfulness is <= this (0: never)
    weight: bool = False  # multiply the reward weight by the mean human score / 5
    quorum: int = 2  # ours: distinct raters a veto needs (1: any single rater)
    vetoers: tuple[str, ...] = ()  # raters whose own rating vetoes alone (the run's owner's choice)

    def __post_init__(self) -> None:
        if isinstance(self.veto_faithfulness, bool) or self.veto_faithfulness not in range(0, 6):
            raise HumanSelectionError(f"veto_faithfulness: must be 0-5 (0: off), got {self.veto_faithfulness!r}")
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int) or not 1 <= self.quorum <= 100:
            raise HumanSelectionError(f"quorum: must be a whole number 1-100, got {self.quorum!r}")
        object.__setattr__(self, "vetoers", tuple(sorted({str(name) for name in self.vetoers})))

    def vetoes(self, raters: Sequence[str]) -> bool:
        """Whether these raters (the ones whose ratings call for a veto) are enough to apply it."""
        return len(set(raters)) >= self.quorum or bool(set(raters) & set(self.vetoers))


def read_sample_ratings(store_path: str | Path, generation_ids: Sequence[str]) -> dict[str, list[dict]]:
    """The current ratings of the given generation ids, by id, read without writing to the store
    (the app may be saving ratings at the same moment; WAL readers see the last commit)."""
    path = Path(store_path)
    if not path.is_file():
        raise HumanSelectionError(f"ratings store {str(path)!r} does not exist (--ratings-from)")
    wanted = set(generation_ids)
    columns = ", ".join(["annotator", "generation_id", *CRITERIA, "copies_output"])
    try:
        with sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='ratings'").fetchone()
            rows = [dict(r) for r in conn.execute(f"SELECT {columns} FROM ratings")] if has_table else []
    except sqlite3.DatabaseError as error:
        raise HumanSelectionError(f"ratings store {str(path)!r}: {error}") from None
    by_id: dict[str, list[dict]] = {}
    for row in rows:
        if row["generation_id"] in wanted:
            by_id.setdefault(row["generation_id"], []).append(row)
    return by_id


def apply_rule(
    kept: Sequence[dict], ratings: dict[str, list[dict]], rule: HumanRule, run_id: str
) -> tuple[list[dict], dict]:
    """The training set (rows ``{sample_id, reward, weight}``, in ``kept``'s order) and a report of
    what the ratings changed: which samples were dropped or re-weighted, why, and by whom."""
    training, dropped, reweighted, short = [], [], [], []
    by_annotator: dict[str, dict[str, int]] = {}

    def credit(names: Sequence[str], what: str) -> None:
        for name in names:
            counts = by_annotator.setdefault(name, {"dropped": 0, "reweighted": 0})
            counts[what] += 1

    for sample in kept:
        rows = ratings.get(sample_generation_id(run_id, sample["sample_id"]), [])
        weight = float(sample["reward"])
        if rows:
            annotators = sorted(r["annotator"] for r in rows)
            copiers = sorted(r["annotator"] for r in rows if r["copies_output"])
            faithfulness = fmean(r["faithfulness"] for r in rows)
            own = [r for r in rows if r["annotator"] in rule.vetoers]
            reason = None
            if rule.veto_copy and copiers and rule.vetoes(copiers):
                reason, by = "flagged as copying the real text", copiers
            elif rule.veto_faithfulness and faithfulness <= rule.veto_faithfulness and len(annotators) >= rule.quorum:
                reason, by = f"mean faithfulness {faithfulness:.2f} <= {rule.veto_faithfulness}", annotators
            elif rule.veto_faithfulness and own and fmean(r["faithfulness"] for r in own) <= rule.veto_faithfulness:
                by = sorted(r["annotator"] for r in own)
                reason = (
                    f"faithfulness {fmean(r['faithfulness'] for r in own):.2f} <= {rule.veto_faithfulness} by a vetoer"
                )
            elif (rule.veto_copy and copiers) or (rule.veto_faithfulness and faithfulness <= rule.veto_faithfulness):
                short.append({"sample_id": sample["sample_id"], "annotators": annotators})
            if reason is not None:
                dropped.append({"sample_id": sample["sample_id"], "reason": reason, "annotators": by})
                credit(by, "dropped")
                continue
            if rule.weight:
                human = fmean(fmean(r[c] for c in CRITERIA) for r in rows)
                new_weight = weight * human / 5
                reweighted.append(
                    {
                        "sample_id": sample["sample_id"],
                        "human_score": round(human, 4),
                        "weight_before": weight,
                        "weight_after": new_weight,
                        "annotators": annotators,
                    }
                )
                credit(annotators, "reweighted")
                weight = new_weight
        training.append({"sample_id": sample["sample_id"], "reward": float(sample["reward"]), "weight": weight})
    rated = {sample_generation_id(run_id, s["sample_id"]) for s in kept} & set(ratings)
    report = {
        "rule": asdict(rule),
        "read_at": time.time(),
        "kept_by_reward": len(kept),
        "kept_rated": len(rated),
        "dropped": len(dropped),
        "veto_short_of_quorum": len(short),  # a veto asked for by too few raters: kept
        "reweighted": len(reweighted),
        "trained": len(training),
        "by_annotator": by_annotator,
        "dropped_samples": dropped,
        "reweighted_samples": reweighted,
        "short_of_quorum_samples": short,
    }
    return training, report
