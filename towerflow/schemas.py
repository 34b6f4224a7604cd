"""Table schemas shared by the importers, the ETL jobs, the stream worker and the gateway."""

from __future__ import annotations

import pyarrow as pa

#: Actions an event may carry. Cancellations come from retail returns (Online Retail "C" invoices).
ACTIONS = ("view", "click", "add_to_cart", "purchase", "cancellation")
#: The per-action counters of the feature views (`<counter>_<window>d`) and the action each counts.
COUNTED = {"views": "view", "clicks": "click", "carts": "add_to_cart", "purchases": "purchase"}

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
        pa.field("request_id", pa.string()),  # the recommendation a streamed event came from
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

# ------------------------------------------------------------------------------------------------
# Silver and gold: the contract between the ETL jobs (writers) and the feature store, models and
# serving (readers). Feature rows of day D carry `event_timestamp` = D + 1 day 00:00 UTC: they
# summarize everything up to the end of D and become valid, point in time, from then on.

SILVER_INTERACTIONS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("quantity", pa.int64()),
        pa.field("price", pa.float64()),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("request_id", pa.string()),  # attribution of clicks and purchases to impressions
        pa.field("event_date", pa.date32(), nullable=False),
    ]
)

SILVER_ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("category", pa.string(), nullable=False),
        pa.field("price", pa.float64()),
        pa.field("created_at", TIMESTAMP),
        pa.field("available", pa.bool_(), nullable=False),
        pa.field("updated_at", TIMESTAMP, nullable=False),
    ]
)

WINDOWS = (1, 7, 30)


def _windowed(prefixes: tuple[str, ...]) -> list[pa.Field]:
    return [pa.field(f"{p}_{w}d", pa.int64()) for p in prefixes for w in WINDOWS]


GOLD_USER_FEATURES = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("feature_date", pa.date32(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        *_windowed(("views", "clicks", "carts", "purchases")),
        pa.field("days_since_last_event", pa.float64()),
        pa.field("days_since_last_purchase", pa.float64()),  # null: never purchased
        pa.field("distinct_categories_30d", pa.int64()),
        pa.field("favourite_category", pa.string()),
        pa.field("avg_price_30d", pa.float64()),
        pa.field("last_10_items", pa.list_(pa.string())),  # most recent first
        pa.field("last_10_actions", pa.list_(pa.string())),  # the latest action on each of last_10_items
    ]
)

GOLD_ITEM_FEATURES = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("feature_date", pa.date32(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        *_windowed(("views", "clicks", "carts", "purchases")),
        pa.field("popularity", pa.float64()),  # time-decayed purchases+clicks, 7-day half-life
        pa.field("ctr", pa.float64()),  # smoothed clicks / views, 30 days
        pa.field("conversion", pa.float64()),  # smoothed purchases / views, 30 days
        pa.field("age_days", pa.float64()),
        pa.field("price", pa.float64()),
        pa.field("category", pa.string()),
        # The catalog's availability when the row was computed (like price and category); a rule
        # feature the gateway filters on, not a model input. Null (rows from before it existed):
        # unknown, served as available.
        pa.field("available", pa.bool_()),
    ]
)

# Positives with their time; the feature store joins features as of `event_timestamp`.
GOLD_EXAMPLES = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        pa.field("quantity", pa.int64()),
        pa.field("event_date", pa.date32(), nullable=False),
    ]
)

# Embeddings written by the training jobs (retrieval model towers), one row per id and model
# version. `event_timestamp` is when the embedding became valid (the training data's end), so
# point-in-time joins never hand a training example an embedding learned from its own future.
EMBEDDINGS_PARTITION = ["model_version"]

GOLD_USER_EMBEDDINGS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)

GOLD_ITEM_EMBEDDINGS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)

# Impressions logged by the gateway: one row per item shown, so a later click or purchase can be
# attributed to the request, position, models and experiment arm that showed it.
BRONZE_IMPRESSIONS = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),  # 1 = first
        pa.field("score", pa.float64()),  # null on the precomputed path
        pa.field("served_path", pa.string(), nullable=False),  # model | cached | fallback_popular
        pa.field("experiment_id", pa.string(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("retrieval_version", pa.string()),  # null off the model path
        pa.field("ranking_version", pa.string()),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("reason", pa.string()),  # why the model path did not serve; null when it did
        pa.field("latency_ms", pa.float64()),  # the gateway's time on the response (features to rules)
        pa.field("event_date", pa.date32(), nullable=False),
    ]
)

IMPRESSIONS_PARTITION = ["event_date"]

# A user's purchase history as of the end of a purchase day: the items bought most in the last
# 365 days (most first), their counts and when each was last bought (days since the epoch).
GOLD_USER_HISTORY = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("feature_date", pa.date32(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        pa.field("items", pa.list_(pa.string())),
        pa.field("counts", pa.list_(pa.int64())),
        pa.field("last_day", pa.list_(pa.float64())),
    ]
)

# What a user has seen (any action) and bought in the last 365 days, most recent first: for the
# gateway's exclusions, not a model input (jobs.gold.transform_user_seen).
GOLD_USER_SEEN = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("feature_date", pa.date32(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        pa.field("seen", pa.list_(pa.string())),
        pa.field("bought", pa.list_(pa.string())),
    ]
)


def as_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, in its order and types; a nullable column it lacks
    (one added to the schema since the rows were made) comes back all null.

    Raises:
        ValueError: a non-nullable column is missing.
    """
    missing = [f.name for f in schema if f.name not in table.column_names and not f.nullable]
    if missing:
        raise ValueError(f"rows lack column(s) {', '.join(missing)}")
    columns = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema
    ]
    return pa.table(columns, names=schema.names).cast(schema)
