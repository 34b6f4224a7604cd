"""The CPU-stall probe's arithmetic (bench/cpu_stalls.py): slow windows are found and measured."""

import pytest

from bench.cpu_stalls import stall_stats


def test_steady_series_has_no_slow_windows() -> None:
    stats = stall_stats([[100] * 50, [98, 102] * 25], 5.0)
    assert stats.slow_fraction == 0 and stats.all_slow_fraction == 0
    assert stats.longest_slow_ms == 0 and stats.slowest_speed == pytest.approx(98 / 102, abs=1e-3)


def test_slow_runs_are_counted_per_cpu_and_together() -> None:
    cpu0 = [100] * 20 + [10] * 6 + [100] * 14  # 6 windows at 10% speed
    cpu1 = [100] * 22 + [10] * 2 + [100] * 14 + [40, 100]  # 2 of them overlap cpu0's; 1 alone
    stats = stall_stats([cpu0, cpu1], 5.0)
    assert stats.windows == 40
    assert stats.slow_fraction == pytest.approx((6 + 3) / 80)
    assert stats.all_slow_fraction == pytest.approx(2 / 40)
    assert stats.longest_slow_ms == 30.0  # cpu0's 6 consecutive windows
    assert stats.slowest_speed == pytest.approx(0.1)


def test_bad_series_are_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        stall_stats([[1, 2], [1]], 5.0)
    with pytest.raises(ValueError, match="non-empty"):
        stall_stats([], 5.0)
