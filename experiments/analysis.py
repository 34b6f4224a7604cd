"""Experiment analysis: per-arm metrics, each variant against control, and a decision that stays
valid when it is checked after every batch.

Per arm (an impression is one item shown, a response one recommendation answer):

- `ctr`: impressions with at least one attributed click / impressions;
- `conversion`: responses with at least one attributed purchase / responses;
- `revenue_per_impression`: price x quantity of the attributed purchases / impressions (a purchase
  without a quantity counts 1, without a price 0).

Users are assigned to arms and one user's impressions are correlated (some people click far more
than others), so the user is the unit of variance: each metric is a ratio of per-user sums, its
variance the delta method's over users (Deng, Knoblich, Lu, "Applying the delta method in metric
analytics", KDD 2018). Counting impressions as independent would make intervals too narrow.

The difference to control gets a normal interval and a z-test p-value, valid for one look at a
planned sample size. Decisions use the always-valid p-value of a mixture sequential probability
ratio test (mSPRT; Johari, Koomen, Pekelis, Walsh, "Always valid inference", 2017) with a normal
mixture of sd tau over the difference d of variance V:

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))),   p = min(1, 1 / Lambda)

With no true difference, the chance that p ever falls below alpha, however often it is looked at,
is at most alpha (Ville's inequality), so the hourly DAG may decide after every batch. The paper
reports the running minimum of p over the looks; this module reports each look's own. The
guarantee is the same, since a decision is taken only at a look where p < alpha; no state is
carried between runs, and a difference that was significant once and has since reversed is not
acted on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from experiments.attribution import DEFAULT_WINDOW, Attribution, attribute, connect, read_experiment

if TYPE_CHECKING:
    from towerflow.lake import Lake

MetricName = Literal["ctr", "conversion", "revenue_per_impression"]
Action = Literal["promote", "rollback", "continue"]

#: Each metric as (numerator, denominator) columns of the per-user totals.
RATIOS: dict[MetricName, tuple[str, str]] = {
    "ctr": ("clicked_impressions", "impressions"),
    "conversion": ("converted_responses", "responses"),
    "revenue_per_impression": ("revenue", "impressions"),
}
PROPORTIONS = frozenset({"ctr", "conversion"})
#: The columns of `user_totals`: one row per (arm, user).
USER_TOTALS = (
    "arm",
    "user_id",
    "responses",
    "impressions",
    "clicks",
    "clicked_impressions",
    "purchases",
    "converted_responses",
    "revenue",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DecisionPolicy(_Model):
    """When a variant wins, loses or breaks a guardrail.

    Attributes:
        primary_metric: the metric a variant must win (or loses) on.
        alpha: the chance of declaring a winner or loser when no arm differs, over every look;
            split evenly across the variants (Bonferroni).
        min_users_per_arm: no promotion or loss before every arm has this many users.
        max_users_per_arm: once every arm has this many users with no winner, control stays
            (rollback); None runs until a difference shows.
        mixture_sd: the mSPRT mixture's sd relative to the pooled metric: the size of the
            relative lifts the test is most sensitive to (0.1: about +-10%).
        max_error_rate: a variant whose error rate exceeds this is rolled back.
        max_latency_p99_ms: a variant whose p99 latency exceeds this is rolled back.
        max_ctr_drop: a variant whose CTR is significantly lower than control's, by more than
            this share of control's, is rolled back (before the minimum sample too).
        guardrail_min_users: users each arm needs before the CTR guardrail is read.
    """

    primary_metric: MetricName = "ctr"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_users_per_arm: int = Field(default=1000, ge=2)
    max_users_per_arm: int | None = Field(default=None, ge=2)
    mixture_sd: float = Field(default=0.1, gt=0)
    max_error_rate: float = Field(default=0.02, ge=0, le=1)
    max_latency_p99_ms: float = Field(default=500.0, gt=0)
    max_ctr_drop: float = Field(default=0.1, ge=0, lt=1)
    guardrail_min_users: int = Field(default=100, ge=2)


class ArmHealth(_Model):
    """An arm's operational readings (e.g. from Prometheus), for the guardrails; None: unknown."""

    error_rate: float | None = Field(default=None, ge=0, le=1)
    latency_p99_ms: float | None = Field(default=None, ge=0)


