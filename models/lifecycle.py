"""The model half of the daily run, one function per DAG task: train, evaluate, gate, publish.

Each takes the run's date and plain arguments, reads what earlier tasks left under the run's
folder (`<home>/runs/<run date>/`), writes its own output there, and returns a small summary
(paths, versions, metrics) for XCom. Reruns of a task give the same files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.lake import Lake
from models.data import at_utc, load_catalog, load_interactions
from models.gate import GatePolicy, decide
from models.train import TrainingData, TrainParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPaths:
    """Where one run's model artefacts live."""

    root: Path

    @property
    def staged(self) -> Path:
        return self.root / "staged"

    @property
    def record(self) -> Path:
        return self.root / "train.json"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def decision(self) -> Path:
        return self.root / "gate.json"


def cutoff_of(run_date: date, holdout_days: int) -> datetime:
    """The holdout is the last `holdout_days` days before the run date."""
    return at_utc(run_date - timedelta(days=holdout_days))


def read_examples(lake: Lake, table: str) -> pd.DataFrame:
    data = lake.read(lake.uri("gold", table), columns=["user_id", "item_id", "action", "event_timestamp"])
    if data is None:
        raise FileNotFoundError(f"gold/{table} does not exist yet: run the ETL first")
    frame = data.to_pandas()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame.sort_values(["event_timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def data_versions(lake: Lake) -> dict[str, int | None]:
    tables = [
        ("silver", "interactions"),
        ("silver", "items"),
        ("gold", "user_features"),
        ("gold", "item_features"),
        ("gold", "user_history"),
        ("gold", "training_examples"),
        ("gold", "holdout"),
    ]
    return {f"{layer}/{name}": lake.version(lake.uri(layer, name)) for layer, name in tables}


def fingerprint(versions: dict[str, Any], params: TrainParams, cutoff: datetime, code: str) -> str:
    """What a model was trained from: a rerun with the same inputs has the same fingerprint."""
    blob = json.dumps(
        {"data": versions, "params": asdict(params), "cutoff": cutoff.isoformat(), "code": code},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def code_version() -> str:
    from importlib.metadata import version

    return version("towerflow")


def train_and_export(
    lake: Lake,
    features,
    run: RunPaths,
    run_date: date,
    holdout_days: int,
    params: TrainParams,
    progress=log.info,
) -> dict[str, Any]:
    """Train both models on data before the cutoff and export them to `run.staged`.

    Args:
        features: point-in-time lookup (entity frame, service name) -> frame (Feast).
    """
    from models.export import export
    from models.train import train

    cutoff = cutoff_of(run_date, holdout_days)
    versions = data_versions(lake)
    print_ = fingerprint(versions, params, cutoff, code_version())
    if run.record.exists() and (run.staged / "ranking").exists():
        done = json.loads(run.record.read_text())
        if done.get("fingerprint") == print_:  # same inputs, same models: a rerun trains nothing
            progress(f"models for these inputs are already staged in {run.staged}")
            return {"staged": str(run.staged), "fingerprint": print_, "examples": done["training"]["examples"]}
    data = TrainingData(read_examples(lake, "training_examples"), load_catalog(lake), features, versions)
    trained = train(data, cutoff, holdout_days, params, progress)
    meta = {
        "run_date": run_date.isoformat(),
        "cutoff": cutoff.isoformat(),
        "holdout_days": holdout_days,
        "params": asdict(params),
        "data_versions": versions,
        "code_version": code_version(),
        "fingerprint": print_,
        "trained_at": run_date.isoformat(),
    }
    export(trained, run.staged, cutoff, meta)
    run.root.mkdir(parents=True, exist_ok=True)
    run.record.write_text(json.dumps({**meta, "training": trained.record}, indent=2, default=str))
    progress(f"exported retrieval and ranking to {run.staged}")
    return {"staged": str(run.staged), "fingerprint": meta["fingerprint"], "examples": trained.record["examples"]}


def evaluate_run(
    lake: Lake,
    features,
    run: RunPaths,
    run_date: date,
    holdout_days: int,
    production: dict[str, Path] | None,
    progress=log.info,
    candidate: dict[str, Path] | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate the staged candidate (or `candidate`), the production model and the baselines on
    the holdout; reports go to the run's evaluation folder (or `out_dir`)."""
    from models.evaluate import best_baseline, evaluate, prepare, write_report

    cutoff = cutoff_of(run_date, holdout_days)
    data = prepare(
        read_examples(lake, "training_examples"),
        read_examples(lake, "holdout"),
        load_interactions(lake, before=cutoff),
        load_catalog(lake),
        cutoff,
        features,
    )
    candidate = candidate or {"retrieval": run.staged / "retrieval", "ranking": run.staged / "ranking"}
    report = evaluate(data, candidate, production, progress=progress)
    report["run_date"] = run_date.isoformat()
    json_path, html_path = write_report(report, out_dir or run.evaluation, f"towerflow evaluation, run {run_date}")
    summary = {"report": str(html_path), "json": str(json_path)}
    for variant in ("all", "new"):
        m = report["metrics"][variant]["two_stage"]
        name, value = best_baseline(report, variant, "recall@10")
        summary[f"{variant}_recall@10"] = round(m["recall@10"], 4)
        summary[f"{variant}_recall@100"] = round(m["recall@100"], 4)
        summary[f"{variant}_best_baseline@10"] = f"{name} {value:.4f}"
    progress(f"evaluation: {summary}")
    return summary


def gate_run(run: RunPaths, policy: GatePolicy, quality_passed: bool, force: bool = False) -> dict[str, Any]:
    """Decide whether to publish; the decision and its numbers go into the run's folder and report."""
    report = json.loads((run.evaluation / "evaluation.json").read_text())
    decision = decide(report, policy, quality_passed, force)
    run.decision.write_text(json.dumps(decision.as_dict(), indent=2))
    report["gate"] = decision.as_dict()
    (run.evaluation / "evaluation.json").write_text(json.dumps(report, indent=2, default=str))
    from models.evaluate import write_report

    write_report(report, run.evaluation, f"towerflow evaluation, run {report.get('run_date', '')}")
    return decision.as_dict()


def publish_run(models_dir: Path, run: RunPaths, wait_until_loaded=None) -> dict[str, Any]:
    """Publish the staged pair if the gate said so (and it is not published already)."""
    from models.registry import publish, version_with

    decision = json.loads(run.decision.read_text())
    record = json.loads(run.record.read_text())
    if not decision["publish"]:
        return {"published": False, "reason": decision["reason"]}
    existing = version_with(models_dir, record["fingerprint"])
    if existing is not None:
        return {"published": False, "version": existing, "reason": "this run's models are already published"}
    report = json.loads((run.evaluation / "evaluation.json").read_text())
    meta = {k: v for k, v in record.items() if k != "training"}
    meta["metrics"] = {v: report["metrics"][v].get("two_stage") for v in ("all", "new")}
    meta["gate"] = decision
    version = publish(
        models_dir, {"retrieval": run.staged / "retrieval", "ranking": run.staged / "ranking"}, meta, wait_until_loaded
    )
    return {"published": True, "version": version}
