"""Issue 20's must-show on simulated traffic: synthetic users whose click probability depends on
their arm. A known lift is found (p < 0.05) and promoted; with no lift, deciding after every batch
declares no winner in at least 95% of 40 seeded repeats, where peeking at the fixed-horizon
p-value would. A known drop is rolled back.

Each user has a click propensity per impression (Beta, mean 4%, so some users click far more than
others); treatment multiplies it by 1 + lift. A batch is `REQUESTS` responses of `K` items to
users drawn at random; a clicked impression leads to a purchase 10% of the time. The lift test
goes through the whole analysis (rows -> attribution -> per-user totals -> metrics -> decision),
with 30% of clicks and half the purchases lacking a request id (the window fallback); the 40
repeats feed the per-user totals straight to `measure`, which a test checks against the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from experiments.analysis import (
    USER_TOTALS,
    Comparison,
    DecisionPolicy,
    ExperimentMetrics,
    analyze,
    measure,
    user_totals,
)
from experiments.attribution import attribute
from towerflow.schemas import TIMESTAMP

K = 10  # items per response
CATALOG = 2000
USERS = 4000
REQUESTS = 1000  # responses per batch
BATCHES = 20
T0 = datetime(2026, 12, 1, tzinfo=UTC)
EXPERIMENT = "sim"
POLICY = DecisionPolicy(min_users_per_arm=500)


@dataclass(frozen=True)
class World:
    """Users, their arms (half each) and click propensities; `lift` is treatment's, relative."""

    users: np.ndarray
    arms: np.ndarray
    propensity: np.ndarray
    lift: float

    @classmethod
    def make(cls, rng: np.random.Generator, lift: float) -> World:
        arms = np.where(rng.random(USERS) < 0.5, "treatment", "control")
        mean, concentration = 0.04, 20.0
        propensity = rng.beta(mean * concentration, (1 - mean) * concentration, USERS)
        return cls(np.char.add("u", np.arange(USERS).astype(str)), arms, propensity, lift)


@dataclass(frozen=True)
class Batch:
    """`REQUESTS` responses: who asked (index into the world's users), when (seconds into the
    batch's hour), the items shown, which were clicked, and which of those bought, at what price
    and quantity."""

    who: np.ndarray
    seconds: np.ndarray
    items: np.ndarray
    clicked: np.ndarray
    bought: np.ndarray
    price: np.ndarray
    quantity: np.ndarray


def traffic(world: World, rng: np.random.Generator) -> Batch:
    who = rng.integers(0, USERS, REQUESTS)
    p = world.propensity[who] * np.where(world.arms[who] == "treatment", 1 + world.lift, 1.0)
    clicked = rng.random((REQUESTS, K)) < p[:, None]
    return Batch(
        who=who,
        seconds=np.sort(rng.uniform(0, 3600, REQUESTS)),
        items=rng.integers(0, CATALOG, (REQUESTS, K)),
        clicked=clicked,
        bought=clicked & (rng.random((REQUESTS, K)) < 0.1),
        price=np.round(rng.uniform(1, 30, (REQUESTS, K)), 2),
        quantity=rng.integers(1, 4, (REQUESTS, K)),
    )


