"""A real `towerflow_experiments` run (`airflow dags test`, SQLite metadata DB) over a lake of
synthetic impressions and clicks for two running experiments:

- `home`: the canary experiment a publication of version 2 started (10% canary), where canary
  users click three times as often: the run promotes it (`stable` of both models moves to 2, the
  experiment stops with decision `promote`);
- `search`: a person's 50/50 experiment with no difference between its arms: it continues.

The task's log, read as the Airflow UI reads it, shows per-arm counts, p-values and decisions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from experiments.domain import Experiment
from experiments.lifecycle import start_canary
from experiments.store import ExperimentStore
from models import registry
from tests.conftest import failure_of
from tests.dags.test_airflow_ui import read_run
from towerflow.lake import Lake
from towerflow.schemas import BRONZE_EVENTS, BRONZE_IMPRESSIONS, EVENTS_PARTITION, IMPRESSIONS_PARTITION, as_schema
from towerflow.settings import Settings

pytestmark = pytest.mark.integration

DAG_ID = "towerflow_experiments"
RUN_DATE = "2026-12-02"  # a manual run's data interval ends at its logical date: 2026-12-02 00:00 UTC
T0 = datetime(2026, 12, 1, tzinfo=UTC)
MIN_USERS = 300
RESPONSES, ITEMS = 2, 5  # per user; items per response


@dataclass
class Run:
    settings: Settings
    home: Experiment
    search: Experiment
    ok: bool
    log: str


def _publish_toy_pairs(models_dir: Path, root: Path) -> None:
    """Versions 1 and 2 of both models: stable 1, canary 2 (registry checks only saved_model.pb)."""
    for version in (1, 2):
        staged = {}
        for model in registry.MODELS:
            folder = root / str(version) / model
            folder.mkdir(parents=True)
            (folder / "saved_model.pb").write_text(f"{model} {version}")
            staged[model] = folder
        assert registry.publish(models_dir, staged, {"run": version}) == version


def _traffic(
    experiment: Experiment, users: int, ctr: dict[str, float], rng: np.random.Generator
) -> tuple[pa.Table, pa.Table]:
    """Each user gets `RESPONSES` responses of `ITEMS` items in the experiment's arm (assigned as
    the gateway assigns) during the first 20 hours; a shown item is clicked with its arm's `ctr`,
    five minutes later, with the response's request id."""
    ids = [f"{experiment.surface}-u{n}" for n in range(users)]
    arms = np.repeat([experiment.assign(u).name for u in ids], RESPONSES * ITEMS)
    user = np.repeat(ids, RESPONSES * ITEMS)
    request = np.repeat([f"{experiment.id}-r{n}" for n in range(users * RESPONSES)], ITEMS)
    minutes = np.repeat(rng.uniform(0, 20 * 60, users * RESPONSES), ITEMS)
    shown_at = [T0 + timedelta(minutes=float(m)) for m in minutes]
    n = len(user)
    impressions = pa.table(
        {
            "request_id": request,
            "user_id": user,
            "item_id": [f"i{k}" for k in rng.integers(0, 200, n)],
            "position": np.tile(np.arange(1, ITEMS + 1, dtype=np.int32), users * RESPONSES),
            "served_path": ["model"] * n,
            "experiment_id": [experiment.id] * n,
            "arm": arms,
            "timestamp": shown_at,
            "event_date": [t.date() for t in shown_at],
        }
    )
    clicked = np.flatnonzero(rng.random(n) < np.array([ctr[a] for a in arms]))
    clicked_at = [shown_at[i] + timedelta(minutes=5) for i in clicked]
    events = pa.table(
        {
            "event_id": [f"{experiment.id}-e{i}" for i in clicked],
            "user_id": user[clicked],
            "item_id": impressions.column("item_id").take(clicked),
            "action": ["click"] * len(clicked),
            "timestamp": clicked_at,
            "source": ["stream"] * len(clicked),
            "import_batch": ["test"] * len(clicked),
            "source_row": clicked.astype(np.int64),
            "request_id": request[clicked],
            "event_date": [t.date() for t in clicked_at],
        }
    )
    return as_schema(impressions, BRONZE_IMPRESSIONS), as_schema(events, BRONZE_EVENTS)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    home = tmp_path_factory.mktemp("experiments-dag")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TOWERFLOW_HOME", str(home))
        env.setenv("TOWERFLOW_EXPERIMENT_MIN_USERS_PER_ARM", str(MIN_USERS))
        env.delenv("TOWERFLOW_DATABASE_URL", raising=False)
        env.delenv("TOWERFLOW_MODEL_SERVER_TARGET", raising=False)
        env.setenv("TOWERFLOW_MODEL_SERVER_PORT", "1")  # no model server: labels are written directly
        settings = Settings()
        _publish_toy_pairs(settings.models_dir, home / "staged")
        with ExperimentStore.open(settings.experiments_db_url) as store:
            started = start_canary(store, 2, 10, at=T0).experiment
            search = store.create(
                name="ranker on search",
                surface="search",
                arms=[{"name": "control", "share": 50}, {"name": "treatment", "share": 50, "models": {"ranking": "2"}}],
                at=T0,
            )
        assert started is not None
        rng = np.random.default_rng(20)
        shown_home, clicks_home = _traffic(started, 5000, {"stable": 0.03, "canary": 0.09}, rng)
        shown_search, clicks_search = _traffic(search, 1000, {"control": 0.05, "treatment": 0.05}, rng)
        lake = Lake(settings.lake)
        lake.write(
            lake.uri("bronze", "impressions"),
            pa.concat_tables([shown_home, shown_search]),
            partition_by=IMPRESSIONS_PARTITION,
        )
        lake.write(
            lake.uri("bronze", "events"), pa.concat_tables([clicks_home, clicks_search]), partition_by=EVENTS_PARTITION
        )

        from towerflow.airflow_runner import run_dag

        ok, log = run_dag(settings, DAG_ID, RUN_DATE)
        yield Run(settings, started, search, ok, log.read_text(errors="replace"))


def test_the_run_succeeds(run: Run) -> None:
    assert run.ok, failure_of(run.log)


def test_a_canary_that_clearly_wins_is_promoted(run: Run) -> None:
    with ExperimentStore.open(run.settings.experiments_db_url) as store:
        home = store.get(run.home.id)
    assert (home.status, home.decision) == ("stopped", "promote"), home
    assert home.decision_reason is not None
    assert "canary wins" in home.decision_reason and "stable moved to retrieval v2, ranking v2" in home.decision_reason
    for model in registry.MODELS:
        assert registry.labels(run.settings.models_dir, model) == {"stable": 2, "canary": 2, "previous": 1}


def test_no_difference_continues(run: Run) -> None:
    with ExperimentStore.open(run.settings.experiments_db_url) as store:
        search = store.get(run.search.id)
        assert store.running() == {"search": search}
    assert (search.status, search.decision, search.decision_reason) == ("running", None, None)


def test_the_task_log_shows_counts_p_values_and_decisions(run: Run) -> None:
    record = read_run(run.settings, DAG_ID, RUN_DATE, ["decide_experiments"])
    assert record["state"] == "success"
    text = "\n".join(record["tis"]["decide_experiments"]["log"])
    assert "up to 2026-12-02T00:00:00+00:00" in text
    for arm in ("stable", "canary", "control", "treatment"):
        assert f"arm {arm}: users " in text, arm
    assert "canary vs stable ctr:" in text and "always-valid p=" in text
    assert "decision: promote canary: canary wins" in text
    assert f"experiment {run.search.id}: continue: no significant difference yet" in text
