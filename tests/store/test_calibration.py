import json
import warnings

import numpy as np
import pytest
from scipy.stats import kendalltau

from restpg.errors import RestpgError
from restpg.store.calibration import (
    ALL,
    HUMAN_SCORES,
    LEVEL_COLUMNS,
    CalibrationError,
    Correlation,
    _resampled_kendall,
    calibration,
    format_calibration,
    rank_correlation,
    to_frames,
)
from restpg.store.database import Store
from restpg.store.ratings import Rating, RatingStore


def add_generations(store, rows):
    """Rows straight into the generations table, ``scores`` given as a dict."""
    base = {"record_id": "r", "task": "product_review", "dataset": "sample", "model_version": "m1", "reasoning": "why"}
    store.db["generations"].insert_all(
        [{**base, **row, "scores": json.dumps(row.get("scores", {}))} for row in rows], pk="generation_id", alter=True
    )


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "restpg.db")


@pytest.fixture
def ratings(store):
    return RatingStore(store)


def rate(ratings, generation_id, annotator, scores, copies=False, version="m1"):
    ratings.save(Rating(generation_id, annotator, *scores, copies_output=copies), version, "why", "what")


def find(cal, group, criterion, metric):
    [row] = [c for c in cal.correlations if (c.group, c.criterion, c.metric) == (group, criterion, metric)]
    return row


LEVELS = (0.1, 0.3, 0.5, 0.7, 1.0)


def monotone(store, ratings, version="m1", reverse=False, prefix="g"):
    """Five items whose human scores rise (or fall) with the judge level."""
    add_generations(
        store,
        [
            {"generation_id": f"{prefix}{i}", "model_version": version, "scores": {"judge": j, "rougeL": 0.1 * i}}
            for i, j in enumerate(LEVELS)
        ],
    )
    for i in range(5):
        score = 5 - i if reverse else i + 1
        rate(ratings, f"{prefix}{i}", "ann", (score, score, score), version=version)


def test_monotone_human_vs_judge_is_one_and_reversed_is_minus_one(store, ratings):
    monotone(store, ratings, "up")
    monotone(store, ratings, "down", reverse=True, prefix="h")
    cal = calibration(store, bootstrap=200)
    assert cal.groups == ["down", "up"] and cal.items == 10 and cal.skipped == 0
    for name in HUMAN_SCORES:
        for metric in ("judge", "rougeL"):
            up, down = find(cal, "up", name, metric), find(cal, "down", name, metric)
            assert (up.spearman, up.kendall, up.n) == (1.0, 1.0, 5)
            assert (down.spearman, down.kendall) == (-1.0, -1.0)
            for row in (up, down):
                for value, low, high in [
                    (row.spearman, row.spearman_low, row.spearman_high),
                    (row.kendall, row.kendall_low, row.kendall_high),
                ]:
                    assert -1 <= low <= value <= high <= 1
    mixed = find(cal, ALL, "mean", "judge")
    assert mixed.n == 10 and abs(mixed.spearman) < 0.5


def test_rank_correlation_matches_scipy_and_is_reproducible():
    rng = np.random.default_rng(1)
    x = rng.integers(1, 6, size=40).astype(float)
    y = np.round(x / 5 + rng.normal(0, 0.3, size=40), 1)
    first = rank_correlation(x, y, bootstrap=300, seed=7)
    assert first == rank_correlation(x, y, bootstrap=300, seed=7)
    assert first != rank_correlation(x, y, bootstrap=300, seed=8)
    assert first.kendall == pytest.approx(kendalltau(x, y).statistic)
    for value, (low, high) in [(first.spearman, first.spearman_ci), (first.kendall, first.kendall_ci)]:
        assert -1 <= low < value < high <= 1
    spearman, spearman_ci, kendall, kendall_ci = rank_correlation(x, y, bootstrap=0)
    assert spearman == first.spearman and spearman_ci is None and kendall_ci is None


def test_vectorized_bootstrap_kendall_is_scipys_tau_b_on_each_resample():
    rng = np.random.default_rng(2)
    x = rng.integers(1, 4, size=12).astype(float)
    y = rng.integers(1, 6, size=12).astype(float)
    indices = rng.integers(0, 12, size=(50, 12))
    tau, valid = _resampled_kendall(x, y, indices)
    for row, t, ok in zip(indices, tau, valid):
        xs, ys = x[row], y[row]
        defined = len(set(xs)) > 1 and len(set(ys)) > 1
        assert ok == defined
        if defined:
            assert t == pytest.approx(kendalltau(xs, ys).statistic)


