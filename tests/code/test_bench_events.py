"""`towerflow bench events` arithmetic (bench/events.py): histogram quantiles, deltas, targets."""

import math

import pytest

from bench.events import bucket_quantile, per_thousand, stats_delta, targets

INF = math.inf


def test_quantile_interpolates_inside_its_bucket_as_prometheus_does() -> None:
    buckets = [(0.1, 10.0), (0.25, 60.0), (0.5, 90.0), (1.0, 100.0), (INF, 100.0)]
    assert bucket_quantile(buckets, 0.1) == pytest.approx(0.1)
    assert bucket_quantile(buckets, 0.5) == pytest.approx(0.1 + 0.15 * 40 / 50)
    assert bucket_quantile(buckets, 0.95) == pytest.approx(0.5 + 0.5 * 5 / 10)


def test_quantile_in_the_open_bucket_is_the_last_bound_and_empty_is_nan() -> None:
    assert bucket_quantile([(0.5, 1.0), (INF, 10.0)], 0.99) == 0.5
    assert math.isnan(bucket_quantile([(0.5, 0.0), (INF, 0.0)], 0.5))
    assert math.isnan(bucket_quantile([], 0.5))


def test_delta_counts_only_what_happened_between_readings() -> None:
    before = {
        "events": {"landed": 100.0},
        "buckets": [(0.5, 100.0), (INF, 100.0)],
        "lag_count": 100.0,
        "lag_sum": 10.0,
        "stages": {"lake": {"seconds": 1.0, "batches": 10.0}},
    }
    after = {
        "events": {"landed": 300.0},
        "buckets": [(0.5, 150.0), (INF, 300.0)],
        "lag_count": 300.0,
        "lag_sum": 110.0,
        "stages": {"lake": {"seconds": 3.0, "batches": 20.0}, "online": {"seconds": 0.5, "batches": 5.0}},
    }
    delta = stats_delta(before, after)
    assert delta["landed"] == 200 and delta["observed"] == 200
    assert delta["mean_ms"] == 500.0
    assert delta["p50_ms"] == 500.0  # 50 of 200 under 0.5 s: the median is in the open bucket
    assert delta["stages"] == {"lake": {"batches": 10, "mean_ms": 200.0}, "online": {"batches": 5, "mean_ms": 100.0}}


def test_targets_pass_and_fail_and_nan_fails() -> None:
    assert all(targets(5_000, 499, 999).values())
    assert not any(targets(4_999, 500, 1_000).values())
    assert not any(targets(math.nan, math.nan, math.nan).values())
    assert per_thousand(2.0, 4_000) == 0.5 and math.isnan(per_thousand(1.0, 0))
