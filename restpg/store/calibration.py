"""Does the judge agree with people? Rank correlations of human ratings with the judge and ROUGE-L.

The judge's score is the reward that drives self-training, so it should rank generations the way
people do. For each group of generations (by default each model version; E-step samples are stored
as generations with their own ``model_version`` label) and for all of them together, this gives
Spearman's rho and Kendall's tau-b between each human score and each metric, with percentile
bootstrap confidence intervals over items, and a table of the judge's level against the mean human
score.

An item is a rated generation. Its human score on a criterion is the mean over the annotators who
rated it (or one annotator's rating, with ``annotator``); ``mean`` is the mean of the three criteria.
An item counts for a metric only when its generation's ``scores`` has that metric, so ``n`` may
differ between the judge and ROUGE-L. Ratings whose generation is no longer stored are skipped and
counted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..errors import RestpgError
from .database import Store
from .ratings import CRITERIA

if TYPE_CHECKING:
    import pandas

HUMAN_SCORES = (*CRITERIA, "mean")
METRICS = ("judge", "rougeL")
ALL = "all"  # the group of every rated item (in the selected groups)
NO_GROUP = "(none)"  # the group of generations whose group column is empty
MIN_VALID_SHARE = 0.5  # fewer valid bootstrap resamples than this share: no interval
LEVEL_COLUMNS = ("group", "level", "judge", "n", *HUMAN_SCORES, "copies_output")

NOTHING_TO_CALIBRATE = (
    "no ratings yet: nothing to calibrate. Rate items in the Rate tab or with `python -m restpg ratings ...`, "
    "then run the calibration again"
)


class CalibrationError(RestpgError, ValueError):
    """Nothing to calibrate (no ratings), an unknown group, annotator or column, or bad input values."""


@dataclass(frozen=True)
class Correlation:
    """One group's rank correlation between a human score and a metric over ``n`` items; None: undefined."""

    group: str
    criterion: str  # one of HUMAN_SCORES
    metric: str  # one of METRICS
    n: int  # rated items whose generation has this metric
    spearman: float | None
    spearman_low: float | None
    spearman_high: float | None
    kendall: float | None
    kendall_low: float | None
    kendall_high: float | None


class RankCorrelation(NamedTuple):
    """Spearman's rho and Kendall's tau-b with their bootstrap intervals; None where undefined."""

    spearman: float | None
    spearman_ci: tuple[float, float] | None
    kendall: float | None
    kendall_ci: tuple[float, float] | None


@dataclass(frozen=True)
class Calibration:
    """Correlations for every group (``ALL`` first) x human score x metric with data, and the judge-level table."""

    group_by: str
    annotator: str | None  # None: every annotator, each item's scores averaged over them
    groups: list[str]  # the groups in the tables, ``ALL`` excluded
    items: int  # rated items counted (in the selected groups)
    ratings: int  # ratings of those items
    skipped: int  # ratings skipped because their generation is no longer stored
    bootstrap: int
    seed: int
    confidence: float
    correlations: list[Correlation] = field(default_factory=list)
    # keys: LEVEL_COLUMNS; copies_output: mean over items of the share of their annotators who flagged a copy
    levels: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Rank correlation with bootstrap intervals


def _is_constant(values: np.ndarray) -> bool:
    return bool(values.size == 0 or np.all(values == values[0]))


