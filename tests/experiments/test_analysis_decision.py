"""The decision rule and its statistics on per-user totals made by hand: promote, roll back or
continue, guardrails, the minimum sample, several variants, and the always-valid p-value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import pandas as pd
import pytest
from pydantic import ValidationError

from experiments.analysis import (
    USER_TOTALS,
    ArmHealth,
    Comparison,
    DecisionPolicy,
    ExperimentMetrics,
    always_valid_p_value,
    always_valid_radius,
    measure,
    wilson,
)

POLICY = DecisionPolicy(min_users_per_arm=1000, guardrail_min_users=100)


def users(arm: str, n: int, clicked: Sequence[int], converted: Sequence[int] = (2,)) -> pd.DataFrame:
    """`n` users of `arm`, each with 10 responses of 10 items; user i clicked `clicked[i % len]`
    impressions and bought in `converted[i % len]` responses (5.0 each)."""
    rows = [
        {
            "arm": arm,
            "user_id": f"{arm}-{i}",
            "responses": 10,
            "impressions": 100,
            "clicks": clicked[i % len(clicked)],
            "clicked_impressions": clicked[i % len(clicked)],
            "purchases": converted[i % len(converted)],
            "converted_responses": converted[i % len(converted)],
            "revenue": 5.0 * converted[i % len(converted)],
        }
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=list(USER_TOTALS))


def run(*parts: pd.DataFrame, policy: DecisionPolicy = POLICY, **kwargs) -> ExperimentMetrics:
    return measure(pd.concat(parts, ignore_index=True), experiment_id="exp", policy=policy, **kwargs)


CONTROL = users("control", 1000, [2, 6])  # CTR 4%


def ctr_of(result: ExperimentMetrics) -> Comparison:
    return next(c for c in result.comparisons if c.metric == "ctr")


def test_a_clear_winner_is_promoted_with_the_reason() -> None:
    result = run(CONTROL, users("treatment", 1000, [3, 7]))  # CTR 5%: +25%
    assert result.decision.action == "promote" and result.decision.arm == "treatment"
    assert "treatment ctr 0.05 vs control 0.04 (+25.0%)" in result.decision.reason
    ctr = ctr_of(result)
    assert ctr.significant and ctr.p_value_always_valid < 0.05 and ctr.p_value < ctr.p_value_always_valid
    assert result.sample_progress == 1.0


def test_nothing_is_decided_before_the_minimum_sample() -> None:
    result = run(users("control", 99, [2, 6]), users("treatment", 99, [3, 7]))
    assert result.decision.action == "continue"
    assert "users per arm: control 99/1000, treatment 99/1000" in result.decision.reason
    assert result.sample_progress == pytest.approx(0.099)


def test_no_difference_continues_until_the_maximum_sample() -> None:
    same = users("treatment", 1000, [2, 6])
    assert run(CONTROL, same).decision.action == "continue"
    capped = DecisionPolicy(min_users_per_arm=1000, max_users_per_arm=1000)
    decision = run(CONTROL, same, policy=capped).decision
    assert (decision.action, decision.arm) == ("rollback", None)
    assert "no significant difference after 1000 users per arm; control stays" in decision.reason


def test_a_variant_losing_the_primary_metric_is_rolled_back() -> None:
    # Same CTR, half the conversion.
    policy = DecisionPolicy(min_users_per_arm=1000, primary_metric="conversion")
    control = users("control", 1000, [2, 6], converted=[1, 3])
    decision = run(control, users("treatment", 1000, [2, 6], converted=[0, 2]), policy=policy).decision
    assert (decision.action, decision.arm) == ("rollback", "treatment")
    assert decision.reason.startswith("control wins: treatment conversion 0.1 vs control 0.2 (-50.0%)")


def test_guardrails_roll_back_before_the_minimum_sample() -> None:
    small = (users("control", 200, [2, 6]), users("treatment", 200, [2, 6]))
    errors = run(*small, health={"treatment": ArmHealth(error_rate=0.05)}).decision
    assert (errors.action, errors.arm) == ("rollback", "treatment")
    assert "error rate 5.00% > 2.00%" in errors.reason
    slow = run(*small, health={"treatment": ArmHealth(latency_p99_ms=900)}).decision
    assert slow.action == "rollback" and "p99 latency 900 ms > 500 ms" in slow.reason
    healthy = run(*small, health={"treatment": ArmHealth(error_rate=0.001, latency_p99_ms=80)}).decision
    assert healthy.action == "continue"
    # A slow control is not the variant's fault.
    assert run(*small, health={"control": ArmHealth(latency_p99_ms=900)}).decision.action == "continue"


def test_a_significant_ctr_drop_beyond_the_threshold_rolls_back() -> None:
    dropped = run(users("control", 300, [2, 6]), users("treatment", 300, [1, 4]))  # -37.5%
    assert dropped.decision.action == "rollback"
    assert "guardrail broken: CTR -37.5% vs control (beyond -10%" in dropped.decision.reason
    # The same drop on too few users, or a drop within the threshold, is not a guardrail.
    few = run(users("control", 50, [2, 6]), users("treatment", 50, [1, 4]))
    assert few.decision.action == "continue"
    tolerant = DecisionPolicy(min_users_per_arm=1000, max_ctr_drop=0.5)
    assert run(users("control", 300, [2, 6]), users("treatment", 300, [1, 4]), policy=tolerant).decision.action == (
        "continue"
    )


def test_several_variants_share_alpha_and_the_best_winner_is_promoted() -> None:
    result = run(CONTROL, users("a", 1000, [3, 7]), users("b", 1000, [4, 8]))
    assert [a.arm for a in result.arms] == ["control", "a", "b"]
    assert (result.decision.action, result.decision.arm) == ("promote", "b")
    assert "(needs < 0.025)" in result.decision.reason


def test_each_look_stands_on_its_own_evidence() -> None:
    # Significant at one look, gone at the next: nothing is carried over to promote on.
    won = run(CONTROL, users("treatment", 1000, [3, 7]))
    later = run(CONTROL, users("treatment", 1000, [2, 6]))
    assert ctr_of(won).significant and won.decision.action == "promote"
    assert ctr_of(later).p_value_always_valid == 1.0 and later.decision.action == "continue"


def test_the_policy_rejects_typos_and_nonsense() -> None:
    with pytest.raises(ValidationError):
        DecisionPolicy(min_user_per_arm=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        DecisionPolicy(alpha=1.5)
    with pytest.raises(ValidationError):
        DecisionPolicy(primary_metric="clicks")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Statistics


def test_the_msprt_p_value_by_hand() -> None:
    # V = 1, tau = 1, d = 3: Lambda = sqrt(1/2) exp(9/4).
    assert always_valid_p_value(3.0, 1.0, 1.0) == pytest.approx(1 / (math.sqrt(0.5) * math.exp(2.25)))
    assert always_valid_p_value(0.0, 1.0, 1.0) == 1.0
    assert always_valid_p_value(0.3, 0.0, 1.0) == 1.0  # no variance: nothing to test
    # Larger differences are stronger evidence, and a single look's z-test is always less strict.
    ps = [always_valid_p_value(d, 1.0, 1.0) for d in (2.0, 3.0, 4.0)]
    assert ps == sorted(ps, reverse=True)
    for d in (2.0, 3.0, 4.0):
        assert always_valid_p_value(d, 1.0, 1.0) > math.erfc(d / math.sqrt(2))


def test_the_always_valid_interval_ends_where_the_p_value_reaches_alpha() -> None:
    variance, tau, alpha = 2.5e-7, 4e-3, 0.05
    radius = always_valid_radius(variance, tau, alpha)
    assert always_valid_p_value(radius, variance, tau) == pytest.approx(alpha)
    assert radius > NormalDist().inv_cdf(1 - alpha / 2) * math.sqrt(variance)  # wider than one look's


def test_clustered_users_widen_the_ctr_interval() -> None:
    # 5% of users click everything, the rest nothing: 50 users' worth of evidence, not 100,000
    # impressions'. The interval must be far wider than the impression-level Wilson interval.
    clustered = pd.concat([users("control", 50, [100]), users("control", 950, [0])], ignore_index=True)
    ctr = run(clustered).arms[0].ctr
    assert ctr.value == pytest.approx(0.05)
    low, high = wilson(0.05, 100_000, 1.959964)
    assert ctr.ci_low is not None and ctr.ci_high is not None
    assert ctr.ci_high - ctr.ci_low > 5 * (high - low)
    assert 0 <= ctr.ci_low < 0.05 < ctr.ci_high <= 1
    assert wilson(0.5, 100, 1.959964) == pytest.approx((0.4038, 0.5962), abs=1e-4)
