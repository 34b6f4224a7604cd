"""The daily batch path: bronze -> silver -> gold for a range of days, behind quality gates.

The steps, each one DAG task (`towerflow.tasks`; `towerflow pipeline etl` runs the same tasks):

1. `bronze/events` of the days is checked by the `bronze_events` suite; a failure stops here.
2. `silver/items` is rebuilt from `bronze/items` when that table has changed since the last build;
   `silver/interactions` of the days: cleaned (jobs/clean.py), checked, then written over their
   partitions.
3. `gold/user_features` and `gold/item_features` of each day from silver's 30 days ending with it:
   checked, then written over the day's partition; then `gold/training_examples` (positives
   before the cutoff) and `gold/holdout` (positives from the cutoff to the last day).
4. The gold feature tables as written are checked again (`check_features`).

Every write replaces exactly its interval (a Delta predicate overwrite) and records the versions
of the tables it was built from in the commit, so a rerun of a day leaves the same content.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from jobs import clean, gold
from jobs.lake import Lake
from jobs.quality import BASELINE_DAYS, Gates, day_bounds
from jobs.sparklake import SparkLake, commit_metadata
from towerflow import schemas as S

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

BRONZE_EVENTS, BRONZE_ITEMS = ("bronze", "events"), ("bronze", "items")
SILVER_INTERACTIONS, SILVER_ITEMS = ("silver", "interactions"), ("silver", "items")
USER_FEATURES, ITEM_FEATURES = ("gold", "user_features"), ("gold", "item_features")
USER_HISTORY = ("gold", "user_history")
USER_SEEN = ("gold", "user_seen")
EXAMPLES, HOLDOUT = ("gold", "training_examples"), ("gold", "holdout")
#: `gold.holdout_users` as collected to size the holdout.
HOLDOUT_USERS = pa.schema(
    [("user_id", pa.string()), ("first", pa.date32()), ("last", pa.date32()), ("last_new", pa.date32())]
)
FEATURES_PARTITION = ["feature_date"]
#: Feature rows made by one Spark pass of `build_features` (a row per catalog item and day
#: bounds it) and validated, all of them, by one run of a feature suite: the Online Retail
#: backfill (374 days x 4,053 items) is one pass and one run per suite.
FEATURE_PASS_ROWS = 2_000_000


@dataclass
class Step:
    """What one step did: rows written (or checked), the table version, time, details."""

    name: str
    interval: str
    rows: int
    version: int | None = None
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def table_name(layer_table: tuple[str, str]) -> str:
    return "/".join(layer_table)


class DailyEtl:
    """Runs the daily batch path on one Spark session and one GX context.

    Args:
        lake: Spark access to the lake.
        gates: the data-quality gates.
        rules: thresholds of the cleaning rules.
        max_day_ratio: allowed factor between a day's row count and the median of the days
            before (see `jobs.quality.row_count_bounds`).
        on_step: called with each finished step (progress output).
    """

    def __init__(
        self,
        lake: SparkLake,
        gates: Gates,
        rules: clean.CleaningRules = clean.CleaningRules(),
        max_day_ratio: float = 10.0,
        on_step: Callable[[Step], None] | None = None,
    ) -> None:
        self.lake, self.gates, self.rules = lake, gates, rules
        self.max_day_ratio = max_day_ratio
        self.on_step = on_step or (lambda step: None)
        self._items: tuple[int | None, DataFrame, set[str]] | None = None

    def uri(self, layer_table: tuple[str, str]) -> str:
        return self.lake.lake.uri(*layer_table)

    def version(self, layer_table: tuple[str, str]) -> int | None:
        return self.lake.lake.version(self.uri(layer_table))

    def _done(self, step: Step, started: float) -> Step:
        step.seconds = round(time.perf_counter() - started, 2)
        self.on_step(step)
        return step

    # ------------------------------------------------------------------------------------ days

    def check_raw(self, days: list[date]) -> list[Step]:
        """Gate 1: the bronze events of `days` (consecutive), one step per day."""
        started = time.perf_counter()
        uri = self.uri(BRONZE_EVENTS)
        first, last = days[0], days[-1]
        inside = (ds.field("event_date") >= pa.scalar(first, pa.date32())) & (
            ds.field("event_date") <= pa.scalar(last, pa.date32())
        )
        events = self.lake.lake.read(uri, filter=inside)
        by_day = _split_by_day(events, "event_date") if events is not None else {}
        history = trailing_rows(self.lake.lake, uri, "event_date", first)
        known = self._bronze_item_ids() if by_day else None
        gates = self.gates.check_days("bronze_events", by_day, _interval_params, history, self.max_day_ratio, known)
        version = self.version(BRONZE_EVENTS)
        steps = []
        for day in days:
            step = Step("check bronze/events", day.isoformat(), len(by_day.get(day, ())), version)
            if day in gates:
                step.detail["expectations"] = gates[day].evaluated
            else:
                step.note = "no events this day"
            steps.append(self._done(step, started))
            started = time.perf_counter()
        return steps

    def build_items(self) -> list[Step]:
        """silver/items: the current catalog, rebuilt only when bronze/items changed."""
        started = time.perf_counter()
        inputs = {table_name(BRONZE_ITEMS): self.version(BRONZE_ITEMS)}
        built_from = commit_metadata(self.uri(SILVER_ITEMS), self.lake.lake).get("towerflow.inputs")
        if built_from is not None and json.loads(built_from) == inputs:
            step = Step("silver/items", "current", 0, self.version(SILVER_ITEMS), note="up to date")
            return [self._done(step, started)]
        bronze = self.lake.read(self.uri(BRONZE_ITEMS), S.BRONZE_ITEMS)
        items = self.lake.collect(clean.transform_items(bronze), S.SILVER_ITEMS)
        written = self.lake.write(
            items,
            self.uri(SILVER_ITEMS),
            S.SILVER_ITEMS,
            mode="overwrite",
            metadata={
                "towerflow.job": "silver/items",
                "towerflow.inputs": inputs,
                "towerflow.rows": len(items),
            },
        )
        return [self._done(Step("silver/items", "current", written.rows, written.version), started)]

    def build_interactions(self, days: list[date]) -> list[Step]:
        """silver/interactions of `days`: clean, gate each day, write over those days."""
        started = time.perf_counter()
        first, last = days[0], days[-1]
        _, items, known = self._silver_items()
        inputs = {
            table_name(BRONZE_EVENTS): self.version(BRONZE_EVENTS),
            table_name(SILVER_ITEMS): self.version(SILVER_ITEMS),
        }
        events = self.lake.read(self.uri(BRONZE_EVENTS), S.BRONZE_EVENTS, where=_between("event_date", first, last))
        # One Spark pass: collect every row with its verdict, then count and keep in Arrow.
        # Removed rows may lack a user or a session: every column nullable until the split.
        flagged_schema = pa.schema(
            [f.with_nullable(True) for f in S.SILVER_INTERACTIONS] + [pa.field("removed_by", pa.string())]
        )
        flagged = self.lake.collect(
            clean.silver_columns(clean.flag_interactions(events, items, self.rules)), flagged_schema
        )
        removed = clean.removed_counts_by_day(flagged)
        silver = flagged.filter(pc.is_null(flagged.column("removed_by"))).select(S.SILVER_INTERACTIONS.names)
        del flagged
        uri = self.uri(SILVER_INTERACTIONS)
        by_day = _split_by_day(silver, "event_date")
        history = trailing_rows(self.lake.lake, uri, "event_date", first)
        # A day without events has nothing to check; its partition is emptied.
        checked = {day: by_day[day] for day in days if day in by_day}
        self.gates.check_days("silver_interactions", checked, _interval_params, history, self.max_day_ratio, known)
        written = self.lake.write(
            silver,
            uri,
            S.SILVER_INTERACTIONS,
            predicate=_between("event_date", first, last),
            partition_by=S.EVENTS_PARTITION,
            metadata={
                "towerflow.job": "silver/interactions",
                "towerflow.interval": _interval(first, last),
                "towerflow.inputs": inputs,
                "towerflow.rows": len(silver),
                "towerflow.removed": _sum_removed(removed.values()),
            },
        )
        steps = []
        for day in days:
            kept = 0 if day not in by_day else len(by_day[day])
            day_removed = removed.get(day, dict.fromkeys(clean.RULES, 0))
            step = Step("silver/interactions", day.isoformat(), kept, written.version)
            step.detail = {"bronze_rows": kept + sum(day_removed.values()), "removed": day_removed}
            steps.append(self._done(step, started))
            started = time.perf_counter()
        return steps

    def build_features(self, first: date, last: date) -> list[Step]:
        """gold user and item features of `first`..`last`; every day of both is gated before
        either table is written."""
        from pyspark.sql import functions as F

        started = time.perf_counter()
        _, items, _ = self._silver_items()
        silver_uri = self.uri(SILVER_INTERACTIONS)
        inputs = {
            table_name(SILVER_INTERACTIONS): self.version(SILVER_INTERACTIONS),
            table_name(SILVER_ITEMS): self.version(SILVER_ITEMS),
        }
        window = self.lake.read(
            silver_uri,
            S.SILVER_INTERACTIONS,
            where=_between("event_date", gold.window_start(first, gold.LOOKBACK_DAYS), last),
        )
        year = self.lake.read(
            silver_uri,
            S.SILVER_INTERACTIONS,
            where=_between("event_date", gold.window_start(first, gold.PURCHASE_LOOKBACK_DAYS), last),
        ).select("user_id", "item_id", "action", "timestamp", "event_date")
        purchases = year.where(F.col("action") == "purchase").drop("action")
        # Not cached: scanning the Parquet again is cheaper than holding millions of rows.
        exploded = gold.feature_days(window, first, last)
        users = self.lake.collect(
            gold.transform_user_features(window, items, purchases, first, last), S.GOLD_USER_FEATURES
        )
        item_rows = self.lake.collect(gold.transform_item_features(exploded, items, first, last), S.GOLD_ITEM_FEATURES)
        # Each active day joined with its year of rows, once for both lists.
        year_items = gold.user_year_items(year, first, last).cache()
        history = self.lake.collect(
            gold.transform_user_history(year, first, last, year_items=year_items), S.GOLD_USER_HISTORY
        )
        seen = self.lake.collect(gold.transform_user_seen(year, first, last, year_items=year_items), S.GOLD_USER_SEEN)
        year_items.unpersist()
        outputs = (
            ("gold_user_features", users, USER_FEATURES, S.GOLD_USER_FEATURES),
            ("gold_item_features", item_rows, ITEM_FEATURES, S.GOLD_ITEM_FEATURES),
            (None, history, USER_HISTORY, S.GOLD_USER_HISTORY),
            (None, seen, USER_SEEN, S.GOLD_USER_SEEN),
        )
        splits = {}
        for suite, table, target, _ in outputs:
            if suite is None:  # derived from already-gated silver rows; nothing new to check
                splits[target] = _split_by_day(table, "feature_date")
                continue
            splits[target] = by_day = _split_by_day(table, "feature_date")
            history = trailing_rows(self.lake.lake, self.uri(target), "feature_date", first)
            # A day when nobody was active in the 30 days before has no rows to check.
            checked = {day: by_day[day] for day in day_range(first, last) if day in by_day}
            self.gates.check_days(
                suite, checked, _no_parameters, history, self.max_day_ratio, max_rows=FEATURE_PASS_ROWS
            )
        steps = []
        for _, table, target, schema in outputs:
            written = self.lake.write(
                table,
                self.uri(target),
                schema,
                predicate=_between("feature_date", first, last),
                partition_by=FEATURES_PARTITION,
                metadata={
                    "towerflow.job": table_name(target),
                    "towerflow.interval": _interval(first, last),
                    "towerflow.inputs": inputs,
                    "towerflow.rows": len(table),
                },
            )
            for day in day_range(first, last):
                rows = len(splits[target].get(day, ()))
                steps.append(self._done(Step(table_name(target), day.isoformat(), rows, written.version), started))
                started = time.perf_counter()
        return steps

    def feature_passes(self, days: list[date]) -> list[list[date]]:
        """`days` in the runs `build_features` takes in one Spark pass each (`feature_passes`)."""
        return feature_passes(days, len(self._silver_items()[2]))

    # -------------------------------------------------------------------------------- examples

    def build_examples(
        self, cutoff: date, end: date, start: date | None = None, holdout: dict[str, int] | None = None
    ) -> list[Step]:
        """gold/training_examples: positives from `start` (or the beginning) to the day before
        `cutoff`; gold/holdout: positives from `cutoff` to `end`. Both tables are rewritten, and
        both commits record the cutoff (and `holdout`, what the holdout holds, when given)."""
        if cutoff > end:
            raise ValueError(f"cutoff {cutoff} is after the run's last day {end}")
        silver = self.lake.read(self.uri(SILVER_INTERACTIONS), S.SILVER_INTERACTIONS)
        inputs = {table_name(SILVER_INTERACTIONS): self.version(SILVER_INTERACTIONS)}
        steps = []
        for target, first, last in ((EXAMPLES, start, cutoff - timedelta(days=1)), (HOLDOUT, cutoff, end)):
            started = time.perf_counter()
            rows = gold.transform_examples(silver, first, last)
            interval = f"{first or 'start'}..{last}"
            written = self.lake.write(
                rows,
                self.uri(target),
                S.GOLD_EXAMPLES,
                mode="overwrite",
                partition_by=S.EVENTS_PARTITION,
                metadata={
                    "towerflow.job": table_name(target),
                    "towerflow.interval": interval,
                    "towerflow.cutoff": cutoff.isoformat(),
                    "towerflow.inputs": inputs,
                    **({"towerflow.holdout": json.dumps(holdout)} if holdout is not None else {}),
                },
            )
            steps.append(self._done(Step(table_name(target), interval, written.rows, written.version), started))
        return steps

    def holdout_cutoff(self, end: date, size: gold.HoldoutSize) -> tuple[date, dict[str, int]]:
        """The first holdout day for a holdout ending with `end`, sized by `size` from silver
        interactions (see `gold.choose_cutoff`), and what that holdout holds."""
        from pyspark.sql import functions as F

        silver = self.lake.read(self.uri(SILVER_INTERACTIONS), S.SILVER_INTERACTIONS)
        silver = silver.where(F.col("event_date") <= F.lit(end))
        earliest = end - timedelta(days=size.max_days + size.min_days)
        users = self.lake.collect(gold.holdout_users(silver).where(F.col("last") >= F.lit(earliest)), HOLDOUT_USERS)
        positives = (
            silver.where(F.col("action").isin(*gold.POSITIVE_ACTIONS) & (F.col("event_date") >= F.lit(earliest)))
            .groupBy("event_date")
            .count()
            .collect()
        )
        first = silver.agg(F.min("event_date")).first()  # an aggregate without groups: one row
        first_day = None if first is None else first[0]
        if first_day is None:
            raise ValueError(f"silver/interactions has no rows up to {end}: build silver first")
        arrays = {name: users.column(name).to_numpy(zero_copy_only=False) for name in ("first", "last", "last_new")}
        arrays = {name: values.astype("datetime64[D]") for name, values in arrays.items()}
        per_day = {row["event_date"]: int(row["count"]) for row in positives}
        return gold.choose_cutoff(arrays, per_day, first_day, end, size)

    # --------------------------------------------------------------------------------- helpers

    def _bronze_item_ids(self) -> set[str]:
        items = self.lake.lake.read(self.uri(BRONZE_ITEMS), columns=["item_id"])
        return set() if items is None else set(items.column("item_id").to_pylist())

    def _silver_items(self) -> tuple[int | None, DataFrame, set[str]]:
        """The silver catalog as a cached DataFrame and an id set, reloaded when it changes."""
        version = self.version(SILVER_ITEMS)
        if self._items is None or self._items[0] != version:
            if self._items is not None:
                self._items[1].unpersist()
            items = self.lake.read(self.uri(SILVER_ITEMS), S.SILVER_ITEMS).cache()
            ids = self.lake.lake.read(self.uri(SILVER_ITEMS), columns=["item_id"])
            self._items = (version, items, set() if ids is None else set(ids.column("item_id").to_pylist()))
        return self._items


def check_features(
    lake: Lake, gates: Gates, days: list[date], max_ratio: float, max_rows: int = FEATURE_PASS_ROWS
) -> int:
    """Gate 2: the gold feature tables of `days` as written, each in runs of consecutive days
    holding at most `max_rows` rows (all of them validated; at least a day per run).

    Returns:
        The rows checked.

    Raises:
        QualityGateError: a day failed.
    """
    checked = 0
    for suite, target in (("gold_user_features", USER_FEATURES), ("gold_item_features", ITEM_FEATURES)):
        uri = lake.uri(*target)
        counts = partition_rows(lake, uri, "feature_date")
        for run in split_by_rows(days, counts, max_rows):
            first, last = run[0], run[-1]
            inside = (ds.field("feature_date") >= pa.scalar(first, pa.date32())) & (
                ds.field("feature_date") <= pa.scalar(last, pa.date32())
            )
            rows = lake.read(uri, filter=inside)
            if rows is None or len(rows) == 0:
                continue
            history = trailing_rows(lake, uri, "feature_date", first)
            by_day = _split_by_day(rows, "feature_date")
            gates.check_days(suite, by_day, _no_parameters, history, max_ratio, max_rows=max_rows)
            checked += len(rows)
    return checked


def split_by_rows(days: list[date], rows: Mapping[date, int], max_rows: int) -> list[list[date]]:
    """Consecutive `days` in runs of at most `max_rows` rows (`rows`: per day; a day without is
    empty), each at least one day."""
    runs: list[list[date]] = []
    total = 0
    for day in days:
        n = rows.get(day, 0)
        if runs and total + n <= max_rows:
            runs[-1].append(day)
            total += n
        else:
            runs.append([day])
            total = n
    return runs


def feature_passes(days: list[date], items: int, max_rows: int = FEATURE_PASS_ROWS) -> list[list[date]]:
    """Consecutive `days` in the Spark passes of `build_features`: each makes at most about
    `max_rows` item feature rows (a row per catalog item and day), and holds at least a day."""
    return split_by_rows(days, dict.fromkeys(days, max(items, 1)), max_rows)


def trailing_rows(lake: Lake, uri: str, column: str, day: date, days: int = BASELINE_DAYS) -> list[int]:
    """Row counts of the latest `days` partitions before `day` that have rows, oldest first
    (the volume check's history; empty when there is none)."""
    counts = partition_rows(lake, uri, column)
    earlier = sorted(d for d in counts if d < day)
    return [counts[d] for d in earlier[-days:] if counts[d]]


def partition_rows(lake: Lake, uri: str, column: str) -> dict[date, int]:
    """Rows per value of the date partition column `column`, from the Delta log's file
    statistics (no data file is opened; a file written without them is counted); {} if no table."""
    table = lake.table(uri)
    if table is None:
        return {}
    actions = pa.table(table.get_add_actions(flatten=True))
    if len(actions) == 0:
        return {}
    values = actions.column(f"partition.{column}").to_pylist()
    counts: dict[date, int] = {}
    unknown: set[date] = set()
    for value, n in zip(values, actions.column("num_records").to_pylist(), strict=True):
        if value is None:
            continue
        value = value if isinstance(value, date) else date.fromisoformat(str(value))
        if n is None:
            unknown.add(value)
        else:
            counts[value] = counts.get(value, 0) + n
    for value in unknown:
        counts[value] = lake.count(uri, filter=ds.field(column) == pa.scalar(value, pa.date32()))
    return counts


def _interval_params(first: date, last: date) -> dict[str, Any]:
    """The data interval's bounds: from `first`'s start to `last`'s end."""
    return {"interval_start": day_bounds(first)[0], "interval_end": day_bounds(last)[1]}


def _no_parameters(first: date, last: date) -> dict[str, Any]:
    return {}


def _between(column: str, first: date, last: date) -> str:
    """SQL predicate selecting the days `first`..`last` (prunes Delta files, filters rows)."""
    if first == last:
        return f"{column} = '{first}'"
    return f"{column} >= '{first}' AND {column} <= '{last}'"


def _interval(first: date, last: date) -> str:
    return first.isoformat() if first == last else f"{first}..{last}"


def _split_by_day(table: pa.Table, column: str) -> dict[date, pa.Table]:
    """An Arrow table's rows by day (only days that have rows)."""
    values = table.column(column)
    return {day: table.filter(pc.equal(values, pa.scalar(day, values.type))) for day in pc.unique(values).to_pylist()}


def _sum_removed(per_day) -> dict[str, int]:
    totals = dict.fromkeys(clean.RULES, 0)
    for counts in per_day:
        for rule, n in counts.items():
            totals[rule] += n
    return totals


def day_range(start: date, end: date) -> list[date]:
    """Every day from `start` to `end`, inclusive."""
    if end < start:
        raise ValueError(f"--end {end} is before --start {start}")
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]