class Estimate(_Model):
    """A value with its interval; None where there is no data (or too little for an interval)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None


class ArmMetrics(_Model):
    """One arm's counts and metrics; intervals at 1 - alpha.

    Attributes:
        users: distinct users shown something (the unit of variance).
        responses: recommendation responses.
        impressions: items shown (a response of 10 items is 10 impressions).
        clicks: attributed clicks (an impression clicked twice counts 2 here).
        clicked_impressions: impressions with at least one click (the CTR's numerator).
        purchases: attributed purchases.
        converted_responses: responses with at least one purchase (the conversion's numerator).
        revenue: price x quantity of the attributed purchases.
        sample_progress: users / the policy's minimum, at most 1.
    """

    arm: str
    users: int
    responses: int
    impressions: int
    clicks: int
    clicked_impressions: int
    purchases: int
    converted_responses: int
    revenue: float
    ctr: Estimate
    conversion: Estimate
    revenue_per_impression: Estimate
    sample_progress: float


class Comparison(_Model):
    """A variant against control on one metric.

    Attributes:
        difference: variant - control, with the fixed-horizon interval at 1 - alpha.
        difference_always_valid: the same difference with the always-valid interval (the
            mSPRT's confidence sequence at the per-variant alpha): safe to read at every look.
        relative_difference: difference / control's value; None when control's is 0.
        p_value: two-sided z-test; valid for a single planned look only.
        p_value_always_valid: the mSPRT's 1/Lambda at this look (at most 1).
        significant: `p_value_always_valid` < alpha / number of variants.
    """

    arm: str
    metric: MetricName
    control_value: float | None
    variant_value: float | None
    difference: Estimate
    difference_always_valid: Estimate
    relative_difference: float | None
    p_value: float
    p_value_always_valid: float
    significant: bool


class Decision(_Model):
    """What to do with the experiment: `promote` `arm` to stable, `rollback` (end the experiment,
    control serves; `arm` is the variant that lost or broke a guardrail) or `continue`."""

    action: Action
    arm: str | None = None
    reason: str


class AttributionCounts(_Model):
    """How the clicks and purchases were matched to impressions (see experiments.attribution)."""

    considered: int
    by_request_id: int
    by_window: int
    unattributed: int


class ExperimentMetrics(_Model):
    """What `GET /v1/experiments/{id}/metrics` returns and the experiments DAG decides on."""

    experiment_id: str
    start: datetime | None = None
    end: datetime | None = None
    control: str
    primary_metric: MetricName
    alpha: float
    min_users_per_arm: int
    sample_progress: float = Field(description="the least-filled arm's users / min_users_per_arm, at most 1")
    arms: list[ArmMetrics]
    comparisons: list[Comparison]
    decision: Decision
    attribution: AttributionCounts | None = None


# ------------------------------------------------------------------------------------------------
# Entry points: from the lake, from tables, from per-user totals.


def experiment_metrics(
    lake: Lake,
    experiment_id: str,
    start: datetime,
    end: datetime,
    *,
    control: str = "control",
    arms: Sequence[str] | None = None,
    policy: DecisionPolicy | None = None,
    health: Mapping[str, ArmHealth] | None = None,
    window: timedelta = DEFAULT_WINDOW,
) -> ExperimentMetrics:
    """The experiment's metrics and decision from the lake's impressions and events in
    [`start`, `end`) (experiments.attribution.read_experiment). Arguments as for `analyze`."""
    impressions, events = read_experiment(lake, experiment_id, start, end)
    return analyze(
        impressions,
        events,
        experiment_id=experiment_id,
        control=control,
        arms=arms,
        policy=policy,
        health=health,
        window=window,
        start=start,
        end=end,
    )


def analyze(
    impressions: pa.Table,
    events: pa.Table,
    *,
    experiment_id: str,
    control: str = "control",
    arms: Sequence[str] | None = None,
    policy: DecisionPolicy | None = None,
    health: Mapping[str, ArmHealth] | None = None,
    window: timedelta = DEFAULT_WINDOW,
    start: datetime | None = None,
    end: datetime | None = None,
) -> ExperimentMetrics:
    """Attribute the events, total them per user and measure (pure).

    Args:
        impressions: `bronze/impressions` rows; only `experiment_id`'s are used.
        events: `bronze/events` rows (clicks and purchases are attributed).
        experiment_id: the experiment.
        control: the control arm's name.
        arms: the configured arms, so one without impressions yet is listed; arms found in the
            rows are listed too.
        policy: the decision rule; `DecisionPolicy()` when None.
        health: per arm, its error rate and p99 latency for the guardrails.
        window: attribution window for events without a request id.
        start: reported with the result.
        end: reported with the result.
    """
    if "experiment_id" in impressions.column_names:
        impressions = impressions.filter(pc.equal(impressions.column("experiment_id"), experiment_id))
    attribution = attribute(impressions, events, window=window)
    return measure(
        user_totals(impressions, attribution.rows),
        experiment_id=experiment_id,
        control=control,
        arms=arms,
        policy=policy,
        health=health,
        attribution=attribution,
        start=start,
        end=end,
    )


def user_totals(impressions: pa.Table, attributed: pa.Table) -> pd.DataFrame:
    """Per (arm, user), the sums every metric is a ratio of (`USER_TOTALS`), sorted by both.

    Args:
        impressions: rows with `arm`, `user_id`, `request_id`.
        attributed: `experiments.attribution.ATTRIBUTED` rows for those impressions.
    """
    with connect() as con:
        con.register("impressions", impressions.select(["arm", "user_id", "request_id"]))
        acted = ["arm", "user_id", "request_id", "position", "action", "quantity", "price"]
        con.register("attributed", attributed.select(acted))
        totals = con.execute(_USER_TOTALS).df()
    return totals.astype(dict.fromkeys(USER_TOTALS[2:-1], "int64") | {"revenue": "float64"})


_USER_TOTALS = """
WITH shown AS (
    SELECT arm, user_id, count(DISTINCT request_id) AS responses, count(*) AS impressions
    FROM impressions GROUP BY arm, user_id
), acted AS (
    SELECT arm, user_id,
           count(*) FILTER (WHERE action = 'click') AS clicks,
           count(DISTINCT (request_id, position)) FILTER (WHERE action = 'click') AS clicked_impressions,
           count(*) FILTER (WHERE action = 'purchase') AS purchases,
           count(DISTINCT request_id) FILTER (WHERE action = 'purchase') AS converted_responses,
           sum(coalesce(price, 0) * coalesce(quantity, 1)) FILTER (WHERE action = 'purchase') AS revenue
    FROM attributed GROUP BY arm, user_id
)
SELECT arm, user_id, responses, impressions,
       coalesce(clicks, 0) AS clicks, coalesce(clicked_impressions, 0) AS clicked_impressions,
       coalesce(purchases, 0) AS purchases, coalesce(converted_responses, 0) AS converted_responses,
       coalesce(revenue, 0.0) AS revenue
FROM shown LEFT JOIN acted USING (arm, user_id)
ORDER BY arm, user_id
"""


def measure(
    users: pd.DataFrame,
    *,
    experiment_id: str,
    control: str = "control",
    arms: Sequence[str] | None = None,
    policy: DecisionPolicy | None = None,
    health: Mapping[str, ArmHealth] | None = None,
    attribution: Attribution | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> ExperimentMetrics:
    """Metrics, comparisons and the decision from per-user totals (`user_totals`' frame).

    Arguments as for `analyze`; `attribution` only fills the result's counts.
    """
    policy = policy or DecisionPolicy()
    names = [*(arms or ()), *sorted(set(users["arm"]) - set(arms or ()))]
    names = [control, *(n for n in dict.fromkeys(names) if n != control)]
    z = NormalDist().inv_cdf(1 - policy.alpha / 2)
    groups = dict(tuple(users.groupby("arm")))
    empty = users.iloc[:0]
    ratios = {name: _ratios(groups.get(name, empty)) for name in names}
    arm_metrics = [_arm_metrics(name, groups.get(name, empty), ratios[name], z, policy) for name in names]
    variants = names[1:]
    alpha_k = policy.alpha / max(1, len(variants))
    comparisons = [
        _compare(arm, metric, ratios[control][metric], ratios[arm][metric], z, alpha_k, policy)
        for arm in variants
        for metric in RATIOS
    ]
    return ExperimentMetrics(
        experiment_id=experiment_id,
        start=start,
        end=end,
        control=control,
        primary_metric=policy.primary_metric,
        alpha=policy.alpha,
        min_users_per_arm=policy.min_users_per_arm,
        sample_progress=min(a.sample_progress for a in arm_metrics),
        arms=arm_metrics,
        comparisons=comparisons,
        decision=decide(arm_metrics, comparisons, control=control, policy=policy, health=health),
        attribution=None
        if attribution is None
        else AttributionCounts(
            considered=attribution.considered,
            by_request_id=attribution.by_request_id,
            by_window=attribution.by_window,
            unattributed=attribution.unattributed,
        ),
    )


# ------------------------------------------------------------------------------------------------
# The decision.


def decide(
    arms: Sequence[ArmMetrics],
    comparisons: Sequence[Comparison],
    *,
    control: str = "control",
    policy: DecisionPolicy | None = None,
    health: Mapping[str, ArmHealth] | None = None,
) -> Decision:
    """Promote, roll back or continue, with the reason in words.

    In order: a variant breaking a guardrail (error rate, p99 latency, a significant CTR drop
    beyond `max_ctr_drop`) is rolled back, at any sample size; before every arm has
    `min_users_per_arm` users the experiment continues; then the variant that wins the primary
    metric most (always-valid p below alpha / variants) is promoted; when every variant has lost
    significantly, or reached `max_users_per_arm` without a winner, control stays (rollback).

    Args:
        arms: `ExperimentMetrics.arms` (control among them).
        comparisons: `ExperimentMetrics.comparisons`.
        control: the control arm.
        policy: thresholds; `DecisionPolicy()` when None.
        health: per arm, readings for the error-rate and latency guardrails.
    """
    policy = policy or DecisionPolicy()
    by_name = {a.arm: a for a in arms}
    if control not in by_name or by_name[control].impressions == 0:
        return Decision(action="continue", reason=f"no impressions in the control arm {control!r} yet")
    variants = [a for a in arms if a.arm != control]
    if not variants:
        return Decision(action="continue", reason="the experiment has no arm besides control")

    for variant in variants:
        broken = _guardrails(variant, by_name[control], comparisons, policy, (health or {}).get(variant.arm))
        if broken:
            return Decision(action="rollback", arm=variant.arm, reason=f"{variant.arm}: guardrail broken: {broken}")

    short = [a for a in arms if a.users < policy.min_users_per_arm]
    if short:
        progress = ", ".join(f"{a.arm} {a.users}/{policy.min_users_per_arm}" for a in short)
        return Decision(action="continue", reason=f"collecting the minimum sample (users per arm: {progress})")

    primary = [c for c in comparisons if c.metric == policy.primary_metric]
    alpha_k = policy.alpha / len(variants)
    winners = [c for c in primary if c.significant and (c.difference.value or 0.0) > 0]
    if winners:
        best = max(winners, key=lambda c: c.difference.value or 0.0)
        return Decision(action="promote", arm=best.arm, reason=f"{best.arm} wins: {_describe(best, alpha_k)}")
    losers = [c for c in primary if c.significant and (c.difference.value or 0.0) < 0]
    if primary and len(losers) == len(primary):
        worst = min(losers, key=lambda c: c.difference.value or 0.0)
        lost = "; ".join(_describe(c, alpha_k) for c in losers)
        return Decision(action="rollback", arm=worst.arm, reason=f"control wins: {lost}")
    if policy.max_users_per_arm is not None and all(a.users >= policy.max_users_per_arm for a in arms):
        return Decision(
            action="rollback",
            arm=None,
            reason=f"no significant difference after {policy.max_users_per_arm} users per arm; control stays",
        )
    pending = "; ".join(_describe(c, alpha_k) for c in primary)
    return Decision(action="continue", reason=f"no significant difference yet: {pending}")


def _guardrails(
    variant: ArmMetrics,
    control: ArmMetrics,
    comparisons: Sequence[Comparison],
    policy: DecisionPolicy,
    health: ArmHealth | None,
) -> str | None:
    """What the variant breaks, in words, or None."""
    if health is not None and health.error_rate is not None and health.error_rate > policy.max_error_rate:
        return f"error rate {health.error_rate:.2%} > {policy.max_error_rate:.2%}"
    if health is not None and health.latency_p99_ms is not None and health.latency_p99_ms > policy.max_latency_p99_ms:
        return f"p99 latency {health.latency_p99_ms:.0f} ms > {policy.max_latency_p99_ms:.0f} ms"
    if min(variant.users, control.users) < policy.guardrail_min_users:
        return None
    ctr = next((c for c in comparisons if c.arm == variant.arm and c.metric == "ctr"), None)
    if ctr is not None and ctr.significant and ctr.relative_difference is not None:
        if ctr.relative_difference < -policy.max_ctr_drop:
            return (
                f"CTR {ctr.relative_difference:+.1%} vs control (beyond -{policy.max_ctr_drop:.0%}, "
                f"always-valid p={ctr.p_value_always_valid:.3g})"
            )
    return None


def _describe(c: Comparison, alpha: float) -> str:
    relative = "" if c.relative_difference is None else f" ({c.relative_difference:+.1%})"
    return (
        f"{c.arm} {c.metric} {_fmt(c.variant_value)} vs control {_fmt(c.control_value)}{relative}, "
        f"always-valid p={c.p_value_always_valid:.3g} (needs < {alpha:.3g})"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


# ------------------------------------------------------------------------------------------------
# Statistics.


def always_valid_p_value(difference: float, variance: float, mixture_sd: float) -> float:
    """The mSPRT's always-valid p-value, min(1, 1/Lambda), for an observed `difference` of
    `variance` under a normal mixture of sd `mixture_sd` around no difference (module docstring).
    1 when the variance or the mixture is 0 (nothing to test)."""
    if variance <= 0 or mixture_sd <= 0:
        return 1.0
    spread = variance + mixture_sd**2
    log_ratio = 0.5 * math.log(variance / spread) + mixture_sd**2 * difference**2 / (2 * variance * spread)
    return 1.0 if log_ratio <= 0 else math.exp(-log_ratio)


def always_valid_radius(variance: float, mixture_sd: float, alpha: float) -> float:
    """Half-width of the mSPRT's confidence sequence: the differences d0 with Lambda(d0) < 1/alpha
    lie within this of the observed difference, at every look with probability >= 1 - alpha."""
    spread = variance + mixture_sd**2
    return math.sqrt(variance * spread / mixture_sd**2 * (math.log(spread / variance) + 2 * math.log(1 / alpha)))


@dataclass(frozen=True)
class Ratio:
    """sum(numerator) / sum(denominator) over one arm's users (None without a denominator), its
    delta-method variance (None with fewer than two users) and the two sums."""

    value: float | None
    variance: float | None
    numerator: float
    denominator: float


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> Ratio:
    """The ratio of per-user sums and its user-clustered (delta-method) variance:
    Var(sum y / sum n) ~= var_users(y - R n) / (users * mean(n)^2)."""
    total, count = float(denominator.sum()), len(denominator)
    if total <= 0:
        return Ratio(None, None, float(numerator.sum()), total)
    value = float(numerator.sum()) / total
    if count < 2:
        return Ratio(value, None, float(numerator.sum()), total)
    residual = numerator - value * denominator
    variance = float(residual.var(ddof=1)) / (count * (total / count) ** 2)
    return Ratio(value, variance, float(numerator.sum()), total)


def _ratios(users: pd.DataFrame) -> dict[MetricName, Ratio]:
    return {
        metric: ratio(users[num].to_numpy(dtype=float), users[den].to_numpy(dtype=float))
        for metric, (num, den) in RATIOS.items()
    }


def wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion `p` over `n` (possibly an effective, fractional n)."""
    shrink = 1 + z * z / n
    center = (p + z * z / (2 * n)) / shrink
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / shrink
    return max(0.0, center - half), min(1.0, center + half)


def _estimate(metric: MetricName, r: Ratio, z: float) -> Estimate:
    if r.value is None or r.variance is None:
        return Estimate(value=r.value)
    if metric in PROPORTIONS:
        # The clustering widens the interval: n_eff = p(1-p) / Var, never more than the count.
        spread = r.value * (1 - r.value)
        n_eff = r.denominator if r.variance <= 0 or spread <= 0 else min(r.denominator, spread / r.variance)
        low, high = wilson(r.value, n_eff, z)
        return Estimate(value=r.value, ci_low=low, ci_high=high)
    half = z * math.sqrt(r.variance)
    return Estimate(value=r.value, ci_low=max(0.0, r.value - half), ci_high=r.value + half)


def _arm_metrics(
    name: str, users: pd.DataFrame, ratios: Mapping[MetricName, Ratio], z: float, policy: DecisionPolicy
) -> ArmMetrics:
    def total(column: str) -> int:
        return int(users[column].sum())

    return ArmMetrics(
        arm=name,
        users=len(users),
        responses=total("responses"),
        impressions=total("impressions"),
        clicks=total("clicks"),
        clicked_impressions=total("clicked_impressions"),
        purchases=total("purchases"),
        converted_responses=total("converted_responses"),
        revenue=float(users["revenue"].sum()),
        ctr=_estimate("ctr", ratios["ctr"], z),
        conversion=_estimate("conversion", ratios["conversion"], z),
        revenue_per_impression=_estimate("revenue_per_impression", ratios["revenue_per_impression"], z),
        sample_progress=min(1.0, len(users) / policy.min_users_per_arm),
    )


def _compare(
    arm: str,
    metric: MetricName,
    control: Ratio,
    variant: Ratio,
    z: float,
    alpha_k: float,
    policy: DecisionPolicy,
) -> Comparison:
    p_value = p_always = 1.0
    fixed = always = Estimate(value=None)
    relative = None
    if control.value is not None and variant.value is not None:
        point = variant.value - control.value
        relative = point / control.value if control.value else None
        fixed = always = Estimate(value=point)
        if control.variance is not None and variant.variance is not None and control.variance + variant.variance > 0:
            variance = control.variance + variant.variance
            se = math.sqrt(variance)
            p_value = math.erfc(abs(point) / se / math.sqrt(2))
            fixed = Estimate(value=point, ci_low=point - z * se, ci_high=point + z * se)
            # The mixture is centered on no difference, its sd a share of the pooled metric.
            pooled = (control.numerator + variant.numerator) / (control.denominator + variant.denominator)
            tau = policy.mixture_sd * pooled
            if tau > 0:
                p_always = always_valid_p_value(point, variance, tau)
                radius = always_valid_radius(variance, tau, alpha_k)
                always = Estimate(value=point, ci_low=point - radius, ci_high=point + radius)
    return Comparison(
        arm=arm,
        metric=metric,
        control_value=control.value,
        variant_value=variant.value,
        difference=fixed,
        difference_always_valid=always,
        relative_difference=relative,
        p_value=p_value,
        p_value_always_valid=p_always,
        significant=p_always < alpha_k,
    )
