"""Canary experiments started by a publication (`experiments.lifecycle.start_canary`): one per
surface, replaced by the next publication, never over a person's experiment, not restarted by a
retried publish. Reviews (`review`) that roll back, fail or skip; the promotion and the DAG
around it: tests/dags/test_experiments_dag.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from experiments.analysis import DecisionPolicy
from experiments.domain import Arm, Experiment
from experiments.lifecycle import canary_arms, control_arm, review, start_canary
from experiments.store import ExperimentStore
from tests.dags.test_experiments_dag import _traffic
from towerflow.lake import Lake
from towerflow.schemas import EVENTS_PARTITION, IMPRESSIONS_PARTITION

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ExperimentStore]:
    opened = ExperimentStore.open(f"sqlite:///{tmp_path / 'experiments.sqlite3'}")
    yield opened
    opened.close()


def test_a_publication_starts_stable_vs_canary_at_the_share(store: ExperimentStore) -> None:
    done = start_canary(store, 2, 10, at=T0)
    assert done.started and done.replaced is None
    experiment = store.running()["home"]
    assert experiment == done.experiment
    assert experiment.canary_version == 2 and experiment.started_at == T0
    assert [(a.name, a.share, a.models) for a in experiment.arms] == [
        ("stable", 90, {"retrieval": "stable", "ranking": "stable"}),
        ("canary", 10, {"retrieval": "canary", "ranking": "canary"}),
    ]
    assert "started canary experiment" in done.reason


def test_a_retried_publication_keeps_its_experiment(store: ExperimentStore) -> None:
    first = start_canary(store, 2, 10)
    again = start_canary(store, 2, 10)
    assert again.experiment == first.experiment and again.replaced is None
    assert len(store.list()) == 1


def test_the_next_publication_replaces_the_previous_canary_experiment(store: ExperimentStore) -> None:
    first = start_canary(store, 2, 10)
    second = start_canary(store, 3, 20)
    assert first.experiment is not None and second.experiment is not None
    assert second.replaced is not None and second.replaced.id == first.experiment.id
    old = store.get(first.experiment.id)
    assert (old.status, old.decision) == ("stopped", "inconclusive")
    assert "version 3 was published as canary" in (old.decision_reason or "")
    assert store.running()["home"].canary_version == 3
    assert second.experiment.arms[1].share == 20


def test_a_decided_version_is_not_tested_again(store: ExperimentStore) -> None:
    first = start_canary(store, 2, 10)
    assert first.experiment is not None
    store.stop(first.experiment.id, decision="rollback", reason="canary lost")
    again = start_canary(store, 2, 10)
    assert not again.started and "ended (rollback)" in again.reason
    assert store.running() == {}


def test_a_persons_experiment_is_left_alone(store: ExperimentStore) -> None:
    mine = store.create(name="ranker test", arms=[{"name": "control", "share": 50}, {"name": "b", "share": 50}])
    done = start_canary(store, 2, 10)
    assert not done.started and done.replaced is None
    assert f"experiment {mine.id} ('ranker test'), started by a person" in done.reason
    assert store.running()["home"] == mine


def test_share_zero_starts_nothing(store: ExperimentStore) -> None:
    done = start_canary(store, 2, 0)
    assert not done.started and "share is 0" in done.reason
    assert store.list() == []


def test_canary_arms_split_the_users() -> None:
    stable, canary = canary_arms(12.5)
    assert (stable.share, canary.share) == (87.5, 12.5)


def _experiment(*arms: Arm) -> Experiment:
    return Experiment(id="1", name="x", surface="home", salt="s", arms=arms, started_at=T0)


def test_the_control_arm() -> None:
    canary = Arm(name="canary", share=10, models={"ranking": "canary"})
    assert control_arm(_experiment(Arm(name="stable", share=90), canary)) == "stable"
    assert control_arm(_experiment(canary.model_copy(update={"share": 50}), Arm(name="control", share=50))) == "control"
    other = Arm(name="b", share=50, models={"retrieval": "3"})
    assert control_arm(_experiment(other, canary.model_copy(update={"share": 50}))) == "b"


# -- reviews -------------------------------------------------------------------------------------

END = T0 + timedelta(days=1)
POLICY = DecisionPolicy(min_users_per_arm=200)


def _lake_with(tmp_path: Path, experiment: Experiment, ctr: dict[str, float]) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    shown, clicks = _traffic(experiment, 3000, ctr, np.random.default_rng(3))
    lake.write(lake.uri("bronze", "impressions"), shown, partition_by=IMPRESSIONS_PARTITION)
    lake.write(lake.uri("bronze", "events"), clicks, partition_by=EVENTS_PARTITION)
    return lake


def _never(experiment: Experiment, arm: Arm) -> str:
    raise AssertionError("nothing should be promoted")


def test_a_canary_that_clearly_loses_is_rolled_back(store: ExperimentStore, tmp_path: Path) -> None:
    started = start_canary(store, 2, 20, at=T0).experiment
    assert started is not None
    lake = _lake_with(tmp_path, started, {"stable": 0.08, "canary": 0.02})
    lines: list[str] = []

    (done,) = review(store, lake, END, POLICY, _never, progress=lines.append)

    assert done.outcome == "rollback"
    stopped = store.get(started.id)
    assert (stopped.status, stopped.decision) == ("stopped", "rollback")
    assert stopped.decision_reason == done.reason and "guardrail broken" in done.reason
    assert any(line.startswith("  canary vs stable ctr:") and "always-valid p=" in line for line in lines)


def test_a_promotion_that_fails_leaves_the_experiment_running(store: ExperimentStore, tmp_path: Path) -> None:
    started = start_canary(store, 2, 20, at=T0).experiment
    assert started is not None
    lake = _lake_with(tmp_path, started, {"stable": 0.02, "canary": 0.08})

    def broken(experiment: Experiment, arm: Arm) -> str:
        raise OSError("models.config is not writable")

    with pytest.raises(RuntimeError, match=f"experiment\\(s\\) {started.id} \\(models.config is not writable\\)"):
        review(store, lake, END, POLICY, broken)
    assert store.running()["home"] == started


def test_an_experiment_started_after_the_interval_is_skipped(store: ExperimentStore, tmp_path: Path) -> None:
    started = start_canary(store, 2, 10, at=END).experiment
    (done,) = review(store, Lake(str(tmp_path / "lake")), END, POLICY, _never)
    assert done.outcome == "skipped" and done.metrics is None
    assert store.running()["home"] == started
