"""The population stability index: identical samples, a hand-computed shift, empty bins, missing
values and categories (monitoring/drift.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitoring.drift import (
    EPSILON,
    Thresholds,
    compare_categories,
    compare_numeric,
    numeric_shares,
    psi,
    psi_of_shares,
    quantile_edges,
    reference_window,
    training_end,
)


def test_identical_samples_have_no_drift() -> None:
    values = np.random.default_rng(1).normal(size=5_000)
    assert psi(values, values) == 0.0
    assert psi_of_shares([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert compare_categories(["a", "b", None], ["a", "b", None]).psi == 0.0


def test_a_known_shift_has_the_hand_computed_value() -> None:
    # Half and half, then a quarter and three quarters:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.17329 + 0.10137
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi_of_shares([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert expected == pytest.approx(0.27465, abs=1e-5)
    # The same through the binning: a two-valued feature has a bin per value.
    reference = np.repeat([0.0, 1.0], 50)
    current = np.repeat([0.0, 1.0], [25, 75])
    assert psi(reference, current) == pytest.approx(expected)
    # Deciles of a continuous feature: a shift of one standard deviation is an alert.
    rng = np.random.default_rng(3)
    assert psi(rng.normal(size=20_000), rng.normal(1.0, 1.0, size=20_000)) > 0.25


def test_an_empty_bin_counts_as_epsilon_not_infinity() -> None:
    # The third bin is empty in the reference: (0.1 - eps) ln(0.1 / eps), finite.
    value = psi_of_shares([0.5, 0.5, 0.0], [0.5, 0.4, 0.1])
    hand = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - EPSILON) * math.log(0.1 / EPSILON)
    assert value == pytest.approx(hand)
    assert math.isfinite(value)
    # A day entirely above the reference's range lands in its last bin.
    assert math.isfinite(psi(np.arange(100.0), np.full(50, 1e6)))


def test_repeated_values_merge_bins_and_missing_values_have_their_own() -> None:
    reference = np.array([0.0] * 90 + [1.0] * 5 + [3.0] * 5)
    edges = quantile_edges(reference)
    assert edges.tolist() == [0.0, 1.0, 3.0]  # few distinct values: one bin each
    shares = numeric_shares(np.array([0.0, 0.0, np.nan, 5.0]), edges)
    assert shares.sum() == pytest.approx(1.0)
    assert shares[-1] == pytest.approx(0.25)  # the missing bin
    # A column that starts arriving empty drifts.
    c = compare_numeric(reference, np.full(100, np.nan))
    assert c.bins[-1] == "missing" and c.psi is not None and c.psi > 0.25


def test_a_side_without_rows_has_no_psi() -> None:
    assert compare_numeric(np.arange(10.0), np.array([])).psi is None
    assert compare_categories([], ["a"]).psi is None
    with pytest.raises(ValueError, match="empty"):
        psi(np.array([]), np.arange(3.0))


def test_categories_are_bins() -> None:
    c = compare_categories(["a"] * 50 + ["b"] * 50, ["a"] * 25 + ["b"] * 75)
    assert c.bins == ("a", "b") or c.bins == ("b", "a")
    assert c.psi == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))


def test_thresholds_give_levels() -> None:
    t = Thresholds(warn=0.1, alert=0.25)
    assert [t.level(v) for v in (0.0, 0.1, 0.2, 0.25, 3.0, None)] == ["ok", "warn", "warn", "alert", "alert", "unknown"]
    with pytest.raises(ValueError, match="warn <= alert"):
        Thresholds(warn=0.3, alert=0.2)


def test_the_reference_is_the_models_last_training_days() -> None:
    from datetime import date

    assert training_end({"cutoff": "2025-03-05T00:00:00+00:00"}) == date(2025, 3, 5)
    refit = {"cutoff": "2025-03-05T00:00:00+00:00", "refit": {"trained_before": "2025-03-12T00:00:00+00:00"}}
    assert training_end(refit) == date(2025, 3, 12)
    assert training_end({}) is None
    window = reference_window(date(2025, 3, 20), 7, date(2025, 3, 12), "4")
    assert (window.first, window.last, window.days) == (date(2025, 3, 5), date(2025, 3, 11), 7)
    # Trained through the monitored day (a refit published the day after): never the day itself.
    window = reference_window(date(2025, 3, 11), 7, date(2025, 3, 12), "4")
    assert window.last == date(2025, 3, 10)
    window = reference_window(date(2025, 3, 20), 3)
    assert (window.first, window.last) == (date(2025, 3, 17), date(2025, 3, 19))
