"""Attribution: which impression each click and purchase counts for.

An impression is one item shown in one response (`bronze/impressions`, one row per request id and
position). A click or purchase (`bronze/events`) counts for at most one impression:

1. with a `request_id`: the impression of that response that showed the event's item. A request
   id that names no impression of the item (another experiment's response, an item the response
   did not show) counts for none: the id says where the event came from, so it is not second
   guessed by time.
2. without one: the latest impression of the same user and item at most `window` (24 h) before
   the event. Earlier impressions of the pair within the window get nothing, so an event is never
   counted twice.

`attribute` is pure (pyarrow tables in and out, joined in an in-memory DuckDB); `read_experiment`
reads one experiment's rows for a time range from the lake.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa

from towerflow.schemas import BRONZE_EVENTS, BRONZE_IMPRESSIONS, TIMESTAMP

if TYPE_CHECKING:
    import duckdb

    from towerflow.lake import Lake

#: The actions that count for an impression.
ATTRIBUTED_ACTIONS = ("click", "purchase")
DEFAULT_WINDOW = timedelta(hours=24)

#: The columns of `bronze/impressions` and `bronze/events` attribution reads.
IMPRESSION_COLUMNS = ("request_id", "user_id", "item_id", "position", "experiment_id", "arm", "timestamp")
EVENT_COLUMNS = ("event_id", "user_id", "item_id", "action", "timestamp", "request_id", "quantity", "price")

#: One row per attributed event. `user_id`, `request_id`, `position` and `arm` are the
#: impression's (the unit that was assigned to the arm), `timestamp` the event's; `matched_by` is
#: `request_id` or `window`.
ATTRIBUTED = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("quantity", pa.int64()),
        pa.field("price", pa.float64()),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("matched_by", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Attribution:
    """Attributed events and how they were matched.

    Attributes:
        rows: the attributed events (`ATTRIBUTED`).
        considered: clicks and purchases that could belong to the impressions: those whose
            request id names one of their responses, and those without a request id by a user
            who had an impression.
        by_request_id: attributed through their request id.
        by_window: attributed to the user's latest impression of the item within the window.
    """

    rows: pa.Table
    considered: int
    by_request_id: int
    by_window: int

    @property
    def unattributed(self) -> int:
        return self.considered - self.by_request_id - self.by_window


def attribute(
    impressions: pa.Table,
    events: pa.Table,
    *,
    window: timedelta = DEFAULT_WINDOW,
    actions: tuple[str, ...] = ATTRIBUTED_ACTIONS,
) -> Attribution:
    """Attribute clicks and purchases to impressions (rules in the module docstring).

    Args:
        impressions: `bronze/impressions` rows (at least `IMPRESSION_COLUMNS`), typically one
            experiment's.
        events: `bronze/events` rows (at least `EVENT_COLUMNS`); other actions are ignored, an
            event id seen twice counts once (its earliest row).
        window: how long after an impression an event without a request id still counts for it
            (both ends included).
        actions: the actions attributed.

    Returns:
        The attributed events, each once, and the counts of how they matched.
    """
    with connect() as con:
        con.register("impressions", impressions.select(list(IMPRESSION_COLUMNS)))
        con.register("events", events.select(list(EVENT_COLUMNS)))
        con.execute(_ACTED, [list(actions)])
        con.execute(_MATCHED, [window // timedelta(microseconds=1)])
        rows = con.execute("SELECT * FROM matched ORDER BY timestamp, event_id").fetch_arrow_table()
        counts = con.execute(
            """SELECT (SELECT count(*) FROM acted WHERE claimed OR loose),
                      count(*) FILTER (WHERE matched_by = 'request_id'),
                      count(*) FILTER (WHERE matched_by = 'window')
               FROM matched"""
        ).fetchone()
    considered, by_request_id, by_window = counts or (0, 0, 0)
    return Attribution(
        rows=rows.cast(ATTRIBUTED), considered=considered, by_request_id=by_request_id, by_window=by_window
    )


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection on UTC (timestamps come back as they went in)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


# The clicks and purchases, each event id once; `claimed`: its request id names a response shown,
# `loose`: it has none and its user had an impression.
_ACTED = """
CREATE TEMP TABLE acted AS
SELECT * EXCLUDE (request_id), NULLIF(request_id, '') AS request_id,
       NULLIF(request_id, '') IN (SELECT request_id FROM impressions) AS claimed,
       NULLIF(request_id, '') IS NULL AND user_id IN (SELECT user_id FROM impressions) AS loose
