"""Data-quality gates: Great Expectations 1.x suites kept in `jobs/expectations/*.json`.

Each suite runs on one interval's slice (pandas; per-day slices are small) in an ephemeral GX
context. Values known only at run time - the interval's bounds, the catalog, the row-count bounds -
come in as suite parameters (`{"$PARAMETER": "min_rows"}` in the JSON). A failed suite raises
`QualityGateError` before anything downstream is written; the error names each failed expectation
with examples, and the GX Data Docs HTML report is written for a person to open.

The volume check compares a day's row count with a trailing baseline: the median of the last
`BASELINE_DAYS` days that have rows, so one unusual day does not move it. A count passes within
`max_ratio` of the baseline either way, or within `MIN_ROW_CHANGE` rows of it: on a small shop a
day of 3 events after days of 40 is ordinary, while a day of 100x the volume (a replayed file) or
a feed cut to a tenth on a busy shop is stopped.

Slices above `max_rows` (default 250,000; a call may set its own, as the feature gates do) are
validated on a seeded uniform sample of that many rows: GX on pandas costs about 0.5 s per 100k
rows and suite on this machine, which would dominate a 10M event day. Row-count bounds are scaled
by the sampling fraction, so that check still applies to the full count. The trade-off: a rate of
bad rows (5% null users) is always caught, but a handful of bad rows among ten million may be
missed.

Catalog membership ("known items") is checked through a derived column `unknown_item_id`
(the item id where it is not in the catalog, else null) rather than a `value_set` of the whole
catalog, which GX would render into every report page; a feature row's timestamp through a
derived `as_of` (the end of its `feature_date`), so one check holds for any number of days.

A range of days (a backfill, a catch-up) is validated in one suite run (`Gates.check_days`):
the volume check per day, in Python, then the content of every day at once. Only when that run
fails are the days run one by one, to name the first bad day and write its Data Docs page, so
a failure reads as it would had each day been checked alone.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).parent / "expectations"
SUITES = ("bronze_events", "silver_interactions", "gold_user_features", "gold_item_features")
MAX_EXAMPLES = 5
#: Days (with rows) whose median row count is the volume check's baseline.
BASELINE_DAYS = 7
#: A row count within this many rows of the baseline passes the volume check, whatever the ratio.
MIN_ROW_CHANGE = 50


@dataclass(frozen=True)
class Failure:
    """One failed expectation: what it checks and what broke it."""

    expectation: str
    column: str | None
    detail: str
    examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        where = f" on {self.column}" if self.column else ""
        shown = f"; e.g. {', '.join(self.examples)}" if self.examples else ""
        return f"{self.expectation}{where}: {self.detail}{shown}"


class QualityGateError(Exception):
    """A data-quality suite failed; nothing downstream of the checked data was written.

    Attributes:
        suite: the suite's name.
        interval: the data interval checked (e.g. `2025-01-03`).
        failures: the failed expectations.
        report: the Data Docs page (or index) to open, when written.
    """

    def __init__(self, suite: str, interval: str, failures: list[Failure], report: Path | None) -> None:
        self.suite, self.interval, self.failures, self.report = suite, interval, failures, report
        lines = [f"data-quality gate {suite!r} failed for {interval}: {len(failures)} expectation(s)"]
        lines += [f"  - {failure.describe()}" for failure in failures]
        if report is not None:
            lines.append(f"report: {report}")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class GateResult:
    suite: str
    interval: str
    success: bool
    evaluated: int
    failures: list[Failure]
    report: Path | None


def load_suite(name: str) -> dict[str, Any]:
    """A suite's JSON (GX 1.x layout: name, expectations[type, kwargs, meta])."""
    path = SUITES_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no expectation suite {name!r} ({path})")
    return json.loads(path.read_text())


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a day, UTC."""
    start = datetime.combine(day, time.min, UTC)
    return start, start + timedelta(days=1)


class RowBounds(TypedDict):
    """The volume check's suite parameters: at least `min_rows`, at most `max_rows` (None: no
    upper bound)."""

    min_rows: int
    max_rows: int | None


def row_count_bounds(
    history: Sequence[int] | int | None, max_ratio: float, min_change: int = MIN_ROW_CHANGE
) -> RowBounds:
    """Suite parameters for the volume check, against the median of the last `BASELINE_DAYS`
    counts of `history`: within `max_ratio` of it either way, or within `min_change` rows of it,
    whichever is wider; at least one row when there is no history.

    Args:
        history: row counts of the days before, oldest first (days without rows left out), or
            the previous day's count alone.
        max_ratio: allowed factor between the day's count and the baseline.
        min_change: a change of up to this many rows is never an alarm (small counts).
    """
    counts = [history] if isinstance(history, int) else [n for n in history or () if n]
    if not any(counts):
        return {"min_rows": 1, "max_rows": None}
    baseline = statistics.median(counts[-BASELINE_DAYS:])
    low = min(baseline / max_ratio, baseline - min_change)
    high = max(baseline * max_ratio, baseline + min_change)
    return {"min_rows": max(1, math.floor(low)), "max_rows": math.ceil(high)}


def sample_rows(table: pa.Table, max_rows: int, seed: int = 0) -> tuple[pa.Table, float]:
    """At most `max_rows` rows of `table`, drawn uniformly with a fixed seed (in table order),
    and the fraction kept."""
    import numpy as np

    if len(table) <= max_rows:
        return table, 1.0
    picks = np.sort(np.random.default_rng(seed).choice(len(table), size=max_rows, replace=False))
    return table.take(picks), max_rows / len(table)


def scale_row_bounds(params: dict[str, Any], fraction: float) -> dict[str, Any]:
    """Row-count bounds for a sample holding `fraction` of the rows."""
    if fraction >= 1.0:
        return params
    scaled = dict(params)
    if scaled.get("min_rows") is not None:
        scaled["min_rows"] = math.floor(scaled["min_rows"] * fraction)
    if scaled.get("max_rows") is not None:
        scaled["max_rows"] = math.ceil(scaled["max_rows"] * fraction)
    return scaled


def with_unknown_items(frame: pd.DataFrame, known_items: set[str] | Any) -> pd.DataFrame:
    """`frame` plus `unknown_item_id`: the item id where it is not in `known_items`, else null."""
    known = frame["item_id"].isin(known_items)
    return frame.assign(unknown_item_id=frame["item_id"].where(~known))


def with_as_of(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` plus `as_of`: when each row's `feature_date` ends (the next midnight, UTC), the
    `event_timestamp` a feature row must carry."""
    import pandas as pd

    ends = pd.to_datetime(frame["feature_date"]) + pd.Timedelta(days=1)
    return frame.assign(as_of=ends.dt.tz_localize(UTC).astype(frame["event_timestamp"].dtype))


