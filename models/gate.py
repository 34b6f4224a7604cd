"""The deployment gate: what serves next, chosen from the evaluation of every servable recommender.

The options are the trained pair (`two_stage`), its retrieval model alone (`retrieval`: the
ranker has to earn its place) and the servable baselines (`models.baselines.BASELINES`). Each
list variant (`all`, `new`, `unseen`: what the request excludes) is served by its own choice: a
trained option where it beats the best baseline on the primary metric, the best baseline
otherwise, so the served answer is never worse than the simplest thing that works, variant by
variant. The top of the list counts too: a trained option wins only if it is also level with the
best baseline at each of the policy's target metrics (by default recall@10), and winners that
reach the targets' lifts over it (1.1x) come first; the option that wins at depth is not always
the one that wins at the top. When the variants choose differently, the choices are published
as one pair that routes each request by its variant (`models.export.per_variant_modules`). The
choice is published only if the run's data passed the quality suites and it beats production
(by the margin, in every gated variant), or production has fallen below the best baseline and
the choice is closer to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from models.baselines import BASELINES
from scoring.context import DEFAULT_VARIANT, VARIANTS

#: Trained options, preferred in this order when they tie.
TRAINED = ("two_stage", "retrieval")
PRODUCTION = "production"
#: `Decision.recommender` when the variants chose differently (see `Decision.recommenders`).
PER_VARIANT = "per_variant"


@dataclass(frozen=True)
class GatePolicy:
    """What "better" means.

    Attributes:
        metric: the primary metric, e.g. `recall@100`.
        variants: the variants (`all`, `new`, `unseen`; see `models.evaluate`) a choice must hold in.
        margin: a choice must exceed production by more than this (absolute), in every variant.
        targets: metric -> lift: a trained option beats the baselines only if, besides `metric`,
            it is at least level with the best baseline at each of these metrics, and one that
            reaches `lift` times the best baseline's value at each is preferred to one that does
            not (each metric's best baseline on its own).
    """

    metric: str = "recall@100"
    variants: tuple[str, ...] = ("all", "new")
    margin: float = 0.0
    targets: tuple[tuple[str, float], ...] = (("recall@10", 1.1),)


@dataclass(frozen=True)
class Decision:
    """The gate's answer.

    Attributes:
        publish: whether `recommender` is published.
        recommender: what would serve: `two_stage`, `retrieval` or a baseline's name, or
            `per_variant` when the variants chose differently.
        recommenders: what serves each list variant (every one of `scoring.context.VARIANTS`).
        reason: why, in words.
        metric: `<metric>` the decision was made on.
        candidate: the chosen recommender's metric in the first variant.
        production: production's, when there is a production model.
        per_variant: per variant, the chosen value, the best baseline (name, value), production's
            value, the paired differences to both with their bootstrap intervals, and per target
            metric the chosen value, the best baseline there and whether the lift was reached.
    """

    publish: bool
    recommender: str
    reason: str
    metric: str
    candidate: float
    production: float | None
    margin: float
    quality_passed: bool
    forced: bool = False
    per_variant: dict[str, Any] = field(default_factory=dict)
    recommenders: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(report: dict[str, Any], variant: str, name: str, metric: str) -> float | None:
    found = report["metrics"].get(variant, {}).get(name, {}).get(metric)
    return None if found is None else float(found)


def decide(report: dict[str, Any], policy: GatePolicy, quality_passed: bool, force: bool = False) -> Decision:
    """Choose what serves next from an evaluation report (`models.evaluate.evaluate`).

    Args:
        report: metrics per variant and recommender (`two_stage`, `retrieval`, the baselines,
            `production`), and `versus` (paired differences with intervals).
        quality_passed: whether the run's data passed its quality suites.
        force: publish the trained pair regardless of the comparisons (never regardless of
            data quality).

    Raises:
        ValueError: the report lacks a variant, or has no baseline scored on the metric.
    """
    metric, variants = policy.metric, tuple(policy.variants)
    for variant in variants:
        if variant not in report["metrics"]:
            raise ValueError(f"the evaluation has no variant {variant!r}; it has {sorted(report['metrics'])}")

    def value(variant: str, name: str) -> float | None:
        return _value(report, variant, name, metric)

    best: dict[str, tuple[str, float]] = {}
    for variant in variants:
        scored = [(n, score) for n in BASELINES if (score := value(variant, n)) is not None]
        if not scored:
            raise ValueError(f"no baseline is scored on {metric} in {variant}: the gate compares against them")
        best[variant] = max(scored, key=lambda pair: pair[1])

    def target_best(variant: str, target: str) -> tuple[str, float] | None:
        scored = [(n, v) for n in BASELINES if (v := _value(report, variant, n, target)) is not None]
        return max(scored, key=lambda pair: pair[1]) if scored else None

    def reached(variant: str, name: str, target: str, lift: float) -> bool:
        top_baseline = target_best(variant, target)
        if top_baseline is None:  # no baseline scored on it: nothing to hold the option against
            return True
        found = _value(report, variant, name, target)
        return found is not None and found >= lift * top_baseline[1]

    def reaches(variant: str, name: str, floor: bool = False) -> bool:
        """Whether `name` reaches every target lift over the best baseline at that metric (with
        `floor`: is at least level with it)."""
        return all(reached(variant, name, target, 1.0 if floor else lift) for target, lift in policy.targets)

    def choice(variant: str) -> tuple[str, bool]:
        """What serves `variant`, and whether it is a trained option beating the best baseline."""
        options = [n for n in (*TRAINED, *BASELINES) if value(variant, n) is not None]
        baseline = max((value(variant, n) or 0.0 for n in BASELINES if n in options), default=0.0)
        winners = [
            n for n in TRAINED if n in options and (value(variant, n) or 0.0) > baseline and reaches(variant, n, True)
        ]
        on_target = [n for n in winners if reaches(variant, n)]
        # max keeps the first of equals: two_stage, then retrieval
        pool = on_target or winners or [n for n in options if n in BASELINES]
        return max(pool, key=lambda n: value(variant, n) or 0.0), bool(winners)

    evaluated = [v for v in VARIANTS if any(value(v, n) is not None for n in (*TRAINED, *BASELINES))]
    chosen = {v: (TRAINED[0], True) if force else choice(v) for v in (*variants, *evaluated)}
    fallback = chosen[DEFAULT_VARIANT if DEFAULT_VARIANT in chosen else variants[0]]
    recommenders = {v: chosen.get(v, fallback)[0] for v in VARIANTS}
    named = set(recommenders.values())
    recommender = named.pop() if len(named) == 1 else PER_VARIANT
    top = {v: max(value(v, n) or 0.0 for n in (*TRAINED, *BASELINES)) for v in variants}

    def mine(v: str) -> float:
        return value(v, recommenders[v]) or 0.0

    def ratio(values: dict[str, float]) -> float:
        """How near `values` come to the best option in their worst variant (1 = best everywhere)."""
        return min(values[v] / top[v] if top[v] > 0 else 1.0 for v in variants)

    production = {v: value(v, PRODUCTION) for v in variants}
    has_production = all(p is not None for p in production.values())
    per_variant = {}
    for v in variants:
        versus = report.get("versus", {}).get(v, {}).get(recommenders[v], {})
        per_variant[v] = {
            "recommender": recommenders[v],
            recommenders[v]: value(v, recommenders[v]),
            "best_baseline": list(best[v]),
            PRODUCTION: production[v],
            "versus_best_baseline": versus.get("best_baseline", {}).get(metric),
            "versus_production": versus.get(PRODUCTION, {}).get(metric),
            "targets": {
                target: {
                    "lift": lift,
                    recommenders[v]: _value(report, v, recommenders[v], target),
                    "best_baseline": list(at_target) if (at_target := target_best(v, target)) else None,
                    "reached": reached(v, recommenders[v], target, lift) if target_best(v, target) else None,
                }
                for target, lift in policy.targets
            },
        }
    first = variants[0]
    name = f"{'/'.join(variants)}/{metric}"

    def decision(publish: bool, reason: str) -> Decision:
        return Decision(
            publish,
            recommender,
            reason,
            name,
            mine(first),
            production[first],
            policy.margin,
            quality_passed,
            force,
            per_variant,
            recommenders,
        )

    def shown(values: dict[str, float | None]) -> str:
        return ", ".join(f"{v} {values[v] or 0.0:.4f}" for v in variants)

    baseline_text = ", ".join(f"{v} {best[v][0]} {best[v][1]:.4f}" for v in variants)
    served = ", ".join(f"{v} {recommenders[v]} {mine(v):.4f}" for v in variants)
    if all(chosen[v][1] for v in variants):
        why = f"{served}: each beats the best baseline ({baseline_text})"
    elif not any(chosen[v][1] for v in variants):
        why = f"no trained model beats the best baseline ({baseline_text}); {served}"
    else:
        why = f"the trained models beat the best baseline ({baseline_text}) in some variants only; {served}"
    if policy.targets:
        missed = [v for v in variants if not reaches(v, recommenders[v])]
        lifts = " and ".join(f"{target} at {lift:g}x" for target, lift in policy.targets)
        why += f" ({lifts} the best baseline: " + (f"not reached in {', '.join(missed)})" if missed else "reached)")
    if not quality_passed:
        return decision(False, "the run's data failed its quality suites")
    if force:
        return decision(True, "forced by the run's parameters")
    if not has_production:
        return decision(True, f"no production model yet; {why}")
    held = {v: production[v] or 0.0 for v in variants}
    if all(mine(v) > held[v] + policy.margin for v in variants):
        return decision(True, f"{why}, and beats production ({shown(production)}) by more than {policy.margin}")
    production_holds = all(held[v] >= best[v][1] for v in variants)
    if not production_holds and ratio({v: mine(v) for v in variants}) > ratio(held):
        return decision(True, f"production ({shown(production)}) fell below the best baseline; {why}")
    return decision(False, f"{why}, but does not beat production ({shown(production)}) by more than {policy.margin}")
