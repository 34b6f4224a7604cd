"""How the ETL groups days: Spark passes of feature days, suite runs of the feature gate, and the
volume baseline read from the Delta log (jobs/etl.py)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa

from jobs.etl import feature_passes, partition_rows, split_by_rows, trailing_rows
from towerflow.lake import Lake

DAYS = [date(2025, 1, 1) + timedelta(days=n) for n in range(10)]


def test_runs_of_days_hold_at_most_the_rows_and_at_least_a_day() -> None:
    rows = dict.fromkeys(DAYS, 100) | {DAYS[4]: 1_000}
    runs = split_by_rows(DAYS, rows, 300)
    assert [len(run) for run in runs] == [3, 1, 1, 3, 2]  # the 1,000-row day alone
    assert [day for run in runs for day in run] == DAYS
    assert split_by_rows(DAYS, {}, 300) == [DAYS]  # days without rows cost nothing


def test_a_feature_pass_is_bounded_by_catalog_rows() -> None:
    assert feature_passes(DAYS, items=4_053, max_rows=2_000_000) == [DAYS]
    assert [len(p) for p in feature_passes(DAYS, items=50_000, max_rows=200_000)] == [4, 4, 2]


def test_row_counts_per_day_come_from_the_log(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    uri = lake.uri("gold", "t")
    assert partition_rows(lake, uri, "feature_date") == {}
    days = [DAYS[0]] * 3 + [DAYS[1]] * 5 + [DAYS[3]] * 2
    table = pa.table({"feature_date": pa.array(days, pa.date32()), "x": pa.array(range(len(days)))})
    lake.write(uri, table, partition_by=["feature_date"])
    lake.write(uri, table.slice(0, 3), partition_by=["feature_date"], mode="append")
    assert partition_rows(lake, uri, "feature_date") == {DAYS[0]: 6, DAYS[1]: 5, DAYS[3]: 2}
    assert trailing_rows(lake, uri, "feature_date", DAYS[3]) == [6, 5]
    assert trailing_rows(lake, uri, "feature_date", DAYS[3], days=1) == [5]