class Gates:
    """Runs the repository's suites; one ephemeral GX context per process.

    Args:
        docs_dir: where Data Docs HTML goes (`$TOWERFLOW_HOME/reports/data_docs`); None: none.
        docs: `all` (a report for every validation, the pipeline's choice), `failures` (for failed
            gates only; a failed gate then runs twice) or `never`.
        max_rows: larger slices are validated on a uniform sample of this many rows.
    """

    def __init__(self, docs_dir: Path | None, docs: str = "failures", max_rows: int = 250_000) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        self.docs_dir, self.docs = docs_dir, docs if docs_dir is not None else "never"
        self.max_rows = max_rows
        self._gx = gx
        if self.docs == "never":
            self.context = gx.get_context(mode="ephemeral")
        else:
            assert docs_dir is not None
            docs_dir.mkdir(parents=True, exist_ok=True)
            self.context = gx.get_context(mode="ephemeral", project_config=_docs_config(docs_dir))
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self._asset = self.context.data_sources.add_pandas("towerflow").add_dataframe_asset("slices")
        self._suites: dict[str, Any] = {}
        self._checkpoints: dict[tuple[str, bool], Any] = {}

    def _suite(self, name: str):
        if name not in self._suites:
            from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

            spec = load_suite(name)
            suite = self._gx.ExpectationSuite(name=name, meta=spec.get("meta", {}))
            for config in spec["expectations"]:
                suite.add_expectation_configuration(ExpectationConfiguration(**config))
            self._suites[name] = self.context.suites.add(suite)
        return self._suites[name]

    def _checkpoint(self, name: str, with_docs: bool):
        """A checkpoint per suite, with or without the Data Docs action, built on first use."""
        key = (name, with_docs)
        if key not in self._checkpoints:
            gx = self._gx
            label = f"{name}-{'docs' if with_docs else 'plain'}"
            batch = self._asset.add_batch_definition_whole_dataframe(label)
            definition = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=label, data=batch, suite=self._suite(name))
            )
            actions = (
                [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["towerflow"])] if with_docs else []
            )
            self._checkpoints[key] = self.context.checkpoints.add(
                gx.Checkpoint(
                    name=label,
                    validation_definitions=[definition],
                    actions=actions,
                    result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
                )
            )
        return self._checkpoints[key]

    def validate(self, name: str, frame: pd.DataFrame, interval: str, parameters: dict[str, Any]) -> GateResult:
        """Run suite `name` on `frame`; never raises for failed expectations (see `check`)."""
        result = self._run(name, frame, interval, parameters, with_docs=self.docs == "all")
        report = None
        if not result.success and self.docs == "failures":
            self._run(name, frame, interval, parameters, with_docs=True)
        if self.docs_dir is not None and (not result.success or self.docs == "all"):
            report = self._page(name, interval)
        failures = [_failure(r) for r in result.results if not r.success]
        return GateResult(name, interval, result.success, len(result.results), failures, report)

    def check(self, name: str, frame: pd.DataFrame, interval: str, parameters: dict[str, Any]) -> GateResult:
        """Run suite `name` on `frame`.

        Raises:
            QualityGateError: an expectation failed.
        """
        gate = self.validate(name, frame, interval, parameters)
        if not gate.success:
            raise QualityGateError(name, interval, gate.failures, gate.report)
        log.info("gate %s %s: %d expectations passed%s", name, interval, gate.evaluated, _docs_note(gate))
        return gate

    def check_table(
        self,
        name: str,
        table: pa.Table,
        interval: str,
        parameters: dict[str, Any],
        known_items: set[str] | None = None,
        max_rows: int | None = None,
    ) -> GateResult:
        """`check` on an Arrow slice: sampled above `max_rows` (None: the gates' own), plus
        `unknown_item_id` when `known_items` is given and `as_of` for feature rows.

        Raises:
            QualityGateError: an expectation failed.
        """
        frame, fraction = self._frame(table, known_items, max_rows)
        return self.check(name, frame, interval, scale_row_bounds(parameters, fraction))

    def _frame(
        self, table: pa.Table, known_items: set[str] | None, max_rows: int | None = None
    ) -> tuple[pd.DataFrame, float]:
        """The rows to validate (a sample above `max_rows`, None: the gates' own), with the
        derived columns, and the fraction of `table` they are."""
        import pandas as pd
        import pyarrow as pa

        sample, fraction = sample_rows(table, max_rows or self.max_rows)
        # List columns stay Arrow-backed: no expectation reads their values, and GX fingerprints
        # every batch, which pickles the whole frame when a column holds Python lists (most of a
        # feature gate's time on user features).
        lists = {f.type for f in sample.schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)}
        frame = sample.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if t in lists else None)
        if known_items is not None:
            frame = with_unknown_items(frame, known_items)
        if "feature_date" in frame and "event_timestamp" in frame:
            frame = with_as_of(frame)
        return frame, fraction

    def check_days(
        self,
        name: str,
        by_day: Mapping[date, pa.Table],
        parameters: Callable[[date, date], dict[str, Any]],
        history: list[int],
        max_ratio: float,
        known_items: set[str] | None = None,
        max_rows: int | None = None,
    ) -> dict[date, GateResult]:
        """`check_table` for each day of `by_day` (in date order), in one suite run.

        Args:
            by_day: each day's rows; days without rows are left out.
            parameters: the suite parameters of the days `first`..`last` other than the volume
                check's (e.g. the interval's bounds).
            history: row counts of the days before the first, oldest first; each checked day's
                count is appended (the volume check's trailing baseline).
            max_ratio: see `row_count_bounds`.
            max_rows: the run is sampled above this many rows (None: the gates' own).

        Raises:
            QualityGateError: a day failed, naming the first day that did.
        """
        days = sorted(by_day)
        if not days:
            return {}
        volume: dict[date, RowBounds] = {}
        for day in days:
            volume[day] = row_count_bounds(history, max_ratio)
            low, high = volume[day]["min_rows"], volume[day]["max_rows"]
            if len(by_day[day]) < low or (high is not None and len(by_day[day]) > high):
                self.check_table(
                    name, by_day[day], day.isoformat(), parameters(day, day) | volume[day], known_items, max_rows
                )
            history.append(len(by_day[day]))
        if len(days) == 1:
            day = days[0]
            params = parameters(day, day) | volume[day]
            return {day: self.check_table(name, by_day[day], day.isoformat(), params, known_items, max_rows)}
        import pyarrow as pa

        first, last = days[0], days[-1]
        frame, _ = self._frame(pa.concat_tables([by_day[day] for day in days]), known_items, max_rows)
        interval = f"{first.isoformat()}..{last.isoformat()}"
        gate = self.validate(name, frame, interval, parameters(first, last) | {"min_rows": 1, "max_rows": None})
        if not gate.success:
            for day in days:  # names the first bad day, with its own report
                self.check_table(
                    name, by_day[day], day.isoformat(), parameters(day, day) | volume[day], known_items, max_rows
                )
            raise QualityGateError(name, interval, gate.failures, gate.report)  # bad only across days
        log.info(
            "gate %s %s: %d expectations passed on %d days%s",
            name,
            interval,
            gate.evaluated,
            len(days),
            _docs_note(gate),
        )
        return dict.fromkeys(days, gate)

    def _run(self, name, frame, interval, parameters, *, with_docs: bool):
        from great_expectations.core.run_identifier import RunIdentifier

        checkpoint = self._checkpoint(name, with_docs)
        outcome = checkpoint.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters,
            run_id=RunIdentifier(run_name=f"{name}-{interval}"),
        )
        return next(iter(outcome.run_results.values()))

    def _page(self, name: str, interval: str) -> Path | None:
        """The newest Data Docs page of this suite and interval, else the site's index."""
        assert self.docs_dir is not None
        pages = sorted((self.docs_dir / "validations").glob(f"{name}/{name}-{interval}/*/*.html"))
        if pages:
            return pages[-1]
        index = self.docs_dir / "index.html"
        return index if index.exists() else None


