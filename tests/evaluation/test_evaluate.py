import pytest

from restpg.evaluation.evaluate import paired_bootstrap, summarize


def test_paired_bootstrap():
    better = [0.5, 0.6, 0.7, 0.55, 0.65] * 4
    base = [0.4, 0.5, 0.6, 0.45, 0.55] * 4
    diff, low, high, p = paired_bootstrap(better, base)
    assert diff == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1) and p == 0.0
    diff, low, high, p = paired_bootstrap(base, better)
    assert diff < 0 and high < 0 and p == 0.0  # two-sided: far from 0 either way
    noisy_diff, low, high, p = paired_bootstrap([0.1, 0.9, 0.2, 0.8], [0.5, 0.5, 0.5, 0.5])
    assert low < 0 < high and 0 < p < 1
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [])


def test_summarize_means_each_score():
    rows = [
        {"judge": 0.1, "rouge1": 0.2, "rougeL": 0.3, "meteor": 0.4},
        {"judge": 0.3, "rouge1": 0.4, "rougeL": 0.5, "meteor": 0.6},
    ]
    assert summarize(rows) == pytest.approx({"judge": 0.2, "rouge1": 0.3, "rougeL": 0.4, "meteor": 0.5})
    assert summarize([{"rougeL": 1.0, "meteor": 0.0, "rouge1": 0.5}]) == {"rouge1": 0.5, "rougeL": 1.0, "meteor": 0.0}


def test_the_interval_excludes_zero_exactly_when_the_two_sided_p_is_below_005():
    import random

    rng = random.Random(1)
    seen = set()
    for trial in range(300):
        n = rng.randrange(3, 30)
        shift = rng.uniform(-0.15, 0.15)
        method = [rng.gauss(0.2 + shift, 0.2) for _ in range(n)]
        base = [rng.gauss(0.2, 0.2) for _ in range(n)]
        diff, low, high, p = paired_bootstrap(method, base, samples=2000, seed=trial)
        assert (p < 0.05) == (low > 0 or high < 0), (trial, low, high, p)
        assert low <= diff <= high or p < 0.05
        seen.add(p < 0.05)
    assert seen == {True, False}  # both cases were met


def test_the_paired_difference_by_task_is_the_mean_of_the_task_means():
    method = [0.5, 0.5, 0.5, 0.9]
    base = [0.4, 0.4, 0.4, 0.1]
    tasks = ["a", "a", "a", "b"]
    diff, low, high, p = paired_bootstrap(method, base, tasks)
    assert diff == pytest.approx((0.1 + 0.8) / 2)  # not the pooled (0.1 * 3 + 0.8) / 4
    assert low == pytest.approx(diff) and high == pytest.approx(diff) and p == 0.0  # no spread within a task
    with pytest.raises(ValueError, match="one group name per record"):
        paired_bootstrap(method, base, ["a"])
