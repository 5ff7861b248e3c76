import pytest

from restpg.evaluate import paired_bootstrap, summarize


def test_paired_bootstrap():
    better = [0.5, 0.6, 0.7, 0.55, 0.65] * 4
    base = [0.4, 0.5, 0.6, 0.45, 0.55] * 4
    diff, low, high, p = paired_bootstrap(better, base)
    assert diff == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1) and p == 0.0
    diff, low, high, p = paired_bootstrap(base, better)
    assert diff < 0 and p == 1.0
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
