"""What each Airflow task runs: settings in, one job call, a small summary out (for XCom).

DAG files import this module inside their tasks, so nothing heavy loads at parse time.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from towerflow.settings import get_settings

log = logging.getLogger(__name__)


def run_days(run_date: str, lookback_days: int) -> tuple[date, date]:
    """The days a run for `run_date` processes: the `lookback_days` days before it.

    A run for date D handles data up to, not including, D (the day that just ended).
    """
    end = date.fromisoformat(run_date)
    return end - timedelta(days=lookback_days), end - timedelta(days=1)


def ingest_landing_days(run_date: str) -> dict[str, int]:
    """Import the landing files of the days before `run_date` into bronze; returns counts."""
    from jobs.ingest import ingest_landing
    from jobs.lake import Lake

    settings = get_settings()
    lake = Lake(settings.lake, settings.storage_options or None)
    first, last = run_days(run_date, settings.ingest_lookback_days)
    reports = ingest_landing(lake, settings.landing_dir, first, last)
    summary = {
        "files": len(reports),
        "rows_read": sum(r.rows_read for r in reports),
        "events_landed": sum(r.events_landed for r in reports),
        "items_landed": sum(r.items_landed for r in reports),
        "rejected": sum(sum(r.rejected.values()) for r in reports),
    }
    log.info("ingest %s..%s: %s", first, last, summary)
    return summary
