"""The gate's choice on hand-made reports: a trained model serves a variant only where it beats
the best baseline, the best option serves it otherwise (each variant its own), and production is
replaced only by something better in every gated variant (or when it fell below the baselines)."""

from __future__ import annotations

import pytest

from models.gate import GatePolicy, decide

METRIC = "recall@10"


def report(**by_name: tuple[float, float]) -> dict:
    """`name=(all, new)` values of recall@10 per recommender; every baseline defaults to 0.01."""
    values = {"popular": (0.01, 0.01), "repeat_purchase": (0.01, 0.01), "item_knn": (0.01, 0.01)}
    values |= {"als": (0.01, 0.01), "repeat_als": (0.01, 0.01)} | by_name
    return {
        "metrics": {
            variant: {name: {METRIC: pair[n]} for name, pair in values.items()}
            for n, variant in enumerate(("all", "new"))
        }
    }


POLICY = GatePolicy(metric=METRIC)


def test_a_model_beating_every_baseline_in_both_variants_serves() -> None:
    d = decide(
        report(two_stage=(0.20, 0.06), retrieval=(0.15, 0.05), repeat_purchase=(0.18, 0.03), als=(0.1, 0.05)),
        POLICY,
        True,
    )
    assert d.publish and d.recommender == "two_stage"
    assert d.per_variant["all"]["best_baseline"] == ["repeat_purchase", 0.18]
    assert d.per_variant["new"]["best_baseline"] == ["als", 0.05]


def test_the_ranker_earns_its_place_or_retrieval_serves_alone() -> None:
    d = decide(
        report(two_stage=(0.19, 0.051), retrieval=(0.21, 0.06), repeat_purchase=(0.18, 0.03), als=(0.1, 0.05)),
        POLICY,
        True,
    )
    assert d.recommender == "retrieval"


def test_a_model_losing_in_one_variant_gives_that_variant_to_the_best_baseline() -> None:
    # The model wins `all` but loses `new` to ALS and repeat-then-ALS (tied).
    d = decide(
        report(
            two_stage=(0.16, 0.03),
            retrieval=(0.13, 0.02),
            repeat_purchase=(0.155, 0.037),
            als=(0.117, 0.048),
            repeat_als=(0.158, 0.048),
        ),
        POLICY,
        True,
    )
    assert d.publish and d.recommender == "per_variant"
    assert d.recommenders == {"all": "two_stage", "new": "als", "unseen": "als"}  # `unseen` follows `new`
    assert d.per_variant["new"]["recommender"] == "als" and d.candidate == 0.16
    assert "in some variants only" in d.reason


def test_one_choice_everywhere_is_published_as_it_is() -> None:
    d = decide(report(two_stage=(0.1, 0.01), retrieval=(0.1, 0.01), repeat_als=(0.16, 0.05)), POLICY, True)
    assert d.recommender == "repeat_als" and set(d.recommenders.values()) == {"repeat_als"}
    assert "no trained model beats the best baseline" in d.reason


def test_production_is_compared_with_each_variants_choice() -> None:
    # Per variant the choices (two_stage 0.20 in `all`, ALS 0.05 in `new`) beat production in both.
    values = {"two_stage": (0.20, 0.02), "retrieval": (0.1, 0.01), "repeat_purchase": (0.18, 0.03), "als": (0.1, 0.05)}
    d = decide(report(**values, production=(0.19, 0.045)), POLICY, True)
    assert d.publish and d.recommenders["all"] == "two_stage" and d.recommenders["new"] == "als"
    assert not decide(report(**values, production=(0.19, 0.055)), POLICY, True).publish


def test_production_stays_unless_beaten_in_every_variant() -> None:
    base = {"two_stage": (0.20, 0.06), "retrieval": (0.1, 0.01), "repeat_purchase": (0.18, 0.03), "als": (0.1, 0.05)}
    assert not decide(report(**base, production=(0.21, 0.05)), POLICY, True).publish
    assert decide(report(**base, production=(0.19, 0.055)), POLICY, True).publish
    margin = GatePolicy(metric=METRIC, margin=0.02)
    assert not decide(report(**base, production=(0.19, 0.055)), margin, True).publish


def test_production_that_fell_below_the_baselines_is_replaced_by_the_nearest() -> None:
    # Production (an old two-stage) now loses `new` to ALS by far; the new model is no better,
    # but repeat-then-ALS holds in both variants.
    d = decide(
        report(
            two_stage=(0.15, 0.02),
            retrieval=(0.1, 0.01),
            repeat_purchase=(0.15, 0.03),
            als=(0.1, 0.05),
            repeat_als=(0.16, 0.05),
            production=(0.17, 0.02),
        ),
        POLICY,
        True,
    )
    assert d.publish and d.recommenders["all"] == "repeat_als" and d.recommenders["new"] in ("als", "repeat_als")
    assert "fell below the best baseline" in d.reason


