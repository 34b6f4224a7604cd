"""The stream worker's parts: merging events into online rows (pure), the lake sink (real Delta
tables), and the micro-batch loop over a real local stream and a real Feast store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pytest

from serving.stream_worker.online import Stored, merge_recent, merge_trending
from serving.stream_worker.sink import EventSink
from streams.events import Event, Impression
from towerflow.lake import Lake

NOON = datetime(2026, 12, 6, 12, tzinfo=UTC)


def event(
    item: str, action: str = "click", at: datetime = NOON, user: str = "u1", event_id: str | None = None
) -> Event:
    return Event(
        event_id=event_id or f"{user}-{item}-{action}-{at.timestamp()}",
        user_id=user,
        item_id=item,
        action=action,
        timestamp=at,
        received_at=at,
    )


def test_recent_items_put_the_newest_first_once_each_and_keep_ten() -> None:
    old = [f"old{n}" for n in range(10)]
    stored = Stored(
        {"last_10_items": old, "last_10_actions": ["purchase"] * 10, "clicks_1d": 4}, NOON - timedelta(hours=1)
    )
    events = [event("a", at=NOON), event("b", at=NOON + timedelta(seconds=1)), event("old3", "view", NOON)]
    row = merge_recent(stored, events)
    assert row["last_10_items"][:3] == ["b", "old3", "a"]  # same instant: by item id, as the batch orders them
    assert len(row["last_10_items"]) == 10 and len(set(row["last_10_items"])) == 10
    assert "old9" not in row["last_10_items"] and "old8" not in row["last_10_items"]
    # Aligned index by index: the new events' actions, then the stored ones of the items kept.
    assert row["last_10_actions"] == ["click", "view", "click", *["purchase"] * 7]
    assert row["clicks_1d"] == 6 and row["views_1d"] == 1  # continued: the stored row is today's, live
    assert row["event_timestamp"] == NOON + timedelta(seconds=1)


def test_todays_counters_start_from_zero_after_a_batch_row_or_yesterday() -> None:
    midnight = datetime(2026, 12, 6, tzinfo=UTC)  # the daily batch's row for yesterday
    for stored_at in (midnight, midnight - timedelta(hours=3)):
        stored = Stored({"last_10_items": ["x"], "last_10_actions": ["view"], "purchases_1d": 7}, stored_at)
        row = merge_recent(stored, [event("a", "purchase")])
        assert row["purchases_1d"] == 1 and row["last_10_items"] == ["a", "x"]
        assert row["last_10_actions"] == ["purchase", "view"]


def test_the_latest_action_on_an_item_is_the_one_kept() -> None:
    stored = Stored({"last_10_items": ["a", "x"], "last_10_actions": ["view", "click"]}, NOON - timedelta(hours=1))
    later = NOON + timedelta(seconds=1)
    events = [event("x", "add_to_cart", NOON), event("x", "purchase", later), event("a", "click", NOON)]
    row = merge_recent(stored, events)
    assert row["last_10_items"] == ["x", "a"] and row["last_10_actions"] == ["purchase", "click"]


def test_a_stored_row_without_actions_keeps_its_items_with_unknown_actions() -> None:
    row = merge_recent(Stored({"last_10_items": ["x", "y"]}, NOON - timedelta(hours=1)), [event("a", "view")])
    assert row["last_10_items"] == ["a", "x", "y"] and row["last_10_actions"] == ["view", "", ""]


def test_a_cancellation_counts_nothing_and_is_not_a_recent_item() -> None:
    row = merge_recent(Stored({}, None), [event("a", "cancellation")])
    assert row["last_10_items"] == [] and row["last_10_actions"] == []
    assert all(row[c] == 0 for c in ("views_1d", "clicks_1d", "carts_1d"))


def test_a_late_event_does_not_make_the_row_older_than_the_stored_one() -> None:
    stored = Stored({"views_1d": 2, "last_10_items": ["x"]}, NOON)
    row = merge_trending(stored, [event("a", "view", NOON - timedelta(hours=1))])
    assert row["event_timestamp"] == NOON and row["views_1d"] == 3


@pytest.fixture
def sink(tmp_path) -> EventSink:
    lake = Lake(str(tmp_path / "lake"))
    return EventSink(lake, lake.uri("bronze", "events"), lake.uri("bronze", "impressions"))


def landed(sink: EventSink) -> list[str]:
    table = sink.lake.read(sink.uri, ["event_id"])
    return [] if table is None else table.column("event_id").to_pylist()


def test_the_sink_lands_each_event_id_once_across_redeliveries_and_repeats(sink: EventSink) -> None:
    first = [event(f"i{n}", event_id=f"e{n}") for n in range(5)]
    assert sink.write(first, "b1") == 5
    again = [*first[2:], event("i9", event_id="e9"), event("i9", event_id="e9")]  # redelivered + repeated
    assert sink.write(again, "b2") == 1
    late = [event("i5", event_id="e5", at=NOON + timedelta(days=1))]  # a retry whose time moved a day
    next_day = [event("i5", event_id="e5", at=NOON)]
    assert sink.write(next_day, "b3") == 1 and sink.write(late, "b4") == 0
    assert sorted(landed(sink)) == ["e0", "e1", "e2", "e3", "e4", "e5", "e9"]
    rows = sink.lake.read(sink.uri)
    assert set(pc.unique(rows.column("source")).to_pylist()) == {"stream"}
    assert rows.column("event_date").to_pylist()[0] == NOON.date()


def test_the_sink_lands_each_shown_item_once_across_redeliveries(sink: EventSink) -> None:
    def shown(request: str, items: tuple[str, ...]) -> Impression:
        scores = tuple(float(n) for n in range(len(items)))
        return Impression(request, "u1", items, scores, "model", "default", "control", "1", "1", NOON)

    assert sink.write_impressions([shown("r1", ("a", "b")), shown("r2", ("c",))], "b1") == 3
    assert sink.write_impressions([shown("r2", ("c",)), shown("r3", ("a", "d")), shown("r3", ("a", "d"))], "b2") == 2
    rows = sink.lake.read(sink.impressions.uri).to_pylist()
    assert sorted((r["request_id"], r["position"], r["item_id"]) for r in rows) == [
        ("r1", 1, "a"), ("r1", 2, "b"), ("r2", 1, "c"), ("r3", 1, "a"), ("r3", 2, "d")
    ]  # fmt: skip
