"""The model half of the daily run, one function per DAG task: the training set, retrieval
training, ranking training, evaluation, the gate, publishing.

Each takes the run's date (or its folder) and plain arguments, reads what earlier tasks left under
the run's folder (`<home>/runs/<run date>/`), writes its own output there, and returns a small
summary (paths, counts, versions, metrics) for XCom. Reruns of a task give the same files.

Training is three steps, so each can run in its own process and a failed one retries alone:

- `build_training_set`: the point-in-time frames from Feast -> `training_set/` (Parquet, the
  catalog, `manifest.json` with row counts, data versions, cutoff, shift and the fingerprint);
- `train_retrieval`: the shifted model, the ranker's labelled candidates -> `ranker_candidates/`,
  and the retrieval model that ships -> `staged/retrieval`;
- `train_ranking`: the ranker -> `staged/ranking`, and the run record `train.json`.

The fingerprint (data versions, parameters, cutoff, code version) names what a step's outputs
were made from: a step whose outputs carry the current fingerprint does nothing.
`train_and_export` runs the three back to back.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.lake import Lake
from models.data import at_utc, catalog_from_frame, load_catalog, load_interactions, read_frame
from models.gate import PER_VARIANT, GatePolicy, decide
from models.runs import (
    MANIFEST,
    REFIT,
    RunPaths,
    code_version,
    data_versions,
    fingerprint,
    read_json,
    replacing,
    staged_fingerprint,
)
from models.train import RankerCandidates, TrainingData, TrainingSet, TrainParams

log = logging.getLogger(__name__)


def holdout_of(lake: Lake, run_date: date) -> tuple[datetime, int]:
    """The run's holdout as the ETL sized it (`tasks.build_gold` records it with gold/holdout):
    its first moment and its length in days.

    Raises:
        FileNotFoundError: there is no split yet.
        ValueError: the split in the lake was made for another run date.
    """
    from jobs.sparklake import commit_metadata

    meta = commit_metadata(lake.uri("gold", "holdout"), lake)
    if "towerflow.cutoff" not in meta:
        raise FileNotFoundError("gold/holdout does not exist yet: run the ETL (build_gold) first")
    cutoff = date.fromisoformat(meta["towerflow.cutoff"])
    end = date.fromisoformat(meta["towerflow.interval"].split("..")[-1])
    if end != run_date - timedelta(days=1):
        raise ValueError(
            f"gold/holdout ends on {end}, not on the day before {run_date}: it was split for another run; "
            f"run the ETL for {run_date} first (`towerflow pipeline etl --date {run_date - timedelta(days=1)}`)"
        )
    return at_utc(cutoff), (run_date - cutoff).days


def read_examples(lake: Lake, table: str) -> pd.DataFrame:
    data = lake.read(lake.uri("gold", table), columns=["user_id", "item_id", "action", "event_timestamp"])
    if data is None:
        raise FileNotFoundError(f"gold/{table} does not exist yet: run the ETL first")
    frame = data.to_pandas()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame.sort_values(["event_timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------- training


def run_params(run: RunPaths, params: TrainParams) -> TrainParams:
    """`params` with the settings the run's tuning chose, when it tuned (`tune_run`)."""
    from models.tune import tuned_params

    chosen = read_json(run.tuning / "tuning.json")
    return params if chosen is None else tuned_params(params, chosen["best"])


def tune_run(
    lake: Lake,
    features,
    run: RunPaths,
    run_date: date,
    params: TrainParams,
    budget_s: float,
    policy: GatePolicy,
    rules: Any = None,
    validation_days: int | None = None,
    progress=log.info,
) -> dict[str, Any]:
    """Choose the run's training settings on a validation window just before its holdout (as
    long as the holdout unless given) within `budget_s`; the report and the choice go to
    `run.tuning`, and every later training step of the run reads them (`run_params`).

    Returns:
        The chosen settings, the best trial's score and where the report is.
    """
    from models.tune import tune, write_report

    cutoff, holdout_days = holdout_of(lake, run_date)
    days = validation_days or holdout_days
    result = tune(
        read_examples(lake, "training_examples"),
        load_interactions(lake, before=cutoff - timedelta(days=days)),
        load_catalog(lake),
        features,
        cutoff,
        params,
        validation_days=days,
        budget_s=budget_s,
        policy=policy,
        rules=rules,
        progress=progress,
    )
    json_path, html_path = write_report(result, run.tuning)
    chosen = result.to_json()
    progress(f"tuning chose {chosen['best']} (trial {chosen['best_trial']} of {len(result.trials)})")
    return {
        "best": chosen["best"],
        "best_trial": chosen["best_trial"],
        "score": chosen["best_score"],
        "trials": len(result.trials),
        "report": str(html_path),
        "json": str(json_path),
    }


