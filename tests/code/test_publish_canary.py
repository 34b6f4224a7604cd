"""Issue 20's "after a pipeline run that publishes a better model, the canary arm receives its
share of traffic with no manual step": the DAG's publish task (`towerflow.tasks.publish_models`)
on run folders the gate said yes to, over a model base of toy versions, starts stable vs canary
on `home`, and the gateway's assignment (`Experiment.assign`, what the recommendations route
calls) sends the configured share of users to the canary's versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.store import ExperimentStore
from models.registry import labels
from tests.code.test_publish_task import _free_port, _gate_said_yes
from towerflow import tasks
from towerflow.settings import Settings

USERS = 10_000


@pytest.fixture(autouse=True)
def no_server_no_precompute(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model server (labels are written directly) and no Redis to precompute into."""
    monkeypatch.delenv("TOWERFLOW_MODEL_SERVER_TARGET", raising=False)
    monkeypatch.setenv("TOWERFLOW_MODEL_SERVER_PORT", str(_free_port()))
    monkeypatch.setattr(tasks, "precompute", lambda run_date, version, max_users=50_000: 0)


def _store() -> ExperimentStore:
    return ExperimentStore.open(Settings().experiments_db_url)


def test_publishing_a_better_pair_gives_the_canary_its_share_of_users(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWERFLOW_CANARY_SHARE", "10")
    _gate_said_yes(home, "2025-01-02", "fp-1")
    first = tasks.publish_models("2025-01-02")
    assert first["version"] == 1
    assert first["experiment"]["started"] is False  # version 1 is stable too: nothing to compare
    _gate_said_yes(home, "2025-01-03", "fp-2")

    published = tasks.publish_models("2025-01-03")

    assert published["version"] == 2 and published["experiment"]["started"] is True
    with _store() as store:
        experiment = store.running()["home"]
    assert experiment.id == published["experiment"]["id"] and experiment.canary_version == 2
    canary = experiment.arm("canary")
    assert canary is not None and canary.models == {"retrieval": "canary", "ranking": "canary"}
    for model in ("retrieval", "ranking"):
        assert labels(home / "models", model) == {"stable": 1, "canary": 2}
    served = [experiment.assign(f"user-{n}") for n in range(USERS)]
    share = sum(arm.name == "canary" for arm in served) / USERS
    assert abs(share - 0.10) < 0.01, share
    assert {arm.name for arm in served} == {"stable", "canary"}

    # A retry of the publish task keeps the experiment (and every user's arm).
    assert tasks.publish_models("2025-01-03")["experiment"]["id"] == experiment.id


def test_the_next_publication_replaces_the_canary_experiment_but_not_a_persons(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for day, fingerprint in (("2025-01-02", "fp-1"), ("2025-01-03", "fp-2")):
        _gate_said_yes(home, day, fingerprint)
        tasks.publish_models(day)
    _gate_said_yes(home, "2025-01-04", "fp-3")
    with _store() as store:
        auto = store.running()["home"]

    assert tasks.publish_models("2025-01-04")["experiment"]["started"] is True

    with _store() as store:
        replaced = store.get(auto.id)
        assert (replaced.status, replaced.decision) == ("stopped", "inconclusive")
        now = store.running()["home"]
        assert now.canary_version == 3
        store.stop(now.id)
        mine = store.create(name="hand-made", arms=[{"name": "control", "share": 50}, {"name": "b", "share": 50}])
    _gate_said_yes(home, "2025-01-05", "fp-4")
    result = tasks.publish_models("2025-01-05")
    assert result["version"] == 4 and result["experiment"]["started"] is False
    assert "started by a person" in result["experiment"]["reason"]
    with _store() as store:
        assert store.running()["home"] == mine


def test_share_zero_publishes_without_an_experiment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWERFLOW_CANARY_SHARE", "0")
    for day, fingerprint in (("2025-01-02", "fp-1"), ("2025-01-03", "fp-2")):
        _gate_said_yes(home, day, fingerprint)
        result = tasks.publish_models(day)
    assert result["version"] == 2 and result["experiment"]["started"] is False
    with _store() as store:
        assert store.list() == []
