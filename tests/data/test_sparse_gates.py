"""The gates on sparse data (jobs/synth.py `sparse` profile), run through the daily ETL on a real
local Spark session and real Delta tables: valid days pass every suite, corrupt days stop."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.data.etl_tasks import run_etl_tasks
from towerflow import schemas as S
from towerflow.lake import Lake

pytestmark = pytest.mark.spark

FIRST = date(2025, 1, 1)
#: Days of 0, 31, 0, 14, 26, 72, 2 and 3 events: empty days, and a quiet day after a busy one.
DAYS, SEED = 8, 5
LAST = FIRST + timedelta(days=DAYS - 1)


def per_day(lake: Lake, layer: str, table: str, column: str) -> dict[date, int]:
    rows = lake.read(lake.uri(layer, table), columns=[column])
    return {c["values"]: c["counts"] for c in pc.value_counts(rows.column(column)).to_pylist()}


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory: pytest.TempPathFactory, spark):
    """A sparse world landed in bronze and run through every gate of the ETL once."""
    from jobs.ingest import import_events, import_items
    from jobs.synth import SynthConfig, write_landing

    home = tmp_path_factory.mktemp("sparse_home")
    landing = write_landing(SynthConfig.of("sparse", days=DAYS, seed=SEED, start=FIRST), home / "landing")
    lake = Lake(str(home / "lake"))
    import_items(lake, landing.items_path, source="synth")
    for path in landing.day_paths:
        import_events(lake, path, source="synth", derive_items=False)
    return home, lake, run_etl_tasks(lake, FIRST, LAST, examples=False)


def test_valid_sparse_days_pass_every_gate(sparse_run) -> None:
    _, lake, result = sparse_run
    bronze = per_day(lake, "bronze", "events", "event_date")
    counts = [bronze.get(FIRST + timedelta(days=n), 0) for n in range(DAYS)]
    busy = [n for n in counts if n]
    # What the volume check has to tolerate is in the data: days without events, and a day with
    # less than a tenth of the events of the day before.
    assert 0 in counts and max(busy) <= 100
    assert any(later * 10 < earlier for earlier, later in zip(busy, busy[1:], strict=False))
    checked = {s.interval for s in result.steps if s.name == "check bronze/events" and s.detail.get("expectations")}
    assert checked == {d.isoformat() for d in bronze}
    assert per_day(lake, "silver", "interactions", "event_date") == bronze  # nothing to clean
    for table in ("user_features", "item_features"):
        assert set(per_day(lake, "gold", table, "feature_date")) >= set(bronze), table


def land_day(lake: Lake, frame: pd.DataFrame, day: date) -> None:
    """Write `frame` (one day's bronze rows) into bronze/events as `day`."""
    shift = pd.Timestamp(day, tz="UTC") - frame["timestamp"].dt.floor("D")
    frame = frame.assign(timestamp=frame["timestamp"] + shift, event_date=day)
    lake.write(
        lake.uri("bronze", "events"), S.as_schema(pa.Table.from_pandas(frame, preserve_index=False), S.BRONZE_EVENTS)
    )


@pytest.mark.parametrize("corruption", ["replayed 100 times", "unknown actions and null users"])
def test_a_corrupt_sparse_day_is_stopped(sparse_run, tmp_path: Path, corruption: str) -> None:
    from jobs.quality import QualityGateError

    home, _, _ = sparse_run
    shutil.copytree(home / "lake", tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    busiest = max(per_day(lake, "bronze", "events", "event_date").items(), key=lambda kv: kv[1])[0]
    rows = lake.read(lake.uri("bronze", "events"), filter=pc.field("event_date") == pa.scalar(busiest)).to_pandas()
    if corruption == "replayed 100 times":
        rows = pd.concat([rows] * 100, ignore_index=True)
        expected = {("expect_table_row_count_to_be_between", None)}
    else:
        n = max(1, len(rows) // 20)
        rows.loc[rows.index[:n], "action"] = "hover"
        rows.loc[rows.index[n : 2 * n], "user_id"] = None
        expected = {("expect_column_values_to_be_in_set", "action"), ("expect_column_values_to_not_be_null", "user_id")}
    day = LAST + timedelta(days=1)
    land_day(lake, rows, day)
    silver = lake.version(lake.uri("silver", "interactions"))

    with pytest.raises(QualityGateError) as caught:
        run_etl_tasks(lake, day, day)
    assert caught.value.suite == "bronze_events"
    assert expected <= {(f.expectation, f.column) for f in caught.value.failures}
    assert lake.version(lake.uri("silver", "interactions")) == silver