@pytest.mark.parametrize(
    "human, metric",
    [([3, 3, 3, 3], [0.1, 0.3, 0.5, 0.7]), ([1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5]), ([1, 2], [0.1, 0.3]), ([], [])],
)
def test_undefined_correlation_is_none_without_warnings(human, metric):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rank_correlation(human, metric, bootstrap=100) == (None, None, None, None)


def test_mostly_constant_resamples_give_no_interval():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # defined only when both odd items are drawn: about 41% of resamples
        result = rank_correlation([5] + [1] * 9, [0.1] * 9 + [1.0], bootstrap=200)
        assert result.spearman is not None and result.spearman_ci is None and result.kendall_ci is None
        odd_one = rank_correlation([5] + [1] * 9, [1.0] + [0.1] * 9, bootstrap=200)  # about 65%: interval kept
    assert odd_one.spearman == 1.0 and odd_one.spearman_ci == (1.0, 1.0) == odd_one.kendall_ci


def test_bad_inputs_are_calibration_errors():
    with pytest.raises(CalibrationError, match="same length"):
        rank_correlation([1, 2, 3], [0.1, 0.2])
    with pytest.raises(CalibrationError, match="finite"):
        rank_correlation([1, 2, float("nan")], [0.1, 0.2, 0.3])
    assert issubclass(CalibrationError, RestpgError) and issubclass(CalibrationError, ValueError)


