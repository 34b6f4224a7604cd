"""Experiments that start and end without a person: publishing a model pair as `canary` starts a
canary experiment (`start_canary`), and the hourly `towerflow_experiments` DAG reviews every
running experiment and ends it when the analysis decides (`review`).

A canary experiment splits a surface's users into `stable` (the rest) and `canary` (a configured
share, both models on the `canary` label), and remembers the version whose publication started
it (`Experiment.canary_version`). That is how an automatic experiment is told from one a person
started: a publication replaces the first kind and leaves the second alone.

Moving model labels is the registry's (models/), which this package does not import: `review`
takes the move as a callable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from experiments.domain import (
    CONTROL,
    DEFAULT_SURFACE,
    MODELS,
    STABLE,
    AlreadyStopped,
    Arm,
    Experiment,
    SurfaceBusy,
)

if TYPE_CHECKING:
    from experiments.analysis import ArmHealth, DecisionPolicy, ExperimentMetrics
    from experiments.store import ExperimentStore
    from towerflow.lake import Lake
    from towerflow.settings import ExperimentSettings

log = logging.getLogger(__name__)

#: The canary arm's name and the models.config label it serves.
CANARY = "canary"
#: A review's outcome: the analysis's three, or `skipped` (nothing to measure yet).
Outcome = Literal["promote", "rollback", "continue", "skipped"]


# -- starting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryStart:
    """What `start_canary` did.

    Attributes:
        experiment: the canary experiment running for the version (started now, or kept), or
            None when none runs for it.
        replaced: the earlier canary experiment stopped to make room, if any.
        reason: what happened and why, in words (for the task log).
    """

    experiment: Experiment | None
    replaced: Experiment | None
    reason: str

    @property
    def started(self) -> bool:
        return self.experiment is not None


def canary_arms(share: float) -> list[Arm]:
    """`stable` with 100 - `share` percent of the users, `canary` with `share` (both models on
    the `canary` label)."""
    return [
        Arm(name=STABLE, share=100 - share),
        Arm(name=CANARY, share=share, models=dict.fromkeys(MODELS, CANARY)),
    ]


def start_canary(
    store: ExperimentStore,
    version: int,
    share: float,
    *,
    surface: str = DEFAULT_SURFACE,
    at: datetime | None = None,
) -> CanaryStart:
    """Start `stable` vs `canary` on `surface` for the pair just published as `canary`.

    Safe to repeat (a retried publish task): a canary experiment of `version` that runs is kept,
    and one that has ended (decided) is not started again.

    Args:
        store: the experiments database.
        version: the version the `canary` label now points at (both models).
        share: percent of the surface's users the canary arm gets; 0 starts nothing.
        surface: where it runs.
        at: when it starts (default now).

    Returns:
        What was done; a person's experiment running on the surface is left alone, and then
        nothing starts (the reason says so).
    """
    if share <= 0:
        return CanaryStart(None, None, f"no canary experiment for version {version}: the canary share is 0 (off)")
    mine = [e for e in store.list(surface=surface) if e.canary_version == version]
    running = store.running().get(surface)
    if running is not None and running.canary_version == version:
        return CanaryStart(running, None, f"canary experiment {running.id} of version {version} runs already")
    if mine:
        ended = mine[0]
        return CanaryStart(
            None,
            None,
            f"no canary experiment for version {version}: experiment {ended.id} tested it and ended "
            f"({ended.decision or 'no decision'})",
        )
    replaced = None
    if running is not None and running.canary_version is None:
        return CanaryStart(
            None,
            None,
            f"no canary experiment for version {version}: experiment {running.id} ({running.name!r}), started "
            f"by a person, runs on {surface!r}; it is left alone (stop it, then `towerflow experiments create "
            f"--arm stable:{100 - share:g} --arm canary:{share:g}:retrieval=canary,ranking=canary`)",
        )
    if running is not None:
        try:
            replaced = store.stop(
                running.id,
                decision="inconclusive",
                reason=f"replaced: version {version} was published as canary before a decision on "
                f"version {running.canary_version}",
                at=at,
            )
        except AlreadyStopped:  # the experiments DAG decided it in between
            replaced = None
    try:
        experiment = store.create(
            name=f"canary v{version}",
            surface=surface,
            arms=canary_arms(share),
            at=at,
            canary_version=version,
        )
    except SurfaceBusy as err:  # someone started one in between
        return CanaryStart(None, replaced, f"no canary experiment for version {version}: {err}")
    what = f"started canary experiment {experiment.describe()}"
    if replaced is not None:
        what += f"; it replaces experiment {replaced.id} (version {replaced.canary_version})"
    return CanaryStart(experiment, replaced, what)


# -- deciding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    """One running experiment's review.

    Attributes:
        experiment: as it is after the review (stopped when it was decided).
        outcome: `promote`, `rollback` or `continue` (the analysis's decision), or `skipped`.
        reason: why, in words: the decision's reason, and what moved on `promote`.
        metrics: what the decision was taken on; None when skipped.
    """

    experiment: Experiment
    outcome: Outcome
    reason: str
    metrics: ExperimentMetrics | None = None


def decision_policy(settings: ExperimentSettings) -> DecisionPolicy:
    """The decision rule as configured (`TOWERFLOW_EXPERIMENT_*`): the hourly DAG and the
    metrics route decide alike."""
    from experiments.analysis import DecisionPolicy

    return DecisionPolicy(
        alpha=settings.experiment_alpha,
        min_users_per_arm=settings.experiment_min_users_per_arm,
        max_users_per_arm=settings.experiment_max_users_per_arm,
    )


def control_arm(experiment: Experiment) -> str:
    """The arm the others are compared with: the one called `control`, else the first that
    serves `stable` for every model, else the first arm."""
    names = [a.name for a in experiment.arms]
    if CONTROL in names:
        return CONTROL
    on_stable = [a.name for a in experiment.arms if set(a.models.values()) == {STABLE}]
    return on_stable[0] if on_stable else names[0]


def review(
    store: ExperimentStore,
    lake: Lake,
    end: datetime,
    policy: DecisionPolicy,
    promote: Callable[[Experiment, Arm], str],
    *,
    health: Mapping[str, Mapping[str, ArmHealth]] | None = None,
    progress: Callable[[str], None] = log.info,
) -> list[Review]:
    """Decide every running experiment on its impressions and events from its start to `end`
    (`experiments.analysis.experiment_metrics`), and act:

    - `promote`: `promote(experiment, winning arm)` moves `stable` to the arm's versions and says
      what moved; then the experiment stops with decision `promote`;
    - `rollback`: the experiment stops with decision `rollback` (`inconclusive` when no variant
      lost: the maximum sample passed without a winner); the model labels stay as they are:
      stopping the experiment is what takes the variant's traffic away;
    - `continue`: nothing changes.

    Each experiment's per-arm counts, comparisons and decision go to `progress`. The reason is
    kept with a stopped experiment. An experiment that fails (e.g. a label that cannot move) does
    not keep the others from being reviewed; the failures are raised together at the end.

    Args:
        end: the instant after the last one looked at (the DAG run's data interval end).
        policy: the decision rule.
        promote: moves `stable` to an arm's model versions; returns a description.
        health: per experiment id, per arm, guardrail readings (None: unknown).

    Raises:
        RuntimeError: naming each experiment whose review failed.
    """
    from experiments.analysis import experiment_metrics

    reviews, failed = [], []
    for experiment in sorted(store.running().values(), key=lambda e: int(e.id) if e.id.isdigit() else 0):
        if experiment.started_at >= end:
            reviews.append(Review(experiment, "skipped", f"started at {_at(experiment.started_at)}, after {_at(end)}"))
            progress(f"experiment {experiment.id}: {reviews[-1].reason}; nothing to measure")
            continue
        try:
            metrics = experiment_metrics(
                lake,
                experiment.id,
                experiment.started_at,
                end,
                control=control_arm(experiment),
                arms=[a.name for a in experiment.arms],
                policy=policy,
                health=(health or {}).get(experiment.id),
            )
            for line in describe(experiment, metrics):
                progress(line)
            reviews.append(_act(store, experiment, metrics, promote, end))
            progress(f"experiment {experiment.id}: {reviews[-1].outcome}: {reviews[-1].reason}")
        except Exception as err:  # noqa: BLE001 - reported below, after the others are reviewed
            log.exception("experiment %s: the review failed", experiment.id)
            failed.append(f"{experiment.id} ({err})")
    if failed:
        raise RuntimeError(f"the review of experiment(s) {', '.join(failed)} failed; see the log above")
    return reviews


def _act(
    store: ExperimentStore,
    experiment: Experiment,
    metrics: ExperimentMetrics,
    promote: Callable[[Experiment, Arm], str],
    end: datetime,
) -> Review:
    decision = metrics.decision
    if decision.action == "continue":
        return Review(experiment, "continue", decision.reason, metrics)
    reason = decision.reason
    if decision.action == "promote":
        arm = experiment.arm(decision.arm or "")
        if arm is None:
            raise ValueError(f"the analysis promotes arm {decision.arm!r}, which experiment {experiment.id} lacks")
        # Labels first: if the stop fails, the next review finds the same winner and the move is
        # a no-op; the other order could end an experiment whose winner never moved.
        reason = f"{reason}; {promote(experiment, arm)}"
        stored = "promote"
    else:
        stored = "rollback" if decision.arm is not None else "inconclusive"
    reason = f"{reason} (data up to {_at(end)})"
    try:
        experiment = store.stop(experiment.id, decision=stored, reason=reason)
    except AlreadyStopped as err:  # stopped in between (a person, or a publication replacing it)
        return Review(err.experiment, decision.action, f"{reason}; it was stopped already", metrics)
    return Review(experiment, decision.action, reason, metrics)


def describe(experiment: Experiment, metrics: ExperimentMetrics) -> list[str]:
    """The review in lines for the task log: the experiment, each arm's counts and metrics, each
    comparison with its p-values, and the decision."""
    start = _at(metrics.start) if metrics.start else "?"
    end = _at(metrics.end) if metrics.end else "?"
    lines = [
        f"experiment {experiment.describe()}; data {start} .. {end}; "
        f"{metrics.primary_metric} decides at alpha {metrics.alpha:g}, {metrics.min_users_per_arm} users per arm"
    ]
    for arm in metrics.arms:
        lines.append(
            f"  arm {arm.arm}: users {arm.users}, responses {arm.responses}, impressions {arm.impressions}, "
            f"clicks {arm.clicks}, purchases {arm.purchases}, revenue {arm.revenue:.2f}, "
            f"ctr {_estimate(arm.ctr.value, arm.ctr.ci_low, arm.ctr.ci_high)}, "
            f"conversion {_estimate(arm.conversion.value, arm.conversion.ci_low, arm.conversion.ci_high)}"
        )
    for c in metrics.comparisons:
        relative = "" if c.relative_difference is None else f" ({c.relative_difference:+.1%})"
        difference = "n/a" if c.difference.value is None else f"{c.difference.value:+.4g}"
        lines.append(
            f"  {c.arm} vs {metrics.control} {c.metric}: {difference}{relative}, p={c.p_value:.3g}, "
            f"always-valid p={c.p_value_always_valid:.3g}{' (significant)' if c.significant else ''}"
        )
    decision = metrics.decision
    lines.append(f"  decision: {decision.action}{f' {decision.arm}' if decision.arm else ''}: {decision.reason}")
    return lines


def _estimate(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "n/a"
    interval = f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""
    return f"{value:.4f}{interval}"


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="minutes").replace("+00:00", "Z")
