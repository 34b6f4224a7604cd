"""Guardrail readings from impressions (experiments/health.py): failed-response share and p99
latency per arm, a variant's error rate relative to control's, read back from a Delta table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from experiments.analysis import ArmHealth, DecisionPolicy
from experiments.health import arm_health, read_arm_health, relative_to
from towerflow.lake import Lake
from towerflow.schemas import BRONZE_IMPRESSIONS, IMPRESSIONS_PARTITION, as_schema

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)


def responses(arm: str, reasons: list[str | None], latencies: list[float], experiment: str = "7") -> list[dict]:
    rows = []
    for n, (reason, latency) in enumerate(zip(reasons, latencies, strict=True)):
        for position in (1, 2):  # two items a response: a response counts once
            rows.append({
                "request_id": f"{arm}-{n}", "user_id": f"u{n}", "item_id": f"i{position}", "position": position,
                "served_path": "model" if reason is None else "fallback_popular", "experiment_id": experiment,
                "arm": arm, "timestamp": T0 + timedelta(seconds=n), "reason": reason, "latency_ms": latency,
                "event_date": T0.date(),
            })  # fmt: skip
    return rows


def table(rows: list[dict]) -> pa.Table:
    return as_schema(pa.Table.from_pylist(rows), BRONZE_IMPRESSIONS)


def test_failures_are_counted_per_response_and_cold_starts_are_not_failures() -> None:
    rows = responses("control", [None, None, "cold_start", None], [5, 6, 1, 7])
    rows += responses("canary", [None, "model_timeout", "model_server_unavailable", None], [5, 90, 2, 400])
    health = arm_health(table(rows), ["control", "canary", "idle"])
    assert health["control"].error_rate == 0.0 and health["canary"].error_rate == 0.5
    assert health["canary"].latency_p99_ms == pytest.approx(400, rel=0.05)
    assert health["idle"] == ArmHealth()


def test_an_outage_of_every_arm_is_not_the_variants_fault() -> None:
    both = relative_to({"control": ArmHealth(error_rate=0.9), "canary": ArmHealth(error_rate=0.92)}, "control")
    assert both["canary"].error_rate == pytest.approx(0.02) and both["control"].error_rate == 0.9
    policy = DecisionPolicy(max_error_rate=0.05)
    assert both["canary"].error_rate <= policy.max_error_rate


def test_readings_come_back_from_the_lake_for_the_experiment_only(tmp_path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    rows = responses("control", [None] * 4, [5, 5, 5, 5]) + responses(
        "canary", ["model_error"] * 2 + [None] * 2, [9] * 4
    )
    rows += responses("canary", ["model_error"] * 4, [9] * 4, experiment="8")  # another experiment
    lake.write(lake.uri("bronze", "impressions"), table(rows), partition_by=IMPRESSIONS_PARTITION)
    health = read_arm_health(lake, "7", T0, T0 + timedelta(hours=1), ["control", "canary"], control="control")
    assert health["canary"].error_rate == 0.5 and health["control"].error_rate == 0.0
    assert health["canary"].latency_p99_ms == pytest.approx(9)
    assert health["canary"].error_rate > DecisionPolicy().max_error_rate  # the guardrail would roll it back
