"""The DAG's publish task (`towerflow.tasks.publish_models`) on a run folder the gate said yes to:
Airflow's retries finish its precompute, and it waits for a configured model server before a label
moves. Precompute itself (scoring users into Redis) is replaced by a recorder here."""

from __future__ import annotations

import json
import socket
import sys
import types
from pathlib import Path

import pytest

from models.registry import labels
from towerflow import tasks

RUN_DATE = "2025-01-02"
MODELS = ("retrieval", "ranking")


class Crash(Exception):
    """The worker dies here."""


def _gate_said_yes(home: Path, run_date: str, fingerprint: str) -> None:
    run = home / "runs" / run_date
    for model in MODELS:
        folder = run / "staged" / model
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_text(f"{model} {fingerprint}")
    (run / "train.json").write_text(json.dumps({"fingerprint": fingerprint, "run_date": run_date, "training": {}}))
    (run / "gate.json").write_text(json.dumps({"publish": True, "reason": "better than production"}))
    (run / "evaluation").mkdir()
    metrics = {v: {"two_stage": {"recall@100": 0.5}} for v in ("all", "new")}
    (run / "evaluation" / "evaluation.json").write_text(json.dumps({"metrics": metrics}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model server configured and none on the default port: labels are written directly."""
    monkeypatch.delenv("TOWERFLOW_MODEL_SERVER_TARGET", raising=False)
    monkeypatch.setenv("TOWERFLOW_MODEL_SERVER_PORT", str(_free_port()))


def test_a_retry_after_a_crash_before_precompute_precomputes_the_published_version(
    home: Path, monkeypatch: pytest.MonkeyPatch, no_server: None
) -> None:
    _gate_said_yes(home, RUN_DATE, "fp")
    calls = []

    def precompute(run_date: str, version: int, max_users: int = 50_000) -> int:
        calls.append((run_date, version))
        if len(calls) == 1:
            raise Crash("the worker died after publishing, before the recommendations were written")
        return 7

    monkeypatch.setattr(tasks, "precompute", precompute)
    with pytest.raises(Crash):
        tasks.publish_models(RUN_DATE)
    retried = tasks.publish_models(RUN_DATE)
    assert calls == [(RUN_DATE, 1), (RUN_DATE, 1)]
    assert retried["version"] == 1 and retried["precomputed_users"] == 7
    assert labels(home / "models", "retrieval") == {"stable": 1, "canary": 1}

    # A rerun once everything is done writes nothing again.
    assert tasks.publish_models(RUN_DATE)["version"] == 1
    assert calls == [(RUN_DATE, 1), (RUN_DATE, 1)]


def test_a_late_retry_does_not_overwrite_a_newer_versions_precompute(
    home: Path, monkeypatch: pytest.MonkeyPatch, no_server: None
) -> None:
    """An old run retried after a newer one published: its pair is finished, but the newer
    version's recommendations stay."""
    _gate_said_yes(home, "2025-01-02", "fp-old")
    _gate_said_yes(home, "2025-01-03", "fp-new")
    calls = []

    def precompute(run_date: str, version: int, max_users: int = 50_000) -> int:
        calls.append(version)
        if run_date == "2025-01-02" and calls.count(version) == 1:
            raise Crash("the worker died before the recommendations were written")
        return 7

    monkeypatch.setattr(tasks, "precompute", precompute)
    with pytest.raises(Crash):
        tasks.publish_models("2025-01-02")
    assert tasks.publish_models("2025-01-03")["version"] == 2
    assert tasks.publish_models("2025-01-02")["version"] == 1
    assert calls == [1, 2]
    assert labels(home / "models", "retrieval") == {"stable": 1, "canary": 2}


def test_publish_waits_for_a_configured_model_server_even_when_it_does_not_answer_yet(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With TOWERFLOW_MODEL_SERVER_TARGET set (compose: tf-serving:8500) a label moves only after
    the server reports the version AVAILABLE, even if it did not answer when the task started."""
    target = f"127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("TOWERFLOW_MODEL_SERVER_TARGET", target)
    _gate_said_yes(home, RUN_DATE, "fp")
    waited = []

    class Server:
        def __init__(self, address: str) -> None:
            self.address = address

        def wait_until_available(self, model: str, version: int | None = None, **_) -> int:
            assert labels(home / "models", model) == {}, "a label moved before the version was AVAILABLE"
            waited.append((self.address, model, version))
            return version

        def close(self) -> None:
            pass

    # In place of serving.tfs_client: no model server runs here.
    monkeypatch.setitem(sys.modules, "serving.tfs_client", types.SimpleNamespace(ModelClient=Server))
    monkeypatch.setattr(tasks, "precompute", lambda run_date, version, max_users=50_000: 0)
    assert tasks.publish_models(RUN_DATE)["version"] == 1
    assert sorted(waited) == sorted((target, model, 1) for model in MODELS)
    assert labels(home / "models", "ranking") == {"stable": 1, "canary": 1}
