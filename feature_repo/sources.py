"""Sources: the gold Delta tables (batch) and the push sources the stream worker writes to.

A table's path is relative to the lake, `gold/<table>`; the environment's feature_store.yaml names
the lake (`offline_store.lake`, read by features/offline_store.py), so these definitions hold no
machine's path. Feature rows of day D carry `event_timestamp` = D + 1 day 00:00 UTC
(towerflow/schemas.py), so a point-in-time join gives an example only what was known before it
happened.
"""

from feast import FileSource, PushSource
from feast.data_format import DeltaFormat


def _gold(table: str, description: str) -> FileSource:
    return FileSource(
        name=f"gold_{table}",
        path=f"gold/{table}",
        file_format=DeltaFormat(),
        timestamp_field="event_timestamp",
        description=description,
    )


user_features_source = _gold("user_features", "Daily user aggregates (towerflow.schemas.GOLD_USER_FEATURES).")
item_features_source = _gold("item_features", "Daily item aggregates (towerflow.schemas.GOLD_ITEM_FEATURES).")
user_history_source = _gold("user_history", "Purchase history per purchase day (towerflow.schemas.GOLD_USER_HISTORY).")
user_seen_source = _gold(
    "user_seen", "What each user saw and bought, per active day (towerflow.schemas.GOLD_USER_SEEN)."
)
user_embeddings_source = _gold("user_embeddings", "User tower outputs per model version.")
item_embeddings_source = _gold("item_embeddings", "Item tower outputs per model version.")

# The stream worker pushes a user's last 10 items (with the latest action on each) and today's
# counters as events arrive; the nightly batch fills the same feature view from gold, so training
# sees the same definitions.
user_recent_push = PushSource(
    name="user_recent_push",
    batch_source=user_features_source,
    description="Stream worker -> user_recent: user_id, event_timestamp, last_10_items, last_10_actions, *_1d.",
)

item_trending_push = PushSource(
    name="item_trending_push",
    batch_source=item_features_source,
    description="Stream worker -> item_trending: item_id, event_timestamp, *_1d counters.",
)
