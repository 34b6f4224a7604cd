"""The DAG folder parses, stays light at parse time, and follows the house rules."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "pyspark", "feast", "great_expectations", "tensorflow_recommenders", "deltalake")

PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dags = {
    dag_id: {
        "tags": sorted(dag.tags),
        "owners": sorted({t.owner for t in dag.tasks}),
        "retries": min(t.retries for t in dag.tasks),
        "tasks": [t.task_id for t in dag.topological_sort()] if hasattr(dag, "topological_sort") else sorted(dag.task_ids),
        "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "schedule": str(dag.schedule),
        "doc": bool(dag.doc_md),
        "description": dag.description,
    }
    for dag_id, dag in bag.dags.items()
}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy})
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("airflow")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    }
    code = PARSE.replace("{heavy}", repr(set(HEAVY)))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dagbag_has_no_import_errors(parsed: dict) -> None:
    assert parsed["errors"] == {}
    assert {"towerflow_daily", "towerflow_experiments"} <= set(parsed["dags"])


def test_parsing_imports_no_heavy_library(parsed: dict) -> None:
    assert parsed["heavy"] == []


def test_every_dag_has_tags_owner_docs_and_retries(parsed: dict) -> None:
    for dag_id, dag in parsed["dags"].items():
        assert dag["tags"], dag_id
        assert dag["owners"] == ["towerflow"], dag_id
        assert dag["retries"] >= 2, dag_id
        assert dag["doc"], dag_id


def test_daily_dag_runs_one_day_at_a_time_in_pipeline_order(parsed: dict) -> None:
    daily = parsed["dags"]["towerflow_daily"]
    assert daily["max_active_runs"] == 1
    assert daily["catchup"] is False
    order = daily["tasks"]
    pipeline = [
        "ingest_landing",
        "plan_days",
        "validate_raw",
        "build_silver",
        "build_gold",
        "validate_features",
        "materialize_features",
        "tune",
        "training_set",
        "train_retrieval",
        "train_ranking",
        "evaluate",
        "gate",
    ]
    assert [t for t in order if t in pipeline] == pipeline
    assert order.index("gate") < order.index("refit") < order.index("publish") < order.index("report")
    assert order.index("gate") < order.index("keep_production") < order.index("report")
    assert order[-1] == "monitor"  # the day's monitoring report, once what serves is settled


def test_experiments_dag_decides_hourly_without_catching_up(parsed: dict) -> None:
    experiments = parsed["dags"]["towerflow_experiments"]
    assert experiments["schedule"] == "@hourly"
    assert experiments["catchup"] is False
    assert experiments["max_active_runs"] == 1
    assert experiments["description"] and len(experiments["description"]) <= 120
    assert experiments["tasks"] == ["decide_experiments"]