FROM events
WHERE action IN (SELECT unnest(?::VARCHAR[]))
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY timestamp) = 1
"""

# 1. by request id, to the first position of the event's item in that response; 2. without one,
# to the latest impression of the user and item at most the window before (ties in time: the
# later request id, then the first position).
_MATCHED = """
CREATE TEMP TABLE matched AS
WITH by_id AS (
    SELECT a.event_id, a.action, a.timestamp, a.quantity, a.price,
           s.user_id, s.item_id, s.request_id, s.position, s.arm, 'request_id' AS matched_by
    FROM acted a JOIN impressions s ON a.request_id = s.request_id AND a.item_id = s.item_id
    WHERE a.claimed
    QUALIFY row_number() OVER (PARTITION BY a.event_id ORDER BY s.position) = 1
), by_time AS (
    SELECT a.event_id, a.action, a.timestamp, a.quantity, a.price,
           s.user_id, s.item_id, s.request_id, s.position, s.arm, 'window' AS matched_by
    FROM acted a JOIN impressions s
      ON a.user_id = s.user_id AND a.item_id = s.item_id
     AND s.timestamp <= a.timestamp AND a.timestamp <= s.timestamp + to_microseconds($1)
    WHERE a.loose
    QUALIFY row_number() OVER (PARTITION BY a.event_id ORDER BY s.timestamp DESC, s.request_id DESC, s.position) = 1
)
SELECT * FROM by_id UNION ALL SELECT * FROM by_time
"""


def read_experiment(lake: Lake, experiment_id: str, start: datetime, end: datetime) -> tuple[pa.Table, pa.Table]:
    """One experiment's impressions and the clicks and purchases that may belong to them.

    Both tables are read for `start <= timestamp < end`, so a result is a function of the
    interval (a rerun sees the same rows once they have landed). Impressions stop when the
    experiment does; to give its last impressions their full window, pass an `end` one window
    past the experiment's end.

    Args:
        lake: the lake holding `bronze/impressions` and `bronze/events`.
        experiment_id: the experiment.
        start: first instant (timezone-aware).
        end: instant after the last (timezone-aware).

    Returns:
        `(impressions, events)`, empty (with `IMPRESSION_COLUMNS` / `EVENT_COLUMNS`) where a table
        does not exist yet.

    Raises:
        ValueError: `start` or `end` has no timezone, or `end` is not after `start`.
    """
    import pyarrow.dataset as ds

    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    if end <= start:
        raise ValueError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    # Partitions are UTC days: prune on those, filter on the instants.
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    days = (ds.field("event_date") >= pa.scalar(first, pa.date32())) & (
        ds.field("event_date") <= pa.scalar(last, pa.date32())
    )
    at = ds.field("timestamp")
    during = (at >= pa.scalar(start, TIMESTAMP)) & (at < pa.scalar(end, TIMESTAMP))
    impressions = lake.read(
        lake.uri("bronze", "impressions"),
        columns=IMPRESSION_COLUMNS,
        filter=days & during & (ds.field("experiment_id") == experiment_id),
    )
    events = lake.read(
        lake.uri("bronze", "events"),
        columns=EVENT_COLUMNS,
        filter=days & during & ds.field("action").isin(list(ATTRIBUTED_ACTIONS)),
    )
    return (
        impressions if impressions is not None else _empty(BRONZE_IMPRESSIONS, IMPRESSION_COLUMNS),
        events if events is not None else _empty(BRONZE_EVENTS, EVENT_COLUMNS),
    )


def _empty(schema: pa.Schema, columns: tuple[str, ...]) -> pa.Table:
    return pa.schema([schema.field(c) for c in columns]).empty_table()
