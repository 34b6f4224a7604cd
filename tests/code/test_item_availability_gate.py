"""The gold item-features gate and `available`: any mix of available and unavailable items passes
(all available included), a missing value does not."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from jobs import quality
from testsupport.feature_samples import item_feature_rows
from towerflow.schemas import WINDOWS

DAY = date(2025, 3, 1)
ITEMS = [f"i{n}" for n in range(40)]


@pytest.fixture(scope="module")
def gates() -> quality.Gates:
    return quality.Gates(None, docs="never")


def _day(unavailable: set[str] = frozenset()) -> pa.Table:
    """A day of sample item features, counters made cumulative (1d <= 7d <= 30d) as gold's are."""
    table = item_feature_rows(ITEMS, DAY, seed=3, unavailable=unavailable)
    for prefix in ("views", "clicks", "carts", "purchases"):
        names = [f"{prefix}_{w}d" for w in WINDOWS]
        counts = np.sort(np.column_stack([table.column(n).to_numpy() for n in names]), axis=1)
        for column, name in enumerate(names):
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(counts[:, column]))
    return table


def _check(gates: quality.Gates, table) -> quality.GateResult:
    params = quality.row_count_bounds(len(table), 10)
    return gates.validate("gold_item_features", quality.with_as_of(table.to_pandas()), DAY.isoformat(), params)


@pytest.mark.parametrize("unavailable", [set(), {"i3"}, set(ITEMS)], ids=["all-available", "one-gone", "none-left"])
def test_any_availability_passes(gates: quality.Gates, unavailable: set[str]) -> None:
    table = _day(unavailable)
    result = _check(gates, table)
    assert result.success, [f.describe() for f in result.failures]
    assert table.column("available").to_pylist().count(False) == len(unavailable)


def test_a_missing_availability_fails_the_gate(gates: quality.Gates) -> None:
    table = _day()
    assert _check(gates, table).success
    holes = pa.array([None if n == 5 else True for n in range(len(ITEMS))], type=pa.bool_())
    result = _check(gates, table.set_column(table.schema.get_field_index("available"), "available", holes))
    assert not result.success
    assert {(f.expectation, f.column) for f in result.failures} == {
        ("expect_column_values_to_not_be_null", "available")
    }
