"""Events that came through the stream (POST /v1/events -> worker -> bronze/events) go through
the daily ETL exactly as imported ones: past the raw gate, into silver with their request_id
(attribution), into the day's features."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.data.etl_tasks import run_etl_tasks
from towerflow.lake import Lake

pytestmark = pytest.mark.spark
FIRST, LAST = date(2025, 2, 1), date(2025, 2, 2)


def test_streamed_events_pass_the_gates_and_keep_their_request_id(tmp_path: Path, spark) -> None:
    from jobs.ingest import import_events, import_items
    from jobs.synth import SynthConfig, write_landing
    from serving.stream_worker.sink import EventSink
    from streams.events import Event

    cfg = SynthConfig(users=120, items=60, days=2, seed=9, start=FIRST, sessions_per_user_day=0.5)
    landing = write_landing(cfg, tmp_path / "landing")
    lake = Lake(str(tmp_path / "lake"))
    import_items(lake, landing.items_path, source="synth")
    for path in landing.day_paths:
        import_events(lake, path, source="synth", derive_items=False)
    users = pq.read_table(tmp_path / "landing" / "users.parquet").to_pandas()
    people = sorted(users.loc[~users["is_bot"], "user_id"])[:5]
    items = sorted(lake.read(lake.uri("bronze", "items"), ["item_id"]).column("item_id").to_pylist())[:5]
    late = datetime.combine(LAST, datetime.min.time(), tzinfo=UTC) + timedelta(hours=23, minutes=50)
    streamed = [
        Event(f"s{n}", user, item, action, late + timedelta(minutes=n), late + timedelta(minutes=n),
              request_id=f"req-{n}" if action == "click" else None)
        for n, (user, item, action) in enumerate(zip(people, items, ["click", "view", "click", "purchase", "click"], strict=True))
    ]  # fmt: skip
    sink = EventSink(lake, lake.uri("bronze", "events"), lake.uri("bronze", "impressions"))
    assert sink.write(streamed, "stream-batch-1") == 5

    run_etl_tasks(lake, FIRST, LAST)  # raises when a gate fails

    silver = lake.read(lake.uri("silver", "interactions"), filter=pc.field("source") == "stream").to_pylist()
    kept = {r["event_id"]: r for r in silver}
    assert set(kept) == {e.event_id for e in streamed}
    assert {e: r["request_id"] for e, r in kept.items()} == {
        "s0": "req-0", "s1": None, "s2": "req-2", "s3": None, "s4": "req-4"
    }  # fmt: skip
    features = lake.read(lake.uri("gold", "user_features"), filter=pc.field("feature_date") == LAST)
    recent = dict(
        zip(features.column("user_id").to_pylist(), features.column("last_10_items").to_pylist(), strict=True)
    )
    assert recent[people[0]][0] == items[0]  # the streamed click is the user's latest action of the day
