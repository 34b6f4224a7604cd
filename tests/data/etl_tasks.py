"""The ETL as a DAG run (and `towerflow pipeline etl`) runs it, for tests on a lake of their own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from towerflow.lake import Lake


@dataclass
class EtlResult:
    """The steps the tasks reported."""

    steps: list

    def removed(self) -> dict[str, int]:
        """Rows removed per cleaning rule, summed over the days."""
        from jobs.clean import RULES

        totals = dict.fromkeys(RULES, 0)
        for step in self.steps:
            for rule, n in step.detail.get("removed", {}).items():
                totals[rule] += n
        return totals


def run_etl_tasks(lake: Lake, first: date, last: date, **options) -> EtlResult:
    """`towerflow.tasks.etl` for first..last on `lake` (a `<home>/lake` folder); the holdout is
    the last day, whatever it holds. `options` go to `tasks.etl` (e.g. `examples=False`)."""
    from towerflow import tasks

    steps: list = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TOWERFLOW_HOME", str(Path(lake.root).parent))
        env.setenv("TOWERFLOW_SPARK_MASTER", "local[2]")
        env.setenv("TOWERFLOW_HOLDOUT_MIN_USERS", "0")
        env.setenv("TOWERFLOW_HOLDOUT_MIN_EVENTS", "0")
        days = {"start": first.isoformat(), "end": last.isoformat()}
        tasks.etl(days, holdout_days=1, on_step=steps.append, **options)
    return EtlResult(steps)
