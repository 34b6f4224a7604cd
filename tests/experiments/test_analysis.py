"""Attribution of clicks and purchases to impressions, the per-arm metrics on hand-made rows, the
result model, and the same answer read back from Delta tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from experiments.analysis import ExperimentMetrics, analyze, experiment_metrics, ratio
from experiments.attribution import attribute, read_experiment
from towerflow.lake import Lake
from towerflow.schemas import BRONZE_EVENTS, BRONZE_IMPRESSIONS, EVENTS_PARTITION, IMPRESSIONS_PARTITION, as_schema

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
EXPERIMENT = "ranker-test"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def shown(
    request_id: str,
    user_id: str,
    items: list[str],
    *,
    arm: str = "control",
    minutes: float = 0,
    experiment: str = EXPERIMENT,
) -> list[dict]:
    """One response's impressions: `items` at positions 1, 2, ..."""
    return [
        {
            "request_id": request_id,
            "user_id": user_id,
            "item_id": item,
            "position": position,
            "served_path": "model",
            "experiment_id": experiment,
            "arm": arm,
            "timestamp": at(minutes),
            "event_date": at(minutes).date(),
        }
        for position, item in enumerate(items, start=1)
    ]


def event(
    event_id: str,
    user_id: str,
    item_id: str,
    *,
    minutes: float,
    action: str = "click",
    request_id: str | None = None,
    price: float | None = None,
    quantity: int | None = None,
) -> dict:
    return {
        "event_id": event_id,
        "user_id": user_id,
        "item_id": item_id,
        "action": action,
        "timestamp": at(minutes),
        "quantity": quantity,
        "price": price,
        "source": "stream",
        "import_batch": "test",
        "source_row": 1,
        "request_id": request_id,
        "event_date": at(minutes).date(),
    }


def impressions(*responses: list[dict]) -> pa.Table:
    rows = [row for response in responses for row in response]
    return as_schema(pa.Table.from_pylist(rows, schema=_present(BRONZE_IMPRESSIONS, rows)), BRONZE_IMPRESSIONS)


def events(*rows: dict) -> pa.Table:
    return as_schema(pa.Table.from_pylist(list(rows), schema=_present(BRONZE_EVENTS, rows)), BRONZE_EVENTS)


def _present(schema: pa.Schema, rows: list[dict] | tuple[dict, ...]) -> pa.Schema:
    names = set(rows[0]) if rows else set(schema.names)
    return pa.schema([f for f in schema if f.name in names])


def matched(table: pa.Table) -> list[tuple[str, str, str]]:
    """(event id, request id, matched by) of attributed rows."""
    return list(zip(*(table.column(c).to_pylist() for c in ("event_id", "request_id", "matched_by")), strict=True))


# ------------------------------------------------------------------------------------------------
# Attribution

# u1 saw item A in r1 and again, 10 minutes later, in r2.
SEEN_TWICE = impressions(shown("r1", "u1", ["A", "B"], minutes=0), shown("r2", "u1", ["C", "A"], minutes=10))


def test_a_click_counts_for_the_response_its_request_id_names_not_the_latest() -> None:
    result = attribute(SEEN_TWICE, events(event("e1", "u1", "A", minutes=20, request_id="r1")))
    assert matched(result.rows) == [("e1", "r1", "request_id")]
    assert result.rows.column("position").to_pylist() == [1]
    assert (result.considered, result.by_request_id, result.by_window) == (1, 1, 0)


def test_without_a_request_id_the_latest_impression_in_the_window_gets_it_once() -> None:
    # Both r1 and r2 showed A to u1 within 24 h before the click: only the later one counts.
    result = attribute(SEEN_TWICE, events(event("e1", "u1", "A", minutes=20), event("e2", "u1", "A", minutes=5)))
    assert sorted(matched(result.rows)) == [("e1", "r2", "window"), ("e2", "r1", "window")]
    assert result.rows.column("position").to_pylist() == [1, 2]  # ordered by event time: e2 then e1


def test_events_outside_the_window_are_ignored() -> None:
    day = 24 * 60
    result = attribute(
        SEEN_TWICE,
        events(
            event("before", "u1", "B", minutes=-1),  # before any impression of B
            event("edge", "u1", "B", minutes=day),  # exactly 24 h after r1: counts
            event("late", "u1", "B", minutes=day + 0.01),
            event("late-A", "u1", "A", minutes=10 + day + 1),  # a minute past r2's window
        ),
    )
    assert matched(result.rows) == [("edge", "r1", "window")]
    assert (result.considered, result.unattributed) == (4, 3)
    hour = timedelta(hours=1)
    an_hour_after_r2 = attribute(SEEN_TWICE, events(event("e", "u1", "A", minutes=70)), window=hour)
    assert matched(an_hour_after_r2.rows) == [("e", "r2", "window")]
    assert attribute(SEEN_TWICE, events(event("e", "u1", "B", minutes=70)), window=hour).rows.num_rows == 0


