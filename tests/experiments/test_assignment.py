"""Assignment of users to arms (pure functions): deterministic, sticky, split as configured, and
the same as the experiments.json the gateway used to read."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from experiments.domain import (
    Arm,
    Experiment,
    InvalidExperiment,
    NewExperiment,
    assign,
    bucket,
    control,
    from_legacy_json,
)

USERS = [f"user-{n}" for n in range(100_000)]


def arms(*shares: float) -> tuple[Arm, ...]:
    return tuple(Arm(name=f"arm{n}", share=share) for n, share in enumerate(shares))


@pytest.mark.parametrize("shares", [(90, 10), (50, 50), (50, 30, 20), (98.5, 1.5)])
def test_the_split_is_within_one_point_of_the_shares_over_100k_users(shares: tuple[float, ...]) -> None:
    configured = arms(*shares)
    counts = Counter(assign(configured, "salt-1", user).name for user in USERS)
    for arm in configured:
        assert abs(100 * counts[arm.name] / len(USERS) - arm.share) < 1.0, (arm, counts)


def test_assignment_is_sticky_and_the_salt_reshuffles() -> None:
    configured = arms(50, 50)
    first = [assign(configured, "salt-1", user).name for user in USERS[:5000]]
    assert first == [assign(configured, "salt-1", user).name for user in USERS[:5000]]
    other = [assign(configured, "salt-2", user).name for user in USERS[:5000]]
    moved = sum(a != b for a, b in zip(first, other, strict=True)) / len(first)
    assert 0.4 < moved < 0.6  # independent shuffles disagree on about half the users


def test_a_users_arm_depends_only_on_the_salt_and_the_arms() -> None:
    from datetime import UTC, datetime

    one = Experiment(id="1", name="a", surface="home", salt="s", arms=arms(30, 70), started_at=datetime.now(UTC))
    two = one.model_copy(update={"id": "2", "name": "b", "surface": "email"})
    assert [one.assign(u) for u in USERS[:1000]] == [two.assign(u) for u in USERS[:1000]]
    assert 0 <= bucket("s", "u") < 1 and bucket("s", "u") != bucket("t", "u")


def test_without_an_experiment_everyone_is_control_on_stable() -> None:
    default = control("home")
    assert {default.assign(u).name for u in USERS[:1000]} == {"control"}
    assert default.arms[0].models == {"retrieval": "stable", "ranking": "stable"} and default.id == "default"
    assert control("home") is default and control("email").surface == "email"


def test_an_old_experiments_json_keeps_every_user_in_the_same_arm() -> None:
    """The gateway used to hash `<file id>:<user>` against the cumulative weights: importing the
    file (its id as the salt, weights as percent) must not move anyone."""
    text = (
        '{"id": "ranker-2026-11", "arms": ['
        '{"name": "control", "weight": 3, "models": {"retrieval": "stable", "ranking": "stable"}},'
        '{"name": "treatment", "weight": 1, "models": {"ranking": "canary"}}]}'
    )
    new = from_legacy_json(text)
    assert (new.name, new.salt, new.surface) == ("ranker-2026-11", "ranker-2026-11", "home")
    assert [(a.name, a.share) for a in new.arms] == [("control", 75), ("treatment", 25)]
    assert new.arms[1].models == {"retrieval": "stable", "ranking": "canary"}

    def old(user: str) -> str:  # serving/gateway/experiments.py before the store
        point = int.from_bytes(hashlib.sha256(f"ranker-2026-11:{user}".encode()).digest()[:8], "big") / 2**64 * 4
        return "control" if point < 3 else "treatment"

    assert all(assign(new.arms, new.salt or "", u).name == old(u) for u in USERS[:20_000])


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not json", "file"),
        ('{"arms": []}', "file"),
        ('{"id": "x", "arms": [{"name": "a", "weight": 0}]}', "arms.#1.weight"),
        ('{"id": "x", "arms": [{"name": "a", "weight": 1, "models": {"rankr": "stable"}}]}', "arms.a.models"),
        ('{"id": "x", "arms": []}', "arms"),
    ],
)
def test_an_invalid_old_file_names_the_field(text: str, field: str) -> None:
    with pytest.raises(InvalidExperiment) as err:
        from_legacy_json(text)
    assert err.value.field == field, err.value


def test_every_invalid_field_is_reported_once() -> None:
    with pytest.raises(InvalidExperiment) as err:
        NewExperiment.parse(
            {"name": "", "arms": [{"name": "a", "share": 150}, {"share": 10, "models": {"ranking": "can ary"}}]}
        )
    fields = [field for field, _ in err.value.errors]
    assert fields == ["name", "arms.a.share", "arms.#2.name", "arms.#2.models"], err.value.errors
    assert str(err.value).startswith("name: ")
