"""The deployment gate: a candidate is published only if its data passed the quality suites and
it beats the production model on the primary metric by the configured margin."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GatePolicy:
    """What "better" means.

    Attributes:
        metric: the primary metric, e.g. `recall@100`.
        variant: `all` or `new` (see `models.evaluate`).
        stage: `two_stage` (retrieval + ranking) or `retrieval`.
        margin: the candidate must exceed production by more than this (absolute).
    """

    metric: str = "recall@100"
    variant: str = "all"
    stage: str = "two_stage"
    margin: float = 0.0


@dataclass(frozen=True)
class Decision:
    publish: bool
    reason: str
    metric: str
    candidate: float
    production: float | None
    margin: float
    quality_passed: bool
    forced: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(report: dict[str, Any], policy: GatePolicy, quality_passed: bool, force: bool = False) -> Decision:
    """Decide from an evaluation report (`models.evaluate.evaluate`).

    Args:
        report: metrics per variant and recommender; production appears as `production_<stage>`.
        quality_passed: whether the run's data passed its quality suites.
        force: publish regardless of the comparison (never regardless of data quality).
    """
    metrics = report["metrics"][policy.variant]
    name = f"{policy.variant}/{policy.stage}/{policy.metric}"
    candidate = metrics[policy.stage][policy.metric]
    production = metrics.get(f"production_{policy.stage}", {}).get(policy.metric)

    def decision(publish: bool, reason: str) -> Decision:
        return Decision(publish, reason, name, candidate, production, policy.margin, quality_passed, force)

    if not quality_passed:
        return decision(False, "the run's data failed its quality suites")
    if force:
        return decision(True, "forced by the run's parameters")
    if production is None:
        return decision(True, "no production model yet")
    if candidate > production + policy.margin:
        return decision(
            True, f"candidate {candidate:.4f} beats production {production:.4f} by more than {policy.margin}"
        )
    return decision(
        False, f"candidate {candidate:.4f} does not beat production {production:.4f} by more than {policy.margin}"
    )