def test_a_request_id_naming_an_item_it_did_not_show_is_not_guessed_by_time() -> None:
    # r1 showed A and B; the click names r1 but item C, which r2 showed 10 minutes earlier.
    result = attribute(SEEN_TWICE, events(event("e1", "u1", "C", minutes=20, request_id="r1")))
    assert result.rows.num_rows == 0
    assert (result.considered, result.unattributed) == (1, 1)


def test_events_of_other_responses_and_users_are_not_considered() -> None:
    result = attribute(
        SEEN_TWICE,
        events(
            event("other-response", "u1", "A", minutes=20, request_id="r-elsewhere"),
            event("other-user", "u9", "A", minutes=20),
            event("empty-id", "u1", "A", minutes=20, request_id=""),  # an empty id is no id
        ),
    )
    assert matched(result.rows) == [("empty-id", "r2", "window")]
    assert result.considered == 1


def test_each_event_counts_once_and_only_clicks_and_purchases_count() -> None:
    result = attribute(
        SEEN_TWICE,
        events(
            event("e1", "u1", "A", minutes=20, request_id="r1"),
            event("e1", "u1", "A", minutes=21, request_id="r1"),  # delivered twice
            event("v", "u1", "A", minutes=20, action="view"),
            event("c", "u1", "A", minutes=20, action="add_to_cart"),
            event("p", "u1", "A", minutes=30, action="purchase", request_id="r2", price=3.0, quantity=2),
        ),
    )
    assert matched(result.rows) == [("e1", "r1", "request_id"), ("p", "r2", "request_id")]
    assert result.rows.column("timestamp").to_pylist()[0] == at(20)


def test_the_impressions_user_and_arm_are_kept() -> None:
    # A click posted under another user id still counts for the user (and arm) it was shown to.
    shown_to = impressions(shown("r1", "u1", ["A"], arm="canary"))
    result = attribute(shown_to, events(event("e1", "someone-else", "A", minutes=1, request_id="r1")))
    assert result.rows.select(["user_id", "arm"]).to_pylist() == [{"user_id": "u1", "arm": "canary"}]


# ------------------------------------------------------------------------------------------------
# Metrics

# control: u1 (r1, r2) clicks r1's A twice and buys two at 10.0; u2 (r3) does nothing.
# canary: u3 clicks and buys B without request ids (no price, no quantity); u4 clicks D, buys C at 5.0.
SHOWN = impressions(
    shown("r1", "u1", ["A", "B"], minutes=0),
    shown("r2", "u1", ["A", "C"], minutes=30),
    shown("r3", "u2", ["B", "C"], minutes=0),
    shown("r4", "u3", ["A", "B"], arm="canary", minutes=0),
    shown("r5", "u4", ["C", "D"], arm="canary", minutes=0),
    shown("x1", "u1", ["A", "B"], minutes=0, experiment="another"),
)
ACTED = events(
    event("e1", "u1", "A", minutes=5, request_id="r1"),
    event("e2", "u1", "A", minutes=6, request_id="r1"),
    event("e3", "u1", "A", minutes=10, request_id="r1", action="purchase", price=10.0, quantity=2),
    event("e4", "u3", "B", minutes=50),
    event("e5", "u3", "B", minutes=60, action="purchase"),
    event("e6", "u4", "D", minutes=1, request_id="r5"),
    event("e7", "u4", "C", minutes=2, request_id="r5", action="purchase", price=5.0),
)


