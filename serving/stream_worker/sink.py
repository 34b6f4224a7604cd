"""The lake sinks: streamed events into Delta `bronze/events` (each event id once),
impressions into `bronze/impressions` (each request id and position once) and catalog upserts
into `bronze/items` (each item and instant once; the daily ETL's silver/items takes each item's
latest value per column, so an upsert naming some fields changes only those).

A micro-batch is merged on its key (insert when not matched), so a record delivered again after a
crash, or an event posted again by a client, does not land twice. The merge reads only the
partitions of the batch's days and their neighbours (a retried event whose timestamp defaulted to
its arrival may fall on the next day). Event rows carry `source = "stream"`, the batch id in
`import_batch` and their place in the batch in `source_row`, the columns imported events have, so
the daily ETL reads them alike.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from streams.events import Event, Impression, ItemUpdate
from towerflow.schemas import BRONZE_EVENTS, BRONZE_IMPRESSIONS, BRONZE_ITEMS, EVENTS_PARTITION, IMPRESSIONS_PARTITION

if TYPE_CHECKING:
    from towerflow.lake import Lake

SOURCE = "stream"


def bronze_rows(events: Sequence[Event], batch_id: str) -> pa.Table:
    """The events as `bronze/events` rows, each event id once (the first of repeats)."""
    unique = _first(events, lambda e: e.event_id)
    columns = {
        "event_id": [e.event_id for e in unique],
        "user_id": [e.user_id for e in unique],
        "item_id": [e.item_id for e in unique],
        "action": [e.action for e in unique],
        "timestamp": [e.timestamp for e in unique],
        "quantity": [e.quantity for e in unique],
        "price": [e.price for e in unique],
        "invoice_no": [None] * len(unique),
        "country": [None] * len(unique),
        "source": [SOURCE] * len(unique),
        "import_batch": [batch_id] * len(unique),
        "source_row": list(range(1, len(unique) + 1)),
        "request_id": [e.request_id for e in unique],
        "event_date": [e.timestamp.date() for e in unique],
    }
    return pa.table(columns, schema=BRONZE_EVENTS)


def impression_rows(impressions: Sequence[Impression]) -> pa.Table:
    """The impressions as `bronze/impressions` rows, one per item shown, each response once."""
    rows: dict[str, list[Any]] = {name: [] for name in BRONZE_IMPRESSIONS.names}
    for shown in _first(impressions, lambda i: i.request_id):
        for position, (item_id, score) in enumerate(zip(shown.items, shown.scores, strict=True), start=1):
            rows["request_id"].append(shown.request_id)
            rows["user_id"].append(shown.user_id)
            rows["item_id"].append(item_id)
            rows["position"].append(position)
            rows["score"].append(score)
            rows["served_path"].append(shown.path)
            rows["experiment_id"].append(shown.experiment_id)
            rows["arm"].append(shown.arm)
            rows["retrieval_version"].append(shown.retrieval_version)
            rows["ranking_version"].append(shown.ranking_version)
            rows["timestamp"].append(shown.timestamp)
            rows["reason"].append(shown.reason)
            rows["latency_ms"].append(shown.latency_ms)
            rows["event_date"].append(shown.timestamp.date())
    return pa.table(rows, schema=BRONZE_IMPRESSIONS)


def item_rows(updates: Sequence[ItemUpdate], batch_id: str) -> pa.Table:
    """The upserts as `bronze/items` rows (the columns an items import writes), each once."""
    unique = _first(updates, lambda u: (u.item_id, u.updated_at))
    columns = {
        "item_id": [u.item_id for u in unique],
        "description": [u.description for u in unique],
        "category": [u.category for u in unique],
        "price": [u.price for u in unique],
        "created_at": [u.created_at for u in unique],
        "available": [u.available for u in unique],
        "updated_at": [u.updated_at for u in unique],
        "source": [SOURCE] * len(unique),
        "import_batch": [batch_id] * len(unique),
        "source_row": list(range(1, len(unique) + 1)),
    }
    return pa.table(columns, schema=BRONZE_ITEMS)


def _first(records: Sequence[Any], key: Any) -> list[Any]:
    first: dict[Hashable, Any] = {}
    for record in records:
        first.setdefault(key(record), record)
    return list(first.values())


class MergeSink:
    """Merges micro-batches of rows into one Delta table on a key.

    Args:
        lake: the lake.
        uri: the table.
        keys: the columns that identify a row (a row whose key is in the table is skipped).
        partition_by: the table's partition columns (a `date` column first: the merge's pruning);
            none for a small table the merge reads whole.
    """

    def __init__(self, lake: Lake, uri: str, keys: Sequence[str], partition_by: Sequence[str]) -> None:
        self.lake = lake
        self.uri = uri
        self.keys = tuple(keys)
        self.partition_by = list(partition_by)

    def write(self, rows: pa.Table, batch_id: str) -> int:
        """Land the rows whose key is not in the table yet; returns how many landed."""
        from deltalake import CommitProperties

        if not rows.num_rows:
            return 0
        table = self.lake.table(self.uri)
        if table is None:  # the first rows of a new lake
            self.lake.write(self.uri, rows, partition_by=self.partition_by, batch_id=batch_id)
            return rows.num_rows
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in self.keys)
        if self.partition_by:
            day = self.partition_by[0]
            days = sorted({d + timedelta(days=k) for d in rows.column(day).to_pylist() for k in (-1, 0, 1)})
            listed = ", ".join(f"DATE '{d.isoformat()}'" for d in days)
            predicate += f" AND t.{day} IN ({listed})"
        merged = (
            table.merge(
                rows,
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                merge_schema=True,  # a lake from before a column was added
                commit_properties=CommitProperties(custom_metadata={"towerflow.batch": batch_id}),
            )
            .when_not_matched_insert_all()
            .execute()
        )
        return int(merged.get("num_target_rows_inserted", 0))


class EventSink:
    """`bronze/events` (merged on `event_id`) and `bronze/impressions` (on request id and
    position), under one lake.

    Args:
        lake: the lake.
        events_uri / impressions_uri: the two tables (`settings.table_uri("bronze", ...)`).
    """

    def __init__(self, lake: Lake, events_uri: str, impressions_uri: str, items_uri: str | None = None) -> None:
        self.lake = lake
        self.uri = events_uri
        self.events = MergeSink(lake, events_uri, ["event_id"], EVENTS_PARTITION)
        self.impressions = MergeSink(lake, impressions_uri, ["request_id", "position"], IMPRESSIONS_PARTITION)
        items_uri = items_uri or events_uri.rsplit("/", 1)[0] + "/items"
        self.items = MergeSink(lake, items_uri, ["item_id", "updated_at"], [])

    def write(self, events: Sequence[Event], batch_id: str) -> int:
        """Land the events not in `bronze/events` yet; returns how many landed."""
        return self.events.write(bronze_rows(events, batch_id), batch_id)

    def write_items(self, updates: Sequence[ItemUpdate], batch_id: str) -> int:
        """Land the catalog upserts not in `bronze/items` yet; returns how many landed."""
        return self.items.write(item_rows(updates, batch_id), batch_id)

    def write_impressions(self, impressions: Sequence[Impression], batch_id: str) -> int:
        """Land the impressions not in `bronze/impressions` yet; returns rows (items shown) landed."""
        return self.impressions.write(impression_rows(impressions), batch_id)
