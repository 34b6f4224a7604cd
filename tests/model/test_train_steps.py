"""Training in three steps (training set, retrieval, ranking), each in its own process as Airflow
runs them, stages the same models as the three back to back (`train_and_export`); a rerun of a
step with the same inputs does nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from models.lifecycle import (
    build_training_set,
    load_training_set,
    publish_run,
    refit_run,
    train_and_export,
    train_ranking,
    train_retrieval,
)
from models.runs import REFIT, RunPaths
from models.train import TrainingData, TrainParams, training_set
from towerflow.lake import Lake

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[2]
PARAMS = TrainParams(
    retrieval_epochs=1, ranking_epochs=1, dim=16, batch_size=256, rank_candidates=1000, rank_rows=60, seed=3
)
STEP = """
import json, sys
from pathlib import Path
from models.lifecycle import train_ranking, train_retrieval
from models.runs import RunPaths
from models.train import TrainParams
step = {"train_retrieval": train_retrieval, "train_ranking": train_ranking}[sys.argv[1]]
print(json.dumps(step(RunPaths(Path(sys.argv[2])), TrainParams(**json.loads(sys.argv[3])))))
"""


@dataclass
class Runs:
    together: RunPaths
    apart: RunPaths
    lake: Lake


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    lake = Lake(str(tmp_path_factory.mktemp("lake")))
    examples = world.examples.astype({"event_timestamp": "datetime64[us, UTC]"})
    lake.write(lake.uri("gold", "training_examples"), pa.Table.from_pandas(examples, preserve_index=False))
    holdout = world.holdout.astype({"event_timestamp": "datetime64[us, UTC]"})
    # As the ETL records the split it made (models.lifecycle.holdout_of reads it).
    split = {
        "towerflow.cutoff": world.cutoff.date().isoformat(),
        "towerflow.interval": f"{world.cutoff.date()}..{world.run_date - timedelta(days=1)}",
    }
    lake.write(lake.uri("gold", "holdout"), pa.Table.from_pandas(holdout, preserve_index=False), metadata=split)
    lake.write(lake.uri("silver", "items"), pa.Table.from_pandas(world.catalog.frame(), preserve_index=False))
    root = tmp_path_factory.mktemp("runs")

    together = RunPaths(root / "together")
    summary = train_and_export(lake, world.lookup, together, world.run_date, PARAMS)
    assert summary["skipped"] is False

    apart = RunPaths(root / "apart")
    assert build_training_set(lake, world.lookup, apart, world.run_date, PARAMS)["skipped"] is False
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for step in ("train_retrieval", "train_ranking"):
        proc = subprocess.run(
            [sys.executable, "-c", STEP, step, str(apart.root), json.dumps(asdict(PARAMS))],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1])["skipped"] is False
    return Runs(together, apart, lake)


def _holdout(world) -> int:
    return (world.run_date - world.cutoff.date()).days


def _weights(path: Path) -> dict[str, np.ndarray]:
    """A SavedModel's variables by object path (independent of Keras' generated layer names)."""
    from models.tf_env import tensorflow

    reader = tensorflow().train.load_checkpoint(str(path / "variables" / "variables"))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map() if "VARIABLE_VALUE" in key}


def _files(run: RunPaths) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run.root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in run.root.rglob("*")}


def _untimed(record: dict) -> dict:
    training = dict(record["training"], train_seconds=None)
    training["history"] = {
        model: [{k: v for k, v in epoch.items() if k not in ("seconds", "examples_per_s")} for epoch in history]
        for model, history in training["history"].items()
    }
    return {**record, "training": training}


def test_steps_in_their_own_processes_stage_the_same_models_as_back_to_back(world, runs: Runs) -> None:
    from models.data import query_inputs
    from scoring.local import SavedModelPair

    for model in ("retrieval", "ranking"):
        together, apart = _weights(runs.together.staged / model), _weights(runs.apart.staged / model)
        assert sorted(together) == sorted(apart) and together
        for key, value in together.items():
            np.testing.assert_array_equal(value, apart[key], err_msg=f"{model}: {key}")

    users = pd.DataFrame({"user_id": world.examples["user_id"].unique()[:5]})
    query = query_inputs(users, pd.Timestamp(world.cutoff))
    answers = []
    for run in (runs.together, runs.apart):
        pair = SavedModelPair({"retrieval": run.staged / "retrieval"})
        answers.append(pair.predict("retrieval", query))
    assert answers[0]["item_ids"].tolist() == answers[1]["item_ids"].tolist()
    np.testing.assert_array_equal(answers[0]["scores"], answers[1]["scores"])

    together, apart = (json.loads(run.record.read_text()) for run in (runs.together, runs.apart))
    assert _untimed(together) == _untimed(apart)
    assert together["training"]["ranking_rows"] == len(pd.read_parquet(runs.apart.candidates / "candidates.parquet"))


def test_a_rerun_of_each_step_with_the_same_inputs_does_nothing(world, runs: Runs) -> None:
    run = runs.apart
    before = _files(run)
    assert build_training_set(runs.lake, world.lookup, run, world.run_date, PARAMS)["skipped"] is True
    assert train_retrieval(run, PARAMS)["skipped"] is True
    assert train_ranking(run, PARAMS)["skipped"] is True
    assert _files(run) == before

    with pytest.raises(ValueError, match="other parameters"):
        train_retrieval(run, replace(PARAMS, seed=4))


def _lists_as_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """List columns as Python lists, whether read back as Arrow arrays or built as objects."""
    out = frame.copy()
    for name, column in frame.items():
        if isinstance(column.dtype, pd.ArrowDtype) and pa.types.is_list(column.dtype.pyarrow_dtype):
            out[name] = pd.Series(column.array.__arrow_array__().to_pylist(), index=frame.index, dtype=object)
        elif column.dtype == object and any(isinstance(v, list | np.ndarray) for v in column):
            out[name] = column.map(lambda v: None if v is None else [x.item() if hasattr(x, "item") else x for x in v])
    return out


def test_the_training_set_reads_back_as_it_was_built(world, runs: Runs) -> None:
    data = TrainingData(world.examples, world.catalog, world.lookup)
    built = training_set(data, world.cutoff, _holdout(world), PARAMS)
    read = load_training_set(runs.apart.training_set)
    for name in ("early", "full", "users", "items", "window"):
        got, want = _lists_as_lists(getattr(read, name)), _lists_as_lists(getattr(built, name).reset_index(drop=True))
        pd.testing.assert_frame_equal(got, want, obj=name)
    assert (read.cutoff, read.shift, read.examples) == (built.cutoff, built.shift, built.examples)
    assert read.catalog.item_ids.tolist() == built.catalog.item_ids.tolist()
    assert read.catalog.created_at.tolist() == built.catalog.created_at.tolist()


def test_the_ranker_learns_from_a_bounded_seeded_sample_of_users(world) -> None:
    data = TrainingData(world.examples, world.catalog, world.lookup)
    full = training_set(data, world.cutoff, _holdout(world), PARAMS)
    max_users = max(1, len(full.users) // 3)
    capped = replace(PARAMS, ranking_max_rows=max_users * PARAMS.rank_rows)
    one = training_set(data, world.cutoff, _holdout(world), capped)
    two = training_set(data, world.cutoff, _holdout(world), capped)
    users = one.users["user_id"].tolist()
    assert len(users) == max_users < len(full.users)
    assert users == two.users["user_id"].tolist() and users == sorted(users)  # same seed, same users
    assert set(users) <= set(full.users["user_id"])
    assert set(one.window["user_id"]) <= set(users) and len(one.window) < len(full.window)
    pd.testing.assert_frame_equal(one.full, full.full)  # retrieval keeps every user


def _chosen(run: RunPaths, recommender: str) -> None:
    """The gate's decision and a minimal report, as evaluate and gate leave them."""
    run.decision.write_text(json.dumps({"publish": True, "recommender": recommender, "reason": "test"}))
    run.evaluation.mkdir(parents=True, exist_ok=True)
    (run.evaluation / "evaluation.json").write_text(json.dumps({"metrics": {"all": {recommender: {"recall@10": 0.1}}}}))