FRAMES = {  # TrainingSet attribute -> file in training_set/
    "full": "retrieval_before_cutoff.parquet",
    "users": "ranker_users.parquet",
    "items": "ranker_items.parquet",
    "window": "ranker_window.parquet",
}
META_KEYS = ("run_date", "cutoff", "holdout_days", "params", "data_versions", "code_version", "fingerprint")


def _training_manifest(run: RunPaths, params: TrainParams) -> dict[str, Any]:
    """The run's training-set manifest, checked against `params` and this code.

    Raises:
        FileNotFoundError: the training set was not built yet.
        ValueError: it was built with other parameters or another code version.
    """
    manifest = read_json(run.training_set / MANIFEST)
    if manifest is None:
        raise FileNotFoundError(f"no training set in {run.training_set}: run the training_set step first")
    cutoff = datetime.fromisoformat(manifest["cutoff"])
    expected = fingerprint(manifest["data_versions"], params, cutoff, code_version())
    if expected != manifest["fingerprint"]:
        raise ValueError(
            f"the training set in {run.training_set} was built with other parameters or code (fingerprint "
            f"{manifest['fingerprint']}, these parameters give {expected}): run the training_set step again with them"
        )
    return manifest


def _meta(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the staged models and the run record say about their training."""
    return {**{k: manifest[k] for k in META_KEYS}, "trained_at": manifest["run_date"]}


def save_training_set(ts: TrainingSet, folder: Path, manifest: dict[str, Any]) -> None:
    """The training set's frames and catalog as Parquet, then its manifest."""
    with replacing(folder) as tmp:
        for attr, name in FRAMES.items():
            getattr(ts, attr).to_parquet(tmp / name, index=False)
        ts.catalog.frame().to_parquet(tmp / "catalog.parquet", index=False)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))


def load_training_set(folder: Path) -> TrainingSet:
    """What `save_training_set` wrote, as it was."""
    manifest = json.loads((folder / MANIFEST).read_text())
    return TrainingSet(
        **{attr: read_frame(folder / name) for attr, name in FRAMES.items()},
        catalog=catalog_from_frame(pd.read_parquet(folder / "catalog.parquet")),
        cutoff=datetime.fromisoformat(manifest["cutoff"]),
        shift=datetime.fromisoformat(manifest["shift"]),
        examples=manifest["rows"]["examples"],
        data_versions=manifest["data_versions"],
    )


def save_candidates(candidates: RankerCandidates, ts: TrainingSet, folder: Path, manifest: dict[str, Any]) -> None:
    """The ranker's candidates as rows (user, item, position, label; each user's N rows in a
    row), the shifted model's item vocabulary, then the manifest."""
    per_user = candidates.rows.shape[1]
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(ts.users["user_id"].astype(str).to_numpy(), per_user),
            "item_id": ts.catalog.item_ids[candidates.rows.ravel()],
            "retrieval_rank": candidates.ranks.ravel().astype(np.int32),
            "label": candidates.labels.ravel(),
        }
    )
    with replacing(folder) as tmp:
        frame.to_parquet(tmp / "candidates.parquet", index=False)
        (tmp / "vocabulary.json").write_text(json.dumps(list(candidates.items)))
        (tmp / MANIFEST).write_text(json.dumps({**manifest, "per_user": per_user}, indent=2, default=str))