def _docs_config(docs_dir: Path):
    """An ephemeral GX context's config whose Data Docs site in `docs_dir` accumulates across
    processes: validation results kept on disk (`docs_dir/.validation_results`) and an index
    builder that deletes no other process's pages (`jobs.gx_docs`)."""
    from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults())
    config.stores[config.validation_results_store_name] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir / ".validation_results"),
        },
    }
    config.data_docs_sites = {
        "towerflow": {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "KeepingSiteIndexBuilder", "module_name": "jobs.gx_docs"},
        }
    }
    return config


def _docs_note(gate: GateResult) -> str:
    """Where a passed gate's Data Docs page is, for the log line that reports it."""
    return f"; Data Docs: {gate.report}" if gate.report is not None else ""


def _failure(result) -> Failure:
    config = result.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or (f"{kwargs['column_A']} vs {kwargs['column_B']}" if "column_A" in kwargs else None)
    outcome = result.result or {}
    if "unexpected_count" in outcome:
        detail = (
            f"{outcome['unexpected_count']:,} of {outcome.get('element_count', 0):,} rows unexpected "
            f"({outcome.get('unexpected_percent') or 0:.2f}%)"
        )
        values = outcome.get("partial_unexpected_list") or []
        examples = [_show(v) for v in values[:MAX_EXAMPLES]]
    else:
        detail = f"observed {_show(outcome.get('observed_value'))}"
        shown = {k: v for k, v in kwargs.items() if k not in ("column", "batch_id") and v is not None}
        detail += f", expected {', '.join(f'{k}={_show(v)}' for k, v in shown.items())}"
        examples = []
    if result.exception_info and result.exception_info.get("raised_exception"):
        detail = f"could not be evaluated: {result.exception_info.get('exception_message')}"
    return Failure(config.type, column, detail, examples)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