def test_bad_data_and_force() -> None:
    good = report(two_stage=(0.2, 0.06), retrieval=(0.1, 0.01))
    assert not decide(good, POLICY, quality_passed=False, force=True).publish
    forced = decide(report(two_stage=(0.001, 0.001), retrieval=(0.1, 0.01)), POLICY, True, force=True)
    assert forced.publish and forced.recommender == "two_stage" and set(forced.recommenders.values()) == {"two_stage"}


def test_only_the_configured_variants_count() -> None:
    only_all = GatePolicy(metric=METRIC, variants=("all",))
    d = decide(report(two_stage=(0.2, 0.001), retrieval=(0.1, 0.001), als=(0.1, 0.05)), only_all, True)
    assert d.recommenders["all"] == "two_stage" and set(d.per_variant) == {"all"}
    assert d.recommenders["new"] == "als"  # evaluated, not gated: still served by its best option
    with pytest.raises(ValueError, match="no variant"):
        decide({"metrics": {"all": {}}}, POLICY, True)


def two_depths(values: dict[str, dict[str, tuple[float, float]]]) -> dict:
    """`{variant: {name: (recall@10, recall@100)}}` as report metrics; most-popular and
    repeat-purchase default to (0.05, 0.3)."""
    return {
        variant: {
            name: {"recall@10": pair[0], "recall@100": pair[1]}
            for name, pair in ({"popular": (0.05, 0.3), "repeat_purchase": (0.05, 0.3)} | rows).items()
        }
        for variant, rows in values.items()
    }


def test_a_winner_that_also_leads_at_the_top_of_the_list_comes_first() -> None:
    # Retrieval wins at depth in `all` but stays under 1.1x the best baseline at recall@10; the
    # two-stage pair beats the baseline at depth too and reaches the lift at the top, so it serves.
    # In `new` both reach it and the one better at depth serves.
    values = {
        "all": {"two_stage": (0.3056, 0.5916), "retrieval": (0.2963, 0.6071), "als": (0.2698, 0.5056)},
        "new": {"two_stage": (0.1237, 0.4204), "retrieval": (0.1206, 0.4349), "item_knn": (0.1089, 0.4203)},
    }
    metrics = two_depths(values)
    d = decide({"metrics": metrics}, GatePolicy(), True)
    assert d.recommenders["all"] == "two_stage" and d.recommenders["new"] == "retrieval"
    top = d.per_variant["all"]["targets"]["recall@10"]
    assert top == {"lift": 1.1, "two_stage": 0.3056, "best_baseline": ["als", 0.2698], "reached": True}
    assert "reached)" in d.reason

    # Without the target the better one at depth serves `all`, and the report says it missed.
    plain = decide({"metrics": metrics}, GatePolicy(targets=()), True)
    assert plain.recommenders["all"] == "retrieval"
    strict = decide({"metrics": metrics}, GatePolicy(targets=(("recall@10", 1.2),)), True)
    assert strict.recommenders["all"] == "retrieval" and "not reached in all, new" in strict.reason
    assert strict.per_variant["all"]["targets"]["recall@10"]["reached"] is False


def test_a_model_winning_at_depth_but_behind_at_the_top_does_not_serve() -> None:
    # Retrieval leads at recall@100 but reaches 0.43x the best baseline at recall@10: the two-stage
    # pair, ahead at both depths, serves `new`. In `all` neither is level at the top, so the best
    # baseline on the primary metric serves, and the reason says no trained model beat them.
    values = {
        "all": {"two_stage": (0.12, 0.56), "retrieval": (0.07, 0.65), "popular": (0.16, 0.6493), "als": (0.18, 0.57)},
        "new": {"two_stage": (0.13, 0.63), "retrieval": (0.0435, 0.66), "item_knn": (0.1014, 0.5921)},
    }
    metrics = two_depths(values)
    d = decide({"metrics": metrics}, GatePolicy(), True)
    assert d.recommenders["new"] == "two_stage" and d.recommenders["all"] == "popular"
    assert d.recommender == "per_variant" and "in some variants only" in d.reason
    assert d.per_variant["new"]["targets"]["recall@10"]["reached"] is True
    # Without targets only the primary metric counts and retrieval serves both.
    assert set(decide({"metrics": metrics}, GatePolicy(targets=()), True).recommenders.values()) == {"retrieval"}


def test_a_target_no_baseline_is_scored_on_does_not_hold_a_model_back() -> None:
    # The hand-made reports above score recall@10 only: a recall@100 target has nothing to compare.
    d = decide(report(two_stage=(0.20, 0.06)), GatePolicy(metric=METRIC, targets=(("recall@100", 1.1),)), True)
    assert d.recommender == "two_stage"
    assert d.per_variant["all"]["targets"]["recall@100"]["reached"] is None