def load_candidates(folder: Path, ts: TrainingSet) -> RankerCandidates:
    """What `save_candidates` wrote, as arrays aligned with `ts` (its users and catalog).

    Raises:
        ValueError: the candidates were made for another training set.
    """
    per_user = json.loads((folder / MANIFEST).read_text())["per_user"]
    frame = pd.read_parquet(folder / "candidates.parquet")
    users = frame["user_id"].to_numpy()[::per_user]
    if len(frame) != len(ts.users) * per_user or not np.array_equal(users, ts.users["user_id"].astype(str)):
        raise ValueError(f"the candidates in {folder} are not for this training set: run train_retrieval again")
    shape = (len(ts.users), per_user)
    return RankerCandidates(
        rows=frame["item_id"].map(ts.catalog.index()).to_numpy().reshape(shape),
        ranks=frame["retrieval_rank"].to_numpy().reshape(shape),
        labels=frame["label"].to_numpy(bool).reshape(shape),
        items=json.loads((folder / "vocabulary.json").read_text()),
    )


def build_training_set(
    lake: Lake,
    features,
    run: RunPaths,
    run_date: date,
    params: TrainParams,
    progress=log.info,
    through_run_date: bool = False,
) -> dict[str, Any]:
    """Training step 1: the point-in-time frames of all three fits -> `run.training_set`.

    Args:
        features: point-in-time lookup (entity frame, service name) -> frame (Feast).
        through_run_date: train on everything before the run date, the holdout included (the
            refit of an evaluated recipe, `refit_run`); else on what comes before the holdout.

    Returns:
        The folder, fingerprint, cutoff, shift, row counts, and whether it was already there.
    """
    from models.train import training_set

    cutoff, holdout_days = holdout_of(lake, run_date)
    if through_run_date:
        cutoff = at_utc(run_date)
    versions = data_versions(lake)
    print_ = fingerprint(versions, params, cutoff, code_version())
    manifest = read_json(run.training_set / MANIFEST)
    if manifest is not None and manifest.get("fingerprint") == print_:
        skipped = True
        progress(f"the training set for these inputs is already in {run.training_set} ({print_})")
    else:
        skipped = False
        started = time.perf_counter()
        examples = read_examples(lake, "training_examples")
        if through_run_date:
            examples = pd.concat([examples, read_examples(lake, "holdout")], ignore_index=True)
        data = TrainingData(examples, load_catalog(lake), features, versions)
        ts = training_set(data, cutoff, holdout_days, params, progress)
        manifest = {
            "run_date": run_date.isoformat(),
            "cutoff": cutoff.isoformat(),
            "holdout_days": holdout_days,
            "params": asdict(params),
            "data_versions": versions,
            "code_version": code_version(),
            "fingerprint": print_,
            "shift": ts.shift.isoformat(),
            "rows": {
                "examples": ts.examples,
                **{name.removesuffix(".parquet"): len(getattr(ts, attr)) for attr, name in FRAMES.items()},
                "catalog": len(ts.catalog),
            },
            "seconds": time.perf_counter() - started,
        }
        save_training_set(ts, run.training_set, manifest)
        progress(f"training set written to {run.training_set}: {manifest['rows']}")
    return {
        "training_set": str(run.training_set),
        "fingerprint": print_,
        "cutoff": manifest["cutoff"],
        "shift": manifest["shift"],
        **manifest["rows"],
        "skipped": skipped,
    }


def train_retrieval(run: RunPaths, params: TrainParams, progress=log.info) -> dict[str, Any]:
    """Training step 2: the shifted retrieval model and the ranker's labelled candidates ->
    `run.candidates`; the retrieval model that ships -> `run.staged / "retrieval"`.

    Raises:
        FileNotFoundError, ValueError: no training set for these parameters (see step 1).
    """
    from models.export import retrieval_module, save
    from models.train import retrieval_stage

    manifest = _training_manifest(run, params)
    print_ = manifest["fingerprint"]
    done = read_json(run.candidates / MANIFEST)
    if (
        done is not None
        and done.get("fingerprint") == print_
        and staged_fingerprint(run.staged / "retrieval") == print_
    ):
        skipped = True
        progress(f"the retrieval model and ranker candidates for these inputs are already in {run.root} ({print_})")
    else:
        skipped = False
        started = time.perf_counter()
        ts = load_training_set(run.training_set)
        stage = retrieval_stage(ts, params, progress)
        save(retrieval_module(stage.model, ts.cutoff), run.staged / "retrieval", _meta(manifest))
        labels = stage.candidates.labels
        done = {
            "fingerprint": print_,
            "users": int(labels.shape[0]),
            "rows": int(labels.size),
            "positive_rate": float(labels.mean()),
            "retrieval": {
                "users": len(stage.model.users),
                "items": len(stage.model.items),
                "history": stage.model.history,
            },
            "shifted_retrieval": {"items": len(stage.candidates.items), "history": stage.shifted_history},
            "seconds": time.perf_counter() - started,
        }
        save_candidates(stage.candidates, ts, run.candidates, done)
        progress(f"exported retrieval to {run.staged / 'retrieval'}; ranker candidates in {run.candidates}")
    return {
        "staged": str(run.staged / "retrieval"),
        "candidates": str(run.candidates),
        "fingerprint": print_,
        "ranker_users": done["users"],
        "ranker_rows": done["rows"],
        "positive_rate": round(done["positive_rate"], 4),
        "retrieval_users": done["retrieval"]["users"],
        "skipped": skipped,
    }