def test_constant_group_in_the_store_is_none_and_silent(store, ratings):
    add_generations(store, [{"generation_id": f"g{i}", "scores": {"judge": 0.5, "rougeL": 0.1 * i}} for i in range(4)])
    for i in range(4):
        rate(ratings, f"g{i}", "ann", (i + 1, 3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cal = calibration(store, bootstrap=100)
    judge = find(cal, "m1", "faithfulness", "judge")
    assert judge.n == 4 and judge.spearman is None and judge.kendall_high is None
    assert find(cal, "m1", "relevance", "rougeL").spearman is None  # human column constant
    assert find(cal, "m1", "faithfulness", "rougeL").spearman == 1.0
    assert "n/a" in format_calibration(cal)


def test_items_not_ratings_and_annotators_are_averaged(store, ratings):
    add_generations(store, [{"generation_id": f"g{i}", "scores": {"judge": j}} for i, j in enumerate(LEVELS[:4])])
    for i in range(4):
        rate(ratings, f"g{i}", "a", (i + 1, i + 1, i + 1))
    rate(ratings, "g0", "b", (5, 5, 5), copies=True)  # g0 then averages 3: ties g2
    cal = calibration(store, bootstrap=50)
    row = find(cal, "m1", "faithfulness", "judge")
    assert (cal.items, cal.ratings, row.n) == (4, 5, 4)
    assert row.spearman == pytest.approx(0.6324555320336759)  # scipy on [3, 2, 3, 4] vs levels
    level = [r for r in cal.levels if r["group"] == "m1" and r["level"] == 1]
    assert level == [
        {"group": "m1", "level": 1, "judge": 0.1, "n": 1, **dict.fromkeys(HUMAN_SCORES, 3.0), "copies_output": 0.5}
    ]
    only_a = calibration(store, annotator="a", bootstrap=50)
    assert (only_a.ratings, find(only_a, "m1", "faithfulness", "judge").spearman) == (4, 1.0)
    with pytest.raises(CalibrationError, match="'nobody'.*annotators: a, b"):
        calibration(store, annotator="nobody")


def test_missing_judge_counts_for_rouge_only_and_level_table_means(store, ratings):
    add_generations(
        store,
        [
            {"generation_id": "g1", "scores": {"judge": 1.0, "rougeL": 0.4}},
            {"generation_id": "g2", "scores": {"judge": 1.0, "rougeL": 0.3}},
            {"generation_id": "g3", "scores": {"judge": 0.3, "rougeL": 0.2}},
            {"generation_id": "g4", "scores": {"rougeL": 0.1}},  # no judge score
            {"generation_id": "g5", "scores": {"reward": 0.2, "judge": "bad"}},  # neither, usable
        ],
    )
    rate(ratings, "g1", "a", (5, 4, 3), copies=True)
    rate(ratings, "g2", "a", (3, 2, 1))
    rate(ratings, "g3", "a", (1, 1, 4))
    rate(ratings, "g4", "a", (2, 2, 2))
    rate(ratings, "g5", "a", (2, 2, 2))
    cal = calibration(store, bootstrap=50)
    assert cal.items == 5
    assert find(cal, "m1", "mean", "judge").n == 3 and find(cal, "m1", "mean", "rougeL").n == 4
    top = [r for r in cal.levels if (r["group"], r["level"]) == ("m1", 10)][0]
    assert top["n"] == 2 and top["judge"] == 1.0 and top["copies_output"] == 0.5
    assert (top["faithfulness"], top["relevance"], top["usefulness"], top["mean"]) == (4.0, 3.0, 2.0, 3.0)
    low = [r for r in cal.levels if (r["group"], r["level"]) == ("m1", 3)][0]
    assert low["n"] == 1 and low["mean"] == pytest.approx(2.0)
    assert [r["level"] for r in cal.levels if r["group"] == ALL] == [3, 10]


def test_ratings_of_deleted_generations_are_skipped_and_counted(store, ratings):
    monotone(store, ratings)
    rate(ratings, "gone-1", "ann", (1, 1, 1), version="deleted")
    rate(ratings, "gone-1", "bob", (2, 1, 1), version="deleted")
    cal = calibration(store, bootstrap=50)
    assert (cal.skipped, cal.items, cal.ratings, cal.groups) == (2, 5, 5, ["m1"])
    assert "Skipped: 2 ratings whose generation is no longer stored" in format_calibration(cal)
    store.db["generations"].drop()
    empty = calibration(store)
    assert (empty.skipped, empty.items, empty.correlations, empty.levels) == (7, 0, [], [])
    assert "Skipped: 7 ratings" in format_calibration(empty)


def test_no_ratings_unknown_group_and_unknown_column(store, ratings, tmp_path):
    with pytest.raises(CalibrationError, match="nothing to calibrate.*Rate tab.*python -m restpg ratings"):
        calibration(Store(tmp_path / "fresh.db"))
    with pytest.raises(CalibrationError, match="nothing to calibrate"):
        calibration(store)
    monotone(store, ratings, "v1")
    monotone(store, ratings, "v2", prefix="h")
    with pytest.raises(CalibrationError, match="'v9'.*groups with ratings: v1, v2"):
        calibration(store, groups=["v1", "v9"])
    with pytest.raises(CalibrationError, match="'nope' is not a column"):
        calibration(store, group_by="nope")


def test_groups_filter_group_by_task_and_seeded_bootstrap(store, ratings):
    monotone(store, ratings, "v1")
    monotone(store, ratings, "v2", prefix="h", reverse=True)
    only = calibration(store, groups=["v2"], bootstrap=100, seed=3)
    assert only.groups == ["v2"] and {c.group for c in only.correlations} == {ALL, "v2"}
    assert find(only, ALL, "mean", "judge").spearman == -1.0
    assert only == calibration(store, groups=["v2"], bootstrap=100, seed=3)
    by_task = calibration(store, group_by="task", bootstrap=20)
    assert by_task.groups == ["product_review"] and find(by_task, "product_review", "mean", "judge").n == 10


def test_format_and_frames(store, ratings):
    monotone(store, ratings, "sft-round-1")
    monotone(store, ratings, "e-step-samples", prefix="s")
    cal = calibration(store, bootstrap=100)
    text = format_calibration(cal)
    for expected in ["sft-round-1", "e-step-samples", "| all ", "Spearman [95% CI]", "1.000 [1.000, 1.000]", "| 10 "]:
        assert expected in text
    assert "| 5 " in text and "Skipped: 0 ratings" in text and "judge level" in text
    correlations, levels = to_frames(cal)
    assert list(correlations.columns) == [
        "group", "criterion", "metric", "n", "spearman", "spearman_low", "spearman_high", "kendall", "kendall_low",
        "kendall_high",
    ]  # fmt: skip
    assert len(correlations) == 3 * len(HUMAN_SCORES) * 2 and list(levels.columns) == list(LEVEL_COLUMNS)
    assert len(levels) == 3 * 5 and isinstance(cal.correlations[0], Correlation)
