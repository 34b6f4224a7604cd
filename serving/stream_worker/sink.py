"""The lake sink: streamed events into Delta `bronze/events`, each event id once.

A micro-batch is merged on `event_id` (insert when not matched), so an event delivered again
after a crash, or posted again by a client, does not land twice. The merge reads only the
partitions of the batch's days and their neighbours (a retried event whose timestamp defaulted to
its arrival may fall on the next day). Rows carry `source = "stream"`, the batch id in
`import_batch` and their place in the batch in `source_row`, the same columns imported events have,
so the daily ETL reads them alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import pyarrow as pa

from streams.events import Event
from towerflow.schemas import BRONZE_EVENTS, EVENTS_PARTITION

if TYPE_CHECKING:
    from towerflow.lake import Lake

SOURCE = "stream"


def bronze_rows(events: Sequence[Event], batch_id: str) -> pa.Table:
    """The events as `bronze/events` rows, each event id once (the first of repeats)."""
    first: dict[str, Event] = {}
    for event in events:
        first.setdefault(event.event_id, event)
    unique = list(first.values())
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


class EventSink:
    """Merges micro-batches of events into `bronze/events`.

    Args:
        lake: the lake.
        uri: the table (`settings.table_uri("bronze", "events")`).
    """

    def __init__(self, lake: Lake, uri: str) -> None:
        self.lake = lake
        self.uri = uri

    def write(self, events: Sequence[Event], batch_id: str) -> int:
        """Land the events not in the table yet; returns how many landed."""
        from deltalake import CommitProperties

        rows = bronze_rows(events, batch_id)
        if not rows.num_rows:
            return 0
        table = self.lake.table(self.uri)
        if table is None:  # the first events of a new lake
            self.lake.write(self.uri, rows, partition_by=EVENTS_PARTITION, batch_id=batch_id)
            return rows.num_rows
        days = sorted({d + timedelta(days=k) for d in rows.column("event_date").to_pylist() for k in (-1, 0, 1)})
        listed = ", ".join(f"DATE '{d.isoformat()}'" for d in days)
        merged = (
            table.merge(
                rows,
                predicate=f"t.event_id = s.event_id AND t.event_date IN ({listed})",
                merge_schema=True,  # a lake from before a column was added
                source_alias="s",
                target_alias="t",
                commit_properties=CommitProperties(custom_metadata={"towerflow.batch": batch_id}),
            )
            .when_not_matched_insert_all()
            .execute()
        )
        return int(merged.get("num_target_rows_inserted", 0))