def train_ranking(run: RunPaths, params: TrainParams, progress=log.info) -> dict[str, Any]:
    """Training step 3: the ranker on step 2's candidates -> `run.staged / "ranking"`, and the
    run record (`run.record`) that evaluation, the gate and publishing read.

    Raises:
        FileNotFoundError, ValueError: no training set or candidates for these parameters.
    """
    from models.export import ranking_module, save
    from models.train import ranking_stage, training_record

    manifest = _training_manifest(run, params)
    print_ = manifest["fingerprint"]
    retrieval = read_json(run.candidates / MANIFEST)
    if retrieval is None or retrieval.get("fingerprint") != print_:
        raise FileNotFoundError(f"no ranker candidates for this training set in {run.candidates}: run train_retrieval")
    record = read_json(run.record)
    if (
        record is not None
        and record.get("fingerprint") == print_
        and staged_fingerprint(run.staged / "ranking") == print_
    ):
        skipped = True
        progress(f"models for these inputs are already staged in {run.staged} ({print_})")
    else:
        skipped = False
        started = time.perf_counter()
        ts = load_training_set(run.training_set)
        candidates = load_candidates(run.candidates, ts)
        ranker, history = ranking_stage(ts, candidates, params, progress)
        meta = _meta(manifest)
        save(ranking_module(ranker), run.staged / "ranking", meta)
        seconds = manifest["seconds"] + retrieval["seconds"] + time.perf_counter() - started
        record = {
            **meta,
            "training": training_record(ts, params, retrieval["retrieval"], candidates.labels, history, seconds),
        }
        run.record.write_text(json.dumps(record, indent=2, default=str))
        progress(f"exported ranking to {run.staged / 'ranking'}; run record {run.record}")
    return {
        "staged": str(run.staged),
        "fingerprint": print_,
        "examples": record["training"]["examples"],
        "ranking_rows": record["training"]["ranking_rows"],
        "skipped": skipped,
    }


def train_and_export(
    lake: Lake,
    features,
    run: RunPaths,
    run_date: date,
    params: TrainParams,
    progress=log.info,
) -> dict[str, Any]:
    """The three training steps back to back: both models staged in `run.staged`, the run
    record written; the same files (and the same skips) as the DAG's three tasks.

    Args:
        features: point-in-time lookup (entity frame, service name) -> frame (Feast).
    """
    build_training_set(lake, features, run, run_date, params, progress)
    train_retrieval(run, params, progress)
    return train_ranking(run, params, progress)


def evaluate_run(
    lake: Lake,
    features,
    run: RunPaths,
    run_date: date,
    production: dict[str, Path] | None,
    progress=log.info,
    candidate: dict[str, Path] | None = None,
    out_dir: Path | None = None,
    rules: Any = None,
) -> dict[str, Any]:
    """Evaluate the staged candidate (or `candidate`), the production model and the baselines on
    the holdout; reports go to the run's evaluation folder (or `out_dir`).

    `rules`: the gateway's rule settings (`scoring.rules.RuleConfig`); models are scored on the
    lists the gateway would serve."""
    from models.evaluate import best_baseline, evaluate, prepare, stage_baselines, write_report

    cutoff, _ = holdout_of(lake, run_date)
    data = prepare(
        read_examples(lake, "training_examples"),
        read_examples(lake, "holdout"),
        load_interactions(lake, before=cutoff),
        load_catalog(lake),
        cutoff,
        features,
    )
    candidate = candidate or {"retrieval": run.staged / "retrieval", "ranking": run.staged / "ranking"}
    progress("fitting the baselines on the training data and staging them as servable pairs")
    baselines = stage_baselines(data, run.baselines)
    report = evaluate(data, candidate, production, baselines, progress=progress, rules=rules)
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


