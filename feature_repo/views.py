"""Feature views. TTLs say how long a value may stand in for a missing newer one.

Daily features get 2 days: an example on day E joins the row of day E-1 (valid from E 00:00) and
survives one missing day. Embeddings change only when a model is trained, so they get 30 days.
Views fed by a push source hold the fast-moving values (recent items, today's counters).
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Bool, Float32, Float64, Int64, String

from feature_repo.entities import item, user
from feature_repo.sources import (
    item_embeddings_source,
    item_features_source,
    item_trending_push,
    user_embeddings_source,
    user_features_source,
    user_history_source,
    user_recent_push,
    user_seen_source,
)

DAILY = timedelta(days=2)
HISTORY = timedelta(days=400)  # rows exist only on active days; a year away keeps the history
EMBEDDINGS = timedelta(days=30)


def _counts(*prefixes: str, windows: tuple[int, ...]) -> list[Field]:
    return [Field(name=f"{p}_{w}d", dtype=Int64) for p in prefixes for w in windows]


COUNTERS = ("views", "clicks", "carts", "purchases")

user_features = FeatureView(
    name="user_features",
    entities=[user],
    ttl=DAILY,
    schema=[
        *_counts(*COUNTERS, windows=(7, 30)),
        Field(name="days_since_last_event", dtype=Float64),
        Field(name="days_since_last_purchase", dtype=Float64),
        Field(name="distinct_categories_30d", dtype=Int64),
        Field(name="favourite_category", dtype=String),
        Field(name="avg_price_30d", dtype=Float64),
    ],
    online=True,
    source=user_features_source,
    description="A user's behaviour over the last 7 and 30 days, as of the end of each day.",
)

user_recent = FeatureView(
    name="user_recent",
    entities=[user],
    ttl=DAILY,
    schema=[
        Field(name="last_10_items", dtype=Array(String)),
        Field(name="last_10_actions", dtype=Array(String)),
        *_counts(*COUNTERS, windows=(1,)),
    ],
    online=True,
    source=user_recent_push,
    description="The user's last 10 items (most recent first), the latest action on each, and today's counters; live.",
)

user_history = FeatureView(
    name="user_history",
    entities=[user],
    ttl=HISTORY,
    schema=[
        Field(name="items", dtype=Array(String)),
        Field(name="counts", dtype=Array(Int64)),
        Field(name="last_day", dtype=Array(Float64)),
    ],
    online=True,
    source=user_history_source,
    description="Items the user bought most in the last year, their counts and last purchase (epoch days).",
)

user_seen = FeatureView(
    name="user_seen",
    entities=[user],
    ttl=HISTORY,
    schema=[Field(name="seen", dtype=Array(String)), Field(name="bought", dtype=Array(String))],
    online=True,
    source=user_seen_source,
    description="Every item the user acted on (seen) and bought in the last year, most recent first; "
    "read by the gateway's exclusions, not by the models.",
)

item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=DAILY,
    schema=[
        *_counts(*COUNTERS, windows=(7, 30)),
        Field(name="popularity", dtype=Float64),
        Field(name="ctr", dtype=Float64),
        Field(name="conversion", dtype=Float64),
        Field(name="age_days", dtype=Float64),
        Field(name="price", dtype=Float64),
        Field(name="category", dtype=String),
        Field(name="available", dtype=Bool),  # read by the gateway's rules, not by the models
    ],
    online=True,
    source=item_features_source,
    description="An item's popularity, rates, age, price, category and availability as of the end of each day.",
)

item_trending = FeatureView(
    name="item_trending",
    entities=[item],
    ttl=DAILY,
    schema=_counts(*COUNTERS, windows=(1,)),
    online=True,
    source=item_trending_push,
    description="Today's counters per item; pushed live by the stream worker.",
)

user_embeddings = FeatureView(
    name="user_embeddings",
    entities=[user],
    ttl=EMBEDDINGS,
    schema=[Field(name="embedding", dtype=Array(Float32)), Field(name="model_version", dtype=String)],
    online=True,
    source=user_embeddings_source,
    description="Query-tower output of the retrieval model (filled by training).",
)

item_embeddings = FeatureView(
    name="item_embeddings",
    entities=[item],
    ttl=EMBEDDINGS,
    schema=[Field(name="embedding", dtype=Array(Float32)), Field(name="model_version", dtype=String)],
    online=True,
    source=item_embeddings_source,
    description="Candidate-tower output of the retrieval model (filled by training).",
)