def as_rows(world: World, batch: Batch, index: int, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    """The batch as `bronze/impressions` and `bronze/events` rows (the columns attribution reads)."""
    request_ids = np.char.add(f"b{index}-", np.arange(REQUESTS).astype(str))
    shown_us = int((T0 + timedelta(hours=index)).timestamp() * 1e6) + (batch.seconds * 1e6).astype(np.int64)
    item_ids = np.char.add("i", batch.items.astype(str))
    impressions = pa.table(
        {
            "request_id": np.repeat(request_ids, K),
            "user_id": np.repeat(world.users[batch.who], K),
            "item_id": item_ids.reshape(-1),
            "position": pa.array(np.tile(np.arange(1, K + 1), REQUESTS), pa.int32()),
            "experiment_id": np.full(REQUESTS * K, EXPERIMENT),
            "arm": np.repeat(world.arms[batch.who], K),
            "timestamp": pa.array(np.repeat(shown_us, K)).cast(TIMESTAMP),
        }
    )
    # Clicks 0-10 minutes after the impression, purchases up to an hour after the click.
    row, col = np.nonzero(batch.clicked)
    click_us = shown_us[row] + rng.integers(0, 600_000_000, len(row))
    buy = batch.bought[row, col]
    buy_us = click_us[buy] + rng.integers(0, 3_600_000_000, int(buy.sum()))
    n_clicks, n_buys = len(row), int(buy.sum())
    events = pa.table(
        {
            "event_id": np.concatenate(
                [
                    np.char.add(f"b{index}-c", np.arange(n_clicks).astype(str)),
                    np.char.add(f"b{index}-p", np.arange(n_buys).astype(str)),
                ]
            ),
            "user_id": np.concatenate([world.users[batch.who[row]], world.users[batch.who[row[buy]]]]),
            "item_id": np.concatenate([item_ids[row, col], item_ids[row, col][buy]]),
            "action": np.array(["click"] * n_clicks + ["purchase"] * n_buys),
            "timestamp": pa.array(np.concatenate([click_us, buy_us])).cast(TIMESTAMP),
            "request_id": pa.array(
                np.concatenate([request_ids[row], request_ids[row[buy]]]),
                mask=np.concatenate([rng.random(n_clicks) < 0.3, rng.random(n_buys) < 0.5]),
            ),
            "quantity": np.concatenate([np.zeros(n_clicks, np.int64), batch.quantity[row, col][buy]]),
            "price": np.concatenate([np.zeros(n_clicks), batch.price[row, col][buy]]),
        }
    )
    return impressions, events


def as_totals(world: World, batch: Batch) -> np.ndarray:
    """Per user of the world, `USER_TOTALS[2:]` of the batch: what attribution would count."""
    per_response = [
        np.ones(REQUESTS),
        np.full(REQUESTS, K),
        batch.clicked.sum(axis=1),
        batch.clicked.sum(axis=1),
        batch.bought.sum(axis=1),
        batch.bought.any(axis=1),
        (batch.bought * batch.price * batch.quantity).sum(axis=1),
    ]
    return np.stack([np.bincount(batch.who, weights=v, minlength=USERS) for v in per_response])


def totals_frame(world: World, totals: np.ndarray) -> pd.DataFrame:
    seen = totals[0] > 0
    columns = {"arm": world.arms[seen], "user_id": world.users[seen]}
    return pd.DataFrame(columns | dict(zip(USER_TOTALS[2:], totals[:, seen], strict=True)))


def ctr(result: ExperimentMetrics) -> Comparison:
    return next(c for c in result.comparisons if c.metric == "ctr")


def test_a_known_lift_is_found_and_the_winner_promoted() -> None:
    rng = np.random.default_rng(20)
    world = World.make(rng, lift=0.2)
    impressions: list[pa.Table] = []
    events: list[pa.Table] = []
    result = None
    for index in range(BATCHES):  # the DAG's hourly look, over everything since the start
        shown, acted = as_rows(world, traffic(world, rng), index, rng)
        impressions.append(shown)
        events.append(acted)
        result = analyze(
            pa.concat_tables(impressions),
            pa.concat_tables(events),
            experiment_id=EXPERIMENT,
            policy=POLICY,
        )
        if result.decision.action != "continue":
            break
    assert result is not None
    assert (result.decision.action, result.decision.arm) == ("promote", "treatment"), result.decision.reason
    assert min(a.users for a in result.arms) >= POLICY.min_users_per_arm
    found = ctr(result)
    assert found.p_value < 0.05 and found.p_value_always_valid < 0.05
    assert found.relative_difference is not None and 0.05 < found.relative_difference < 0.5
    assert found.difference_always_valid.ci_low is not None and found.difference_always_valid.ci_low > 0
    assert result.attribution is not None
    assert result.attribution.by_window > 0 and result.attribution.by_request_id > 0
    assert result.attribution.unattributed == 0


def test_the_shortcut_totals_are_what_attribution_counts() -> None:
    rng = np.random.default_rng(7)
    world = World.make(rng, lift=0.0)
    batch = traffic(world, rng)
    shown, acted = as_rows(world, batch, 0, rng)
    piped = user_totals(shown, attribute(shown, acted).rows).set_index(["arm", "user_id"]).sort_index()
    direct = totals_frame(world, as_totals(world, batch)).set_index(["arm", "user_id"]).sort_index()
    assert list(piped.index) == list(direct.index)
    exact = ["responses", "impressions", "clicks", "purchases", "revenue"]
    assert np.allclose(piped[exact].to_numpy(float), direct[exact].to_numpy(float))
    # A click without a request id on an item the user was shown twice goes to the later
    # impression, so clicked impressions may merge; rarely.
    for column in ("clicked_impressions", "converted_responses"):
        assert abs(piped[column].sum() - direct[column].sum()) <= 0.01 * direct[column].sum()


def looks(seed: int, lift: float) -> list[tuple[ExperimentMetrics, bool]]:
    """Each batch's result with the decision, and whether a fixed-horizon test peeked at the same
    look (every arm at the minimum sample, z-test p < alpha) would have declared a difference."""
    rng = np.random.default_rng(seed)
    world = World.make(rng, lift)
    totals = np.zeros((len(USER_TOTALS) - 2, USERS))
    out = []
    for _ in range(BATCHES):
        totals += as_totals(world, traffic(world, rng))
        result = measure(totals_frame(world, totals), experiment_id=EXPERIMENT, policy=POLICY)
        enough = min(a.users for a in result.arms) >= POLICY.min_users_per_arm
        out.append((result, enough and ctr(result).p_value < POLICY.alpha))
    return out


def test_with_no_lift_no_winner_in_95_percent_of_40_repeats_deciding_after_every_batch() -> None:
    decided, peeked = [], 0
    for seed in range(40):
        checks = looks(seed, lift=0.0)
        first = next((r.decision for r, _ in checks if r.decision.action != "continue"), None)
        if first is not None:
            decided.append((seed, first.action, first.reason))
        peeked += any(naive for _, naive in checks)
    assert sum(action == "promote" for _, action, _ in decided) <= 2, decided
    assert len(decided) <= 2, decided  # nor a loser: the always-valid test is two-sided
    # The world has power to fool a peeking fixed-horizon test, so the bound above is earned.
    assert peeked >= 4, peeked


def test_a_known_drop_is_rolled_back() -> None:
    first = next(r.decision for r, _ in looks(3, lift=-0.3) if r.decision.action != "continue")
    assert (first.action, first.arm) == ("rollback", "treatment")