#: Actions that count as a person choosing an item (gold/training_examples).
POSITIVE_ACTIONS = ("click", "add_to_cart", "purchase")


def window_data(lake: Lake, features, start: date, end: date):
    """The users who bought in `start..end` (both days included), scored as of `start`: truth is
    what they bought then; history, features and the baselines' data are from before `start`.

    Returns:
        `models.evaluate.EvalData`.
    """
    from models.evaluate import prepare

    cutoff, stop = at_utc(start), at_utc(end + timedelta(days=1))
    before = load_interactions(lake, before=cutoff)
    examples = before[before["action"].isin(POSITIVE_ACTIONS)].rename(columns={"timestamp": "event_timestamp"})
    window = load_interactions(lake, before=stop, after=cutoff)
    bought = window[window["action"] == "purchase"].rename(columns={"timestamp": "event_timestamp"})
    if bought.empty:
        raise ValueError(
            f"silver/interactions has no purchase in {start}..{end}: run the ETL for those days first "
            f"(`towerflow pipeline etl --start {start} --end {end} --no-examples` leaves the online store as it is)"
        )
    return prepare(examples, bought, before, load_catalog(lake), cutoff, features)


def evaluate_window(
    lake: Lake,
    features,
    models: dict[str, Path],
    start: date,
    end: date,
    out_dir: Path,
    rules: Any = None,
    served: tuple[str, str] | None = None,
    progress=log.info,
) -> dict[str, Any]:
    """Evaluate a model pair (and the baselines) on what users bought in `start..end`, scored as
    of `start`; with `served=(gateway url, admin token)` also the running gateway's answers for
    the same users and moment (`served` in the report), which must match the model's.

    Returns:
        The report (also written as `evaluation.json` / `.html` in `out_dir`).
    """
    from models.evaluate import evaluate, gateway_lists, write_report

    data = window_data(lake, features, start, end)
    progress(f"{len(data.users):,} users bought in {start}..{end} and acted before it")
    more, paths = None, None
    if served is not None:
        lists, paths = gateway_lists(*served, data, progress=progress)
        more = {variant: {"served": by_count} for variant, by_count in lists.items()}
    report = evaluate(data, models, None, None, progress=progress, rules=rules, more_lists=more)
    report["window"] = {"start": start.isoformat(), "end": end.isoformat()}
    if served is not None:
        report["served_paths"] = paths
        report["served_url"] = served[0]
    write_report(report, out_dir, f"towerflow evaluation, {start}..{end}")
    return report


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


def chosen_dirs(run: RunPaths, recommender: str, recommenders: dict[str, str] | None = None) -> dict[str, Path]:
    """The staged pair that serves `recommender` (the gate's choice): the trained pair, the
    trained retrieval model with a pass-through ranker, a baseline's pair, or (`per_variant`)
    one pair routing each list variant to what `recommenders` chose for it."""
    from models.baselines import BASELINES

    if recommender == PER_VARIANT:
        if not recommenders:
            raise ValueError("a per-variant choice needs the recommender of each variant")
        from models.export import save_per_variant

        target = run.staged / PER_VARIANT
        names = dict(sorted(recommenders.items()))
        done = read_json(target / "choice.json")
        if done != names or not (target / "ranking" / "saved_model.pb").exists():
            pairs = {v: chosen_dirs(run, name) for v, name in names.items()}
            save_per_variant(pairs, names, target, {"recommenders": names})
            (target / "choice.json").write_text(json.dumps(names))
        return {"retrieval": target / "retrieval", "ranking": target / "ranking"}
    if recommender == "two_stage":
        return {"retrieval": run.staged / "retrieval", "ranking": run.staged / "ranking"}
    if recommender == "retrieval":
        from models.export import passthrough_module, save

        ranking = run.staged / "passthrough" / "ranking"
        if not (ranking / "saved_model.pb").exists():
            save(passthrough_module("retrieval"), ranking, {"recommender": "retrieval"})
        return {"retrieval": run.staged / "retrieval", "ranking": ranking}
    if recommender in BASELINES:
        return {m: run.baselines / recommender / m for m in ("retrieval", "ranking")}
    raise ValueError(f"the gate chose {recommender!r}, which this run did not stage")


