"""Table schemas shared by the importers, the ETL jobs, the stream worker and the gateway."""

from __future__ import annotations

import pyarrow as pa

#: Actions an event may carry. Cancellations come from retail returns (Online Retail "C" invoices).
ACTIONS = ("view", "click", "add_to_cart", "purchase", "cancellation")

TIMESTAMP = pa.timestamp("us", tz="UTC")

BRONZE_EVENTS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),  # null for guest checkouts (Online Retail)
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("quantity", pa.int64()),
        pa.field("price", pa.float64()),
        pa.field("invoice_no", pa.string()),
        pa.field("country", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("import_batch", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
    ]
)

BRONZE_ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("category", pa.string()),  # null where the source has none (Online Retail)
        pa.field("price", pa.float64()),
        pa.field("created_at", TIMESTAMP),
        pa.field("available", pa.bool_()),
        pa.field("updated_at", TIMESTAMP, nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("import_batch", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
    ]
)

EVENTS_PARTITION = ["event_date"]
