"""The quality suites in jobs/expectations and the gate's failure report (pandas, no Spark)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from jobs import quality
from towerflow import schemas as S

CONTRACTS = {
    "bronze_events": [*S.BRONZE_EVENTS.names, "unknown_item_id"],
    "silver_interactions": [*S.SILVER_INTERACTIONS.names, "unknown_item_id"],
    "gold_user_features": [*S.GOLD_USER_FEATURES.names, "as_of"],
    "gold_item_features": [*S.GOLD_ITEM_FEATURES.names, "as_of"],
}


@pytest.mark.parametrize("name", quality.SUITES)
def test_suites_check_the_table_contract(name: str) -> None:
    suite = quality.load_suite(name)
    columns = [e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_ordered_list"]
    assert columns and columns[0]["kwargs"]["column_list"] == CONTRACTS[name]
    assert any(e["type"] == "expect_table_row_count_to_be_between" for e in suite["expectations"])


def test_row_count_bounds() -> None:
    assert quality.row_count_bounds(None, 10) == {"min_rows": 1, "max_rows": None}
    assert quality.row_count_bounds(1000, 10) == {"min_rows": 100, "max_rows": 10000}


def bronze_frame(n: int) -> pd.DataFrame:
    start, _ = quality.day_bounds(date(2025, 1, 3))
    frame = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": [f"u{i % 7}" for i in range(n)],
            "item_id": ["i1"] * n,
            "action": ["view"] * n,
            "timestamp": [start + pd.Timedelta(minutes=i) for i in range(n)],
            "quantity": [0] * n,
            "price": [1.0] * n,
            "invoice_no": [None] * n,
            "country": [None] * n,
            "source": ["t"] * n,
            "import_batch": ["b"] * n,
            "source_row": list(range(n)),
            "request_id": [None] * n,
            "event_date": [date(2025, 1, 3)] * n,
        }
    )
    return quality.with_unknown_items(frame, {"i1"})


def params(n: int) -> dict:
    start, end = quality.day_bounds(date(2025, 1, 3))
    return {"interval_start": start, "interval_end": end} | quality.row_count_bounds(n, 10)


def test_a_clean_day_passes_and_a_broken_one_names_what_failed(tmp_path) -> None:
    gates = quality.Gates(tmp_path / "docs", docs="failures")
    good = bronze_frame(100)
    assert gates.check("bronze_events", good, "2025-01-03", params(100)).success
    bad = good.copy()
    bad.loc[:4, "user_id"] = None
    bad.loc[5:9, "action"] = "hover"
    bad.loc[10, "timestamp"] = bad.loc[10, "timestamp"] + pd.Timedelta(days=1)
    with pytest.raises(quality.QualityGateError) as caught:
        gates.check("bronze_events", bad, "2025-01-03", params(100))
    failed = {(f.expectation, f.column) for f in caught.value.failures}
    assert failed == {
        ("expect_column_values_to_not_be_null", "user_id"),
        ("expect_column_values_to_be_in_set", "action"),
        ("expect_column_values_to_be_between", "timestamp"),
    }
    message = str(caught.value)
    assert "'hover'" in message and "5 of 100 rows" in message
    assert caught.value.report is not None and caught.value.report.exists()
    assert caught.value.report.suffix == ".html"


def test_a_passed_gate_writes_its_data_docs_and_logs_where(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    gates = quality.Gates(tmp_path / "docs", docs="all")
    with caplog.at_level("INFO", logger="jobs.quality"):
        gate = gates.check("bronze_events", bronze_frame(100), "2025-01-03", params(100))
    assert gate.success and gate.report is not None and gate.report.suffix == ".html"
    assert gate.report.is_relative_to(tmp_path / "docs" / "validations") and gate.report.exists()
    index = tmp_path / "docs" / "index.html"
    assert index.exists() and "bronze_events" in index.read_text()
    assert f"Data Docs: {gate.report}" in caplog.text


def test_data_docs_keep_the_pages_of_earlier_processes(tmp_path) -> None:
    # Each Airflow task builds its own Gates (a new GX context): a later task's gate must not
    # remove an earlier task's pages, and the index lists them all.
    first = quality.Gates(tmp_path / "docs", docs="all").check(
        "bronze_events", bronze_frame(100), "2025-01-03", params(100)
    )
    second = quality.Gates(tmp_path / "docs", docs="all").check(
        "bronze_events", bronze_frame(90), "2025-01-04", params(90)
    )
    assert first.report is not None and first.report.exists()
    assert second.report is not None and second.report.exists()
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "bronze_events-2025-01-03" in index and "bronze_events-2025-01-04" in index
    assert (tmp_path / "docs" / "expectations" / "bronze_events.html").exists()


def test_guest_lines_of_invoices_may_lack_a_user(tmp_path) -> None:
    frame = bronze_frame(50)
    frame.loc[:9, "user_id"] = None
    frame.loc[:9, "invoice_no"] = "536365"
    assert quality.Gates(None).check("bronze_events", frame, "2025-01-03", params(50)).success


def test_large_slices_are_sampled_with_scaled_row_bounds() -> None:
    import pyarrow as pa

    table = pa.table({"x": list(range(1000))})
    sample, fraction = quality.sample_rows(table, 100)
    assert len(sample) == 100 and fraction == 0.1
    assert sample.column("x").to_pylist() == sorted(sample.column("x").to_pylist())
    assert quality.sample_rows(table, 100)[0].equals(sample)  # seeded: same rows each run
    bounds = quality.scale_row_bounds({"min_rows": 100, "max_rows": 10_000}, 0.1)
    assert bounds == {"min_rows": 10, "max_rows": 1000}


def test_the_volume_baseline_is_the_median_of_recent_days_with_a_floor_for_small_counts() -> None:
    # One replayed day in the history does not move the baseline.
    assert quality.row_count_bounds([1000, 1000, 50_000, 1000], 10) == {"min_rows": 100, "max_rows": 10_000}
    # Only the last BASELINE_DAYS days count.
    history = [1_000_000] * 20 + [1000] * quality.BASELINE_DAYS
    assert quality.row_count_bounds(history, 10) == {"min_rows": 100, "max_rows": 10_000}
    # A small shop: within MIN_ROW_CHANGE rows of the baseline (35) is no alarm, whatever the ratio.
    assert quality.row_count_bounds([40, 35, 28], 10) == {"min_rows": 1, "max_rows": 350}
    assert quality.row_count_bounds([0, 0], 10) == {"min_rows": 1, "max_rows": None}


def sparse_params(history: list[int] | int) -> dict:
    start, end = quality.day_bounds(date(2025, 1, 3))
    return {"interval_start": start, "interval_end": end} | quality.row_count_bounds(history, 10)


def test_a_quiet_day_of_a_small_shop_passes_and_its_corrupt_days_do_not() -> None:
    gates = quality.Gates(None)
    assert gates.check("bronze_events", bronze_frame(3), "2025-01-03", sparse_params(40)).success
    history = [38, 41, 2, 40]  # the days before, with a quiet one among them
    assert gates.check("bronze_events", bronze_frame(3), "2025-01-03", sparse_params(history)).success
    assert gates.check("bronze_events", bronze_frame(60), "2025-01-03", sparse_params(history)).success

    replayed = pd.concat([bronze_frame(30)] * 100, ignore_index=True)  # one file landed 100 times
    with pytest.raises(quality.QualityGateError) as caught:
        gates.check("bronze_events", replayed, "2025-01-03", sparse_params(history))
    assert {(f.expectation, f.column) for f in caught.value.failures} == {
        ("expect_table_row_count_to_be_between", None)
    }

    bad = bronze_frame(20)
    bad.loc[0, "action"] = "hover"  # 5% unknown actions
    bad.loc[1, "event_id"] = None
    with pytest.raises(quality.QualityGateError) as caught:
        gates.check("bronze_events", bad, "2025-01-03", sparse_params(history))
    assert {(f.expectation, f.column) for f in caught.value.failures} == {
        ("expect_column_values_to_be_in_set", "action"),
        ("expect_column_values_to_not_be_null", "event_id"),
    }


def _bronze_day(day: date, n: int):
    """`n` clean bronze rows of `day` as an Arrow table (without the derived column)."""
    import pyarrow as pa

    frame = bronze_frame(n).drop(columns="unknown_item_id")
    seconds = pd.to_timedelta(range(n), unit="s")  # all inside the day
    frame = frame.assign(
        timestamp=pd.Timestamp(day, tz="UTC") + seconds, event_date=day, event_id=[f"{day}-{i}" for i in range(n)]
    )
    return S.as_schema(pa.Table.from_pandas(frame, preserve_index=False), S.BRONZE_EVENTS)


def _interval(first: date, last: date) -> dict:
    return {"interval_start": quality.day_bounds(first)[0], "interval_end": quality.day_bounds(last)[1]}


DAYS = [date(2025, 1, d) for d in (3, 4, 5, 6)]


def test_a_range_of_days_is_validated_in_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    gates = quality.Gates(None)
    runs = []
    validate = gates.validate
    monkeypatch.setattr(gates, "validate", lambda *a, **k: runs.append(a[2]) or validate(*a, **k))
    history = [100, 100]
    results = gates.check_days("bronze_events", {d: _bronze_day(d, 100) for d in DAYS}, _interval, history, 10, {"i1"})
    assert sorted(results) == DAYS and all(r.success for r in results.values())
    assert runs == ["2025-01-03..2025-01-06"]
    assert history == [100, 100, 100, 100, 100, 100]  # each checked day joins the volume baseline


@pytest.mark.parametrize("broken", ["content", "volume"])
def test_a_bad_day_in_a_range_is_named_as_if_checked_alone(tmp_path, broken: str) -> None:
    gates = quality.Gates(tmp_path / "docs", docs="failures")
    by_day = {d: _bronze_day(d, 100) for d in DAYS}
    bad = DAYS[2]
    if broken == "content":
        actions = by_day[bad].column("action").to_pylist()
        actions[:5] = ["hover"] * 5
        at = by_day[bad].schema.get_field_index("action")
        by_day[bad] = by_day[bad].set_column(at, by_day[bad].schema.field(at), [actions])
        expected = {("expect_column_values_to_be_in_set", "action")}
    else:
        by_day[bad] = _bronze_day(bad, 100 * 20)  # twenty times the usual volume
        expected = {("expect_table_row_count_to_be_between", None)}
    with pytest.raises(quality.QualityGateError) as caught:
        gates.check_days("bronze_events", by_day, _interval, [100, 100], 10, {"i1"})
    assert caught.value.interval == bad.isoformat()
    assert {(f.expectation, f.column) for f in caught.value.failures} == expected
    assert caught.value.report is not None and caught.value.report.exists()