def refit_run(
    lake: Lake, features, run: RunPaths, run_date: date, params: TrainParams, progress=log.info
) -> dict[str, Any]:
    """Refit the recipe the gate chose on everything before the run date, holdout included, so
    what is published has seen the latest days: the evaluated models stop a holdout short of
    them. The same parameters and seeds; the result goes to `run.refit` and `publish_run`
    publishes it. Does nothing when the gate did not publish; a retry redoes only what is missing
    (the training steps skip what they already wrote).

    Returns:
        Whether it refit, what, and where.
    """
    decision = json.loads(run.decision.read_text())
    if not decision["publish"]:
        return {"refit": False, "reason": "the gate keeps production"}
    recommender = decision.get("recommender", "two_stage")
    recommenders = decision.get("recommenders") or {}
    chosen = set(recommenders.values()) or {recommender}
    refit = RunPaths(run.refit)
    done = read_json(refit.root / REFIT)
    if done is not None and (done.get("recommender"), done.get("recommenders") or {}) == (recommender, recommenders):
        progress(f"{recommender} is already refit through {run_date} in {refit.root}")
        return {"refit": True, "skipped": True, **done}
    started = time.perf_counter()
    if chosen & {"two_stage", "retrieval"}:
        # The ranker's window keeps the evaluated length; only the cutoff moves to the run date.
        evaluated = read_json(run.training_set / MANIFEST)
        window = None
        if evaluated is not None:
            window = (datetime.fromisoformat(evaluated["cutoff"]) - datetime.fromisoformat(evaluated["shift"])).days
        shifted = replace(params, ranking_window_days=params.ranking_window_days or window)
        build_training_set(lake, features, refit, run_date, shifted, progress, through_run_date=True)
        train_retrieval(refit, shifted, progress)
        train_ranking(refit, shifted, progress)
    if chosen - {"two_stage", "retrieval"}:  # a baseline serves some variant
        from models.evaluate import stage_baselines, train_interactions

        examples = pd.concat([read_examples(lake, "training_examples"), read_examples(lake, "holdout")])
        data = train_interactions(examples, load_catalog(lake), at_utc(run_date))
        stage_baselines(data, refit.baselines)
    done = {
        "recommender": recommender,
        "recommenders": recommenders,
        "trained_before": at_utc(run_date).isoformat(),
        "evaluated_cutoff": holdout_of(lake, run_date)[0].isoformat(),
        "seconds": time.perf_counter() - started,
    }
    (refit.root / REFIT).write_text(json.dumps(done, indent=2))
    progress(f"refit {recommender} on everything before {run_date} in {refit.root}")
    return {"refit": True, "skipped": False, **done}


def publish_run(models_dir: Path, run: RunPaths, wait_until_loaded=None) -> dict[str, Any]:
    """Publish the pair the gate chose if it said so and the pair is not published already.

    A retry after a crash part way through finishes the run's publication: `registry.publish`
    finds its manifest by the run's fingerprint and completes it under the same version.
    """
    from models.registry import publish, version_with

    decision = json.loads(run.decision.read_text())
    record = json.loads(run.record.read_text())
    if not decision["publish"]:
        return {"published": False, "reason": decision["reason"]}
    existing = version_with(models_dir, record["fingerprint"])
    if existing is not None:
        return {"published": False, "version": existing, "reason": "this run's models are already published"}
    recommender = decision.get("recommender", "two_stage")
    report = json.loads((run.evaluation / "evaluation.json").read_text())
    meta = {k: v for k, v in record.items() if k != "training"}
    recommenders = decision.get("recommenders") or {}
    meta["recommender"] = recommender
    meta["recommenders"] = recommenders
    meta["metrics"] = {v: report["metrics"][v].get(recommenders.get(v, recommender)) for v in report["metrics"]}
    meta["gate"] = decision
    source = run
    refit = read_json(run.refit / REFIT)
    if refit is not None and (refit.get("recommender"), refit.get("recommenders") or {}) == (recommender, recommenders):
        source = RunPaths(run.refit)
        meta["refit"] = refit  # the evaluated recipe, trained again through the run date
    version = publish(models_dir, chosen_dirs(source, recommender, recommenders), meta, wait_until_loaded)
    return {"published": True, "version": version, "recommender": recommender}
