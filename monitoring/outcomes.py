"""What each model version's recommendations led to on a day: impressions, CTR and conversion.

From the lake, not from Prometheus: the stream worker sees a click's `request_id` but not the
model versions of the response it came from (several workers share the stream, so none holds every
impression), while `bronze/impressions` has both. Clicks and purchases are attributed to
impressions as the experiments are (`experiments.attribution`: by request id, else the user's
latest impression of the item within 24 h), then counted per `(served_path, retrieval_version,
ranking_version)`:

- `ctr`: impressions with at least one attributed click / impressions;
- `conversion`: responses with at least one attributed purchase / responses (a response counts in
  each group it showed items of).

A day's impressions get the clicks and purchases of that day and of the attribution window after
it, so the numbers of a day grow until the window has passed (the report says when it was made).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from experiments.attribution import (
    ATTRIBUTED_ACTIONS,
    DEFAULT_WINDOW,
    EVENT_COLUMNS,
    IMPRESSION_COLUMNS,
    Attribution,
    attribute,
    connect,
)
from towerflow.schemas import BRONZE_EVENTS, BRONZE_IMPRESSIONS

if TYPE_CHECKING:
    from towerflow.lake import Lake

#: `bronze/impressions` columns read: attribution's and the versions.
COLUMNS = (*IMPRESSION_COLUMNS, "served_path", "retrieval_version", "ranking_version", "event_date")


@dataclass(frozen=True)
class Outcome:
    """One path and model-version pair's day (None rates: no impressions)."""

    path: str
    retrieval_version: str
    ranking_version: str
    impressions: int
    responses: int
    clicked_impressions: int
    converted_responses: int
    clicks: int
    purchases: int
    ctr: float | None
    conversion: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def outcomes(impressions: pa.Table, attributed: pa.Table) -> list[Outcome]:
    """Count each group's impressions, responses, clicks and purchases (module doc).

    Args:
        impressions: the day's impressions (`COLUMNS` but `event_date`).
        attributed: `Attribution.rows` of clicks and purchases over at least these impressions;
            rows of other impressions are ignored.

    Returns:
        One `Outcome` per `(served_path, retrieval_version, ranking_version)`, most impressions
        first; a missing version is "".
    """
    with connect() as con:
        con.register("impressions", impressions)
        con.register("attributed", attributed)
        rows = con.execute(_COUNT).fetchall()
    return [
        Outcome(
            path=path,
            retrieval_version=retrieval,
            ranking_version=ranking,
            impressions=shown,
            responses=responses,
            clicked_impressions=clicked,
            converted_responses=converted,
            clicks=clicks,
            purchases=purchases,
            ctr=clicked / shown if shown else None,
            conversion=converted / responses if responses else None,
        )
        for path, retrieval, ranking, shown, responses, clicked, converted, clicks, purchases in rows
    ]


_COUNT = """
WITH hits AS (
    SELECT request_id, position,
           count(*) FILTER (WHERE action = 'click') AS clicks,
           count(*) FILTER (WHERE action = 'purchase') AS purchases
    FROM attributed GROUP BY request_id, position
), shown AS (
    SELECT i.served_path AS path, coalesce(i.retrieval_version, '') AS retrieval,
           coalesce(i.ranking_version, '') AS ranking, i.request_id,
           coalesce(h.clicks, 0) AS clicks, coalesce(h.purchases, 0) AS purchases
    FROM impressions i LEFT JOIN hits h USING (request_id, position)
), responses AS (
    SELECT path, retrieval, ranking, request_id, max(purchases) > 0 AS converted
    FROM shown GROUP BY path, retrieval, ranking, request_id
)
SELECT s.path, s.retrieval, s.ranking, s.impressions, r.responses, s.clicked, r.converted, s.clicks, s.purchases
FROM (
    SELECT path, retrieval, ranking, count(*) AS impressions, count(*) FILTER (WHERE clicks > 0) AS clicked,
           sum(clicks)::BIGINT AS clicks, sum(purchases)::BIGINT AS purchases
    FROM shown GROUP BY path, retrieval, ranking
) s JOIN (
    SELECT path, retrieval, ranking, count(*) AS responses, count(*) FILTER (WHERE converted) AS converted
    FROM responses GROUP BY path, retrieval, ranking
) r USING (path, retrieval, ranking)
ORDER BY s.impressions DESC, s.path, s.retrieval, s.ranking
"""


def _days(column: str, first: date, last: date):
    import pyarrow.dataset as ds

    return (ds.field(column) >= pa.scalar(first, pa.date32())) & (ds.field(column) <= pa.scalar(last, pa.date32()))


def read_day(lake: Lake, day: date, window: timedelta = DEFAULT_WINDOW) -> tuple[pa.Table, pa.Table]:
    """The impressions of `day` and the next day (a later impression may be the one an event
    belongs to), and the clicks and purchases from `day` until `window` after it ends; empty
    tables where the lake has none yet."""
    import pyarrow.dataset as ds

    start = datetime.combine(day, datetime.min.time(), UTC)
    end = start + timedelta(days=1) + window
    impressions = lake.read(
        lake.uri("bronze", "impressions"), columns=COLUMNS, filter=_days("event_date", day, day + timedelta(days=1))
    )
    at = ds.field("timestamp")
    events = lake.read(
        lake.uri("bronze", "events"),
        columns=EVENT_COLUMNS,
        filter=_days("event_date", day, end.date())
        & (at >= pa.scalar(start, pa.timestamp("us", tz="UTC")))
        & (at < pa.scalar(end, pa.timestamp("us", tz="UTC")))
        & ds.field("action").isin(list(ATTRIBUTED_ACTIONS)),
    )
    if impressions is None:
        impressions = pa.schema([BRONZE_IMPRESSIONS.field(c) for c in COLUMNS]).empty_table()
    if events is None:
        events = pa.schema([BRONZE_EVENTS.field(c) for c in EVENT_COLUMNS]).empty_table()
    return impressions, events


def day_outcomes(lake: Lake, day: date, window: timedelta = DEFAULT_WINDOW) -> tuple[list[Outcome], Attribution]:
    """`outcomes` of `day`'s impressions, and how their clicks and purchases were attributed."""
    import pyarrow.compute as pc

    impressions, events = read_day(lake, day, window)
    attribution = attribute(impressions, events, window=window)
    of_day = impressions.filter(pc.equal(impressions.column("event_date"), pa.scalar(day, pa.date32())))
    return outcomes(of_day.drop_columns(["event_date"]), attribution.rows), attribution