def test_per_arm_counts_and_metrics_by_hand() -> None:
    result = analyze(SHOWN, ACTED, experiment_id=EXPERIMENT, arms=["control", "canary", "empty"])
    control, canary, empty = result.arms
    assert [control.arm, canary.arm, empty.arm] == ["control", "canary", "empty"]
    counts = ("users", "responses", "impressions", "clicks", "clicked_impressions", "purchases", "converted_responses")
    assert [getattr(control, c) for c in counts] == [2, 3, 6, 2, 1, 1, 1]
    assert [getattr(canary, c) for c in counts] == [2, 2, 4, 2, 2, 2, 2]
    assert (control.revenue, canary.revenue) == (20.0, 5.0)
    assert control.ctr.value == pytest.approx(1 / 6)
    assert control.conversion.value == pytest.approx(1 / 3)
    assert control.revenue_per_impression.value == pytest.approx(20 / 6)
    assert (canary.ctr.value, canary.conversion.value, canary.revenue_per_impression.value) == (0.5, 1.0, 1.25)
    assert empty.users == 0 and empty.ctr.value is None and empty.ctr.ci_low is None
    assert result.attribution is not None
    assert result.attribution.model_dump() == {"considered": 7, "by_request_id": 5, "by_window": 2, "unattributed": 0}
    ctr = next(c for c in result.comparisons if c.arm == "canary" and c.metric == "ctr")
    assert ctr.difference.value == pytest.approx(0.5 - 1 / 6)
    assert ctr.relative_difference == pytest.approx(2.0)
    assert result.decision.action == "continue"  # 2 users per arm
    assert "minimum sample" in result.decision.reason


def test_the_user_is_the_unit_of_variance() -> None:
    # Control's CTR: u1 clicked 1 of 4 impressions, u2 0 of 2. R = 1/6; residuals y - R n =
    # (1/3, -1/3), their variance 2/9; Var(R) = 2/9 / (2 users * mean(n)^2 = 18) = 1/81.
    r = ratio(np.array([1.0, 0.0]), np.array([4.0, 2.0]))
    assert r.value == pytest.approx(1 / 6)
    assert r.variance == pytest.approx(1 / 81)
    assert ratio(np.array([1.0]), np.array([4.0])).variance is None  # one user: no interval
    assert ratio(np.array([0.0]), np.array([0.0])).value is None


def test_the_result_is_the_metrics_endpoints_body() -> None:
    result = analyze(SHOWN, ACTED, experiment_id=EXPERIMENT, start=T0, end=at(120))
    body = result.model_dump(mode="json")
    assert ExperimentMetrics.model_validate_json(result.model_dump_json()) == result
    assert set(body) >= {"arms", "comparisons", "decision", "sample_progress", "min_users_per_arm", "alpha"}
    arm = body["arms"][1]
    for metric in ("ctr", "conversion", "revenue_per_impression"):
        assert set(arm[metric]) == {"value", "ci_low", "ci_high"}
    assert set(body["comparisons"][0]) >= {"difference", "p_value", "p_value_always_valid", "significant"}
    assert body["decision"]["action"] in ("promote", "rollback", "continue")
    assert 0 <= body["sample_progress"] <= 1


def test_no_impressions_is_an_answer_not_an_error() -> None:
    result = analyze(impressions(), events(), experiment_id=EXPERIMENT, control="stable", arms=["stable", "canary"])
    assert [a.arm for a in result.arms] == ["stable", "canary"]
    assert result.decision.action == "continue"
    assert "no impressions in the control arm 'stable'" in result.decision.reason


# ------------------------------------------------------------------------------------------------
# From the lake


def test_the_lake_answer_is_the_in_memory_answer_for_the_interval(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    start, end = T0, at(24 * 60)
    assert read_experiment(lake, EXPERIMENT, start, end)[0].num_rows == 0  # no tables yet
    late = impressions(shown("r9", "u1", ["A"], minutes=24 * 60 + 1))  # after `end`
    lake.write(
        lake.uri("bronze", "impressions"),
        pa.concat_tables([SHOWN, late]),
        partition_by=IMPRESSIONS_PARTITION,
    )
    early = events(event("e0", "u1", "A", minutes=-5, request_id="r1"))  # before `start`
    lake.write(lake.uri("bronze", "events"), pa.concat_tables([ACTED, early]), partition_by=EVENTS_PARTITION)

    read = experiment_metrics(lake, EXPERIMENT, start, end, arms=["control", "canary"])
    in_memory = analyze(SHOWN, ACTED, experiment_id=EXPERIMENT, arms=["control", "canary"], start=start, end=end)
    assert read == in_memory
    # Partitions are UTC days: an interval given in another timezone reads the same rows.
    tokyo = timezone(timedelta(hours=9))  # 12:00 UTC is 21:00 there, on the same day; +14 h is not
    kiribati = timezone(timedelta(hours=14))
    for zone in (tokyo, kiribati):
        assert experiment_metrics(lake, EXPERIMENT, start.astimezone(zone), end, arms=["control", "canary"]) == read
    with pytest.raises(ValueError, match="timezone-aware"):
        read_experiment(lake, EXPERIMENT, start.replace(tzinfo=None), end)
    with pytest.raises(ValueError, match="must be after"):
        read_experiment(lake, EXPERIMENT, end, start)