@pytest.mark.parametrize("recommender", ["two_stage", "als"])
def test_the_gates_choice_is_refit_through_the_run_date_and_that_is_published(
    world, runs: Runs, tmp_path: Path, recommender: str
) -> None:
    import shutil

    from models.registry import METADATA
    from scoring.local import SavedModelPair

    run = RunPaths(tmp_path / "run")
    shutil.copytree(runs.together.root, run.root)
    _chosen(run, recommender)
    done = refit_run(runs.lake, world.lookup, run, world.run_date, PARAMS)
    assert done["refit"] is True and done["skipped"] is False and done["recommender"] == recommender
    assert done["trained_before"] == f"{world.run_date}T00:00:00+00:00" != done["evaluated_cutoff"]
    if recommender == "two_stage":
        refit = json.loads((run.refit / "training_set" / "manifest.json").read_text())
        evaluated = json.loads((run.training_set / "manifest.json").read_text())
        assert refit["rows"]["examples"] == evaluated["rows"]["examples"] + len(world.holdout)
    again = refit_run(runs.lake, world.lookup, run, world.run_date, PARAMS)
    assert again["skipped"] is True

    models_dir = tmp_path / "models"
    published = publish_run(models_dir, run)
    assert published["published"] is True and published["recommender"] == recommender
    meta = json.loads((models_dir / "retrieval" / "1" / METADATA).read_text())
    assert meta["refit"]["trained_before"] == done["trained_before"] and meta["recommender"] == recommender
    if recommender == "two_stage":  # the refit's weights, not the evaluated model's
        served = _weights(models_dir / "retrieval" / "1")
        refit, evaluated = _weights(run.refit / "staged" / "retrieval"), _weights(run.staged / "retrieval")
        assert served.keys() == refit.keys() and all(np.array_equal(v, refit[k]) for k, v in served.items())
        assert any(not np.array_equal(v, evaluated[k]) for k, v in served.items() if k in evaluated)
    else:
        ranking = SavedModelPair({"ranking": models_dir / "ranking" / "1"})
        answer = ranking.predict(
            "ranking", {"item_id": np.array([[b"x"]], dtype=object), "retrieval_score": np.array([[1.0]], np.float32)}
        )
        assert answer["recommender"].tolist() == [b"als"]
    assert (run.refit / REFIT).exists()


def test_nothing_is_refit_when_the_gate_keeps_production(world, runs: Runs, tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "run")
    run.root.mkdir()
    run.decision.write_text(json.dumps({"publish": False, "reason": "production is better"}))
    assert refit_run(runs.lake, world.lookup, run, world.run_date, PARAMS)["refit"] is False
    assert not run.refit.exists()