def _as_vector(values: Sequence[float], name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise CalibrationError(f"{name} must be numbers: {error}") from None
    if array.ndim != 1:
        raise CalibrationError(f"{name} must be a flat sequence of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise CalibrationError(f"{name} must be finite numbers, got {values!r}")
    return array


def _resampled_spearman(x: np.ndarray, y: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman's rho (Pearson's r of average ranks) for each row of ``indices``, and which rows are defined."""
    from scipy.stats import rankdata

    rx = rankdata(x[indices], axis=1)
    ry = rankdata(y[indices], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    sxx, syy = (rx * rx).sum(axis=1), (ry * ry).sum(axis=1)
    valid = (sxx > 0) & (syy > 0)
    rho = np.zeros(len(indices))
    rho[valid] = (rx * ry).sum(axis=1)[valid] / np.sqrt(sxx[valid] * syy[valid])
    return rho, valid


def _resampled_kendall(x: np.ndarray, y: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kendall's tau-b (scipy's) for each row of ``indices``, and which rows are defined.

    Items with equal (x, y) are merged, and each resample is its count of each distinct pair ``w``:
    concordant minus discordant pairs is ``w S w / 2`` with ``S[a, b] = sign(x_a - x_b) sign(y_a - y_b)``,
    and the pairs tied in x are ``(w E w - m) / 2`` with ``E[a, b] = (x_a == x_b)`` (``m`` items).
    """
    pairs, codes = np.unique(np.column_stack([x, y]), axis=0, return_inverse=True)
    codes = codes.reshape(-1)
    k, (rows, m) = len(pairs), indices.shape
    offsets = np.arange(rows)[:, None] * k
    counts = np.bincount((codes[indices] + offsets).ravel(), minlength=rows * k).reshape(rows, k)
    sx = np.sign(pairs[:, 0][:, None] - pairs[:, 0][None, :])
    sy = np.sign(pairs[:, 1][:, None] - pairs[:, 1][None, :])
    matrices = [(sx * sy).astype(np.float32), (sx == 0).astype(np.float32), (sy == 0).astype(np.float32)]
    sums = np.zeros((3, rows))
    step = max(1, 4_000_000 // max(k, 1))  # rows per chunk: bounded memory however many distinct pairs
    for start in range(0, rows, step):
        w = counts[start : start + step]
        w32 = w.astype(np.float32)  # products below are sums of at most m small integers: exact in float32
        for i, matrix in enumerate(matrices):
            sums[i, start : start + step] = np.einsum("ba,ba->b", (w32 @ matrix).astype(np.float64), w)
    concordance = sums[0] / 2
    total = m * (m - 1) / 2
    untied_x, untied_y = total - (sums[1] - m) / 2, total - (sums[2] - m) / 2
    valid = (untied_x > 0) & (untied_y > 0)
    tau = np.zeros(rows)
    tau[valid] = concordance[valid] / np.sqrt(untied_x[valid] * untied_y[valid])
    return tau, valid


def _interval(values: np.ndarray, valid: np.ndarray, confidence: float) -> tuple[float, float] | None:
    if valid.sum() < MIN_VALID_SHARE * len(valid) or not valid.any():
        return None
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(np.clip(values[valid], -1.0, 1.0), [tail, 100 - tail])
    return round(float(low), 12), round(float(high), 12)


def rank_correlation(
    human: Sequence[float], metric: Sequence[float], bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> RankCorrelation:
    """Spearman and Kendall (tau-b) between ``human`` and ``metric``, each with a percentile bootstrap interval.

    Resamples items with replacement ``bootstrap`` times (``numpy.random.default_rng(seed)``); resamples
    where a column is constant are skipped, and with fewer than half of them valid the interval is None.
    The estimates are None for fewer than 3 items or a constant column; no warning is emitted.
    """
    x, y = _as_vector(human, "human"), _as_vector(metric, "metric")
    if len(x) != len(y):
        raise CalibrationError(f"human and metric must have the same length, got {len(x)} and {len(y)}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise CalibrationError(f"bootstrap must be a whole number of resamples >= 0, got {bootstrap!r}")
    if not 0 < confidence < 1:
        raise CalibrationError(f"confidence must be between 0 and 1, got {confidence!r}")
    if len(x) < 3 or _is_constant(x) or _is_constant(y):
        return RankCorrelation(None, None, None, None)
    from scipy.stats import kendalltau, spearmanr

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        rho = float(spearmanr(x, y).statistic)
        tau = float(kendalltau(x, y).statistic)
    rho_ci = tau_ci = None
    if bootstrap > 0:
        indices = np.random.default_rng(seed).integers(0, len(x), size=(bootstrap, len(x)))
        with np.errstate(all="ignore"):
            rho_ci = _interval(*_resampled_spearman(x, y, indices), confidence)
            tau_ci = _interval(*_resampled_kendall(x, y, indices), confidence)
    if math.isnan(rho) or math.isnan(tau):  # not expected once constant columns are ruled out
        return RankCorrelation(None, None, None, None)
    return RankCorrelation(round(rho, 12), rho_ci, round(tau, 12), tau_ci)  # 1 - 1e-16 reads as 1


# ----------------------------------------------------------------------------------------------
# Items from the store


@dataclass
class _Item:
    group: str
    scores: dict[str, float]  # the metrics its generation has, of METRICS
    ratings: list[dict] = field(default_factory=list)

    def human(self, name: str) -> float:
        if name == "mean":
            return sum(self.human(c) for c in CRITERIA) / len(CRITERIA)
        return sum(r[name] for r in self.ratings) / len(self.ratings)

    @property
    def copies(self) -> float:
        return sum(bool(r["copies_output"]) for r in self.ratings) / len(self.ratings)


def _metric_scores(text: str | None) -> dict[str, float]:
    """The finite numbers of METRICS in a generation's ``scores`` JSON; anything unreadable is missing."""
    try:
        scores = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    if not isinstance(scores, dict):
        return {}
    out = {}
    for name in METRICS:
        value = scores.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def _load(store: Store, group_by: str, annotator: str | None) -> tuple[dict[str, _Item], int, int]:
    """Rated items by generation id, ratings counted, ratings skipped (their generation is gone)."""
    db = store.db
    if not db["ratings"].exists() or not db.execute("SELECT 1 FROM ratings LIMIT 1").fetchone():
        raise CalibrationError(NOTHING_TO_CALIBRATE)
    columns = ", ".join(["generation_id", *CRITERIA, "copies_output"])
    if annotator is None:
        rows = list(db.query(f"SELECT {columns} FROM ratings"))
    else:
        rows = list(db.query(f"SELECT {columns} FROM ratings WHERE annotator = ?", [annotator.strip()]))
        if not rows:
            known = [r[0] for r in db.execute("SELECT DISTINCT annotator FROM ratings ORDER BY annotator")]
            raise CalibrationError(f"annotator {annotator!r} has no ratings; annotators: {', '.join(known)}")
    generations = db["generations"]
    if not generations.exists():
        return {}, 0, len(rows)
    if group_by not in generations.columns_dict:
        raise CalibrationError(
            f"group_by {group_by!r} is not a column of the generations table; columns: "
            f"{', '.join(generations.columns_dict)}"
        )
    stored = {
        gid: (group, scores)
        for gid, group, scores in db.execute(
            f"SELECT generation_id, [{group_by}], scores FROM generations "
            "WHERE generation_id IN (SELECT generation_id FROM ratings)"
        )
    }
    items: dict[str, _Item] = {}
    skipped = 0
    for row in rows:
        generation = stored.get(row["generation_id"])
        if generation is None:
            skipped += 1
            continue
        group, scores = generation
        item = items.get(row["generation_id"])
        if item is None:
            label = NO_GROUP if group is None or str(group) == "" else str(group)
            item = items[row["generation_id"]] = _Item(label, _metric_scores(scores))
        item.ratings.append(row)
    return items, len(rows) - skipped, skipped


# ----------------------------------------------------------------------------------------------
# The calibration


def _level_rows(group: str, items: list[_Item]) -> list[dict]:
    by_level: dict[int, list[_Item]] = {}
    for item in items:
        if "judge" in item.scores:
            by_level.setdefault(round(item.scores["judge"] * 10), []).append(item)
    rows = []
    for level, members in sorted(by_level.items()):
        row: dict = {"group": group, "level": level, "judge": level / 10, "n": len(members)}
        for name in HUMAN_SCORES:
            row[name] = sum(m.human(name) for m in members) / len(members)
        row["copies_output"] = sum(m.copies for m in members) / len(members)
        rows.append(row)
    return rows


def calibration(
    store: Store,
    group_by: str = "model_version",
    annotator: str | None = None,
    groups: Sequence[str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Calibration:
    """Rank correlations of each human score with the judge and ROUGE-L per group and for ``ALL``, and the level table.

    ``group_by``: a column of the generations table. ``groups``: only these groups (``ALL`` is then
    their items). ``annotator``: only that annotator's ratings. Raises ``CalibrationError`` when there
    are no ratings, or for an unknown annotator, column or group.
    """
    items, counted, skipped = _load(store, group_by, annotator)
    known = sorted({item.group for item in items.values()})
    if groups is None:
        selected = known
    else:
        selected = list(dict.fromkeys(groups))
        unknown = [g for g in selected if g not in known]
        if unknown:
            raise CalibrationError(
                f"unknown group {', '.join(map(repr, unknown))} for {group_by}: no rated generations; "
                f"groups with ratings: {', '.join(known) or 'none'}"
            )
    chosen = [item for item in items.values() if item.group in set(selected)]
    members = [(ALL, chosen)] + [(g, [item for item in chosen if item.group == g]) for g in selected]
    correlations, levels = [], []
    for group, group_items in members:
        for metric in METRICS:
            scored = [item for item in group_items if metric in item.scores]
            if not scored:
                continue
            values = [item.scores[metric] for item in scored]
            for name in HUMAN_SCORES:
                r = rank_correlation([item.human(name) for item in scored], values, bootstrap, seed, confidence)
                correlations.append(
                    Correlation(
                        group,
                        name,
                        metric,
                        len(scored),
                        r.spearman,
                        *(r.spearman_ci or (None, None)),
                        r.kendall,
                        *(r.kendall_ci or (None, None)),
                    )
                )
        levels.extend(_level_rows(group, group_items))
    return Calibration(
        group_by=group_by,
        annotator=None if annotator is None else annotator.strip(),
        groups=selected,
        items=len(chosen),
        ratings=sum(len(item.ratings) for item in chosen),
        skipped=skipped,
        bootstrap=bootstrap,
        seed=seed,
        confidence=confidence,
        correlations=correlations,
        levels=levels,
    )


# ----------------------------------------------------------------------------------------------
# Output


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _with_interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "n/a"
    interval = "n/a" if low is None or high is None else f"{low:.3f}, {high:.3f}"
    return f"{value:.3f} [{interval}]"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def format_calibration(cal: Calibration) -> str:
    """The correlation table and the judge-level table, as aligned markdown for the CLI."""
    percent = f"{cal.confidence * 100:g}%"
    who = "all annotators (each item's scores are the mean over its annotators)"
    lines = [
        f"Judge calibration by {cal.group_by}: rank correlation of human ratings with the judge and ROUGE-L",
        f"Ratings: {who if cal.annotator is None else f'annotator {cal.annotator}'}; "
        f"{cal.items} rated items from {cal.ratings} ratings",
        f"Skipped: {cal.skipped} rating{'' if cal.skipped == 1 else 's'} whose generation is no longer stored",
    ]
    if not cal.correlations:
        lines += ["", "No rated item is in the tables: nothing to correlate."]
        return "\n".join(lines) + "\n"
    lines += [
        f"n: rated items whose generation has that metric; CI: {percent} percentile bootstrap over items "
        f"({cal.bootstrap} resamples, seed {cal.seed}); n/a: undefined (n < 3 or a constant column)",
        "",
        _table(
            ["group", "human score", "metric", "n", f"Spearman [{percent} CI]", f"Kendall [{percent} CI]"],
            [
                [
                    c.group,
                    c.criterion,
                    c.metric,
                    str(c.n),
                    _with_interval(c.spearman, c.spearman_low, c.spearman_high),
                    _with_interval(c.kendall, c.kendall_low, c.kendall_high),
                ]
                for c in cal.correlations
            ],
        ),
    ]
    if cal.levels:
        lines += [
            "",
            "Judge level against the mean human score (1-5); copies: share of items flagged as copying the output",
            "",
            _table(
                ["group", "judge level", "n", *HUMAN_SCORES, "copies"],
                [
                    [
                        row["group"],
                        str(row["level"]),
                        str(row["n"]),
                        *(_number(row[h]) for h in HUMAN_SCORES),
                        f"{row['copies_output']:.0%}",
                    ]
                    for row in cal.levels
                ],
            ),
        ]
    return "\n".join(lines) + "\n"


def to_frames(cal: Calibration) -> tuple[pandas.DataFrame, pandas.DataFrame]:
    """(correlations, judge levels) as DataFrames, one row per ``Correlation`` and per level row."""
    import pandas

    names = [f.name for f in dataclasses.fields(Correlation)]
    correlations = pandas.DataFrame([dataclasses.asdict(c) for c in cal.correlations], columns=names)
    levels = pandas.DataFrame(cal.levels, columns=list(LEVEL_COLUMNS))
    return correlations, levels
