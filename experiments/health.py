"""Each arm's operational readings for the guardrails, from the impressions it served: the share
of responses degraded by a failure (the model path timed out, erred, or a dependency was
unreachable) and the p99 of the gateway's time on a response. A cold-start user served popular
items is no failure. For the guardrails a variant's error rate is what it adds over control's
(`relative_to`): an outage that hits every arm alike is not the variant's doing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from experiments.analysis import ArmHealth

if TYPE_CHECKING:
    from towerflow.lake import Lake

#: `reason`s of responses the model path should have served but could not (serving/gateway).
FAILURES = frozenset(
    {
        "model_timeout",
        "model_error",
        "model_server_unavailable",
        "model_unavailable",
        "model_unbound_input",
        "online_store_unavailable",
    }
)


def arm_health(impressions: pa.Table, arms: Sequence[str]) -> dict[str, ArmHealth]:
    """Per arm, from impression rows (one per item shown; a response's first item stands for it):
    `error_rate` = responses with a failure reason / responses, `latency_p99_ms` over responses
    that carry a latency. None where the arm has no response (or no latency) yet."""
    names = impressions.column_names
    first = (
        impressions.filter(pa.compute.equal(impressions.column("position"), 1)) if "position" in names else impressions
    )
    by_arm = first.column("arm").to_pylist()
    reasons = first.column("reason").to_pylist() if "reason" in names else [None] * len(by_arm)
    latencies = first.column("latency_ms").to_pylist() if "latency_ms" in names else [None] * len(by_arm)
    out = {}
    for arm in arms:
        rows = [n for n, a in enumerate(by_arm) if a == arm]
        timed = np.array([latencies[n] for n in rows if latencies[n] is not None], dtype=np.float64)
        out[arm] = ArmHealth(
            error_rate=sum(reasons[n] in FAILURES for n in rows) / len(rows) if rows else None,
            latency_p99_ms=float(np.percentile(timed, 99)) if timed.size else None,
        )
    return out


def relative_to(health: dict[str, ArmHealth], control: str) -> dict[str, ArmHealth]:
    """The readings with each variant's error rate replaced by its excess over control's."""
    base = health.get(control, ArmHealth()).error_rate
    out = {}
    for arm, reading in health.items():
        rate = reading.error_rate
        if arm != control and rate is not None and base is not None:
            rate = max(0.0, rate - base)
        out[arm] = ArmHealth(error_rate=rate, latency_p99_ms=reading.latency_p99_ms)
    return out


def read_arm_health(
    lake: Lake,
    experiment_id: str,
    start: datetime,
    end: datetime,
    arms: Sequence[str],
    *,
    control: str | None = None,
) -> dict[str, ArmHealth]:
    """`arm_health` over the experiment's impressions in [`start`, `end`) from the lake;
    `relative_to(control)` when `control` is given (what the guardrails take)."""
    import pyarrow.dataset as ds

    from towerflow.schemas import TIMESTAMP

    days = (ds.field("event_date") >= pa.scalar(start.date(), pa.date32())) & (
        ds.field("event_date") <= pa.scalar(end.date(), pa.date32())
    )
    during = (ds.field("timestamp") >= pa.scalar(start, TIMESTAMP)) & (
        ds.field("timestamp") < pa.scalar(end, TIMESTAMP)
    )
    wanted = (ds.field("experiment_id") == experiment_id) & (ds.field("position") == 1)
    dataset = lake.dataset(lake.uri("bronze", "impressions"))
    if dataset is None:
        return dict.fromkeys(arms, ArmHealth())
    present = [c for c in ("arm", "position", "reason", "latency_ms") if c in dataset.schema.names]
    health = arm_health(dataset.to_table(columns=present, filter=days & during & wanted), arms)
    return relative_to(health, control) if control is not None else health
