"""What each Airflow task runs: settings in, one job call, a small summary out (for XCom).

DAG files import this module inside their tasks, so nothing heavy loads at parse time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from towerflow.settings import get_settings

if TYPE_CHECKING:
    from jobs.etl import Step
    from models.gate import GatePolicy
    from towerflow.settings import TrainingSettings

log = logging.getLogger(__name__)


def run_days(run_date: str, lookback_days: int) -> tuple[date, date]:
    """The days a run for `run_date` processes: the `lookback_days` days before it.

    A run for date D handles data up to, not including, D (the day that just ended).
    """
    end = date.fromisoformat(run_date)
    return end - timedelta(days=lookback_days), end - timedelta(days=1)


def ingest_landing_days(run_date: str) -> dict[str, int]:
    """Import the landing files of the days before `run_date` into bronze; returns counts."""
    from jobs.ingest import ingest_landing
    from towerflow.lake import Lake

    settings = get_settings()
    lake = Lake(settings.lake, settings.storage_options or None)
    first, last = run_days(run_date, settings.ingest_lookback_days)
    reports = ingest_landing(lake, settings.landing_dir, first, last)
    summary = {
        "files": len(reports),
        "rows_read": sum(r.rows_read for r in reports),
        "events_landed": sum(r.events_landed for r in reports),
        "items_landed": sum(r.items_landed for r in reports),
        "rejected": sum(sum(r.rejected.values()) for r in reports),
    }
    log.info("ingest %s..%s: %s", first, last, summary)
    return summary


# ------------------------------------------------------------------------------------ shared


def _lake(settings):
    from towerflow.lake import Lake

    return Lake(settings.lake, settings.storage_options or None)


def _run_paths(settings, run_date: str):
    from models.runs import RunPaths

    return RunPaths(settings.home_dir / "runs" / run_date)


def _etl(settings, on_step: Callable[[Step], None] | None = None):
    """The ETL driver on this process's Spark session (reused across tasks run in one process)."""
    from jobs.etl import DailyEtl
    from jobs.quality import Gates
    from jobs.spark import get_spark
    from jobs.sparklake import SparkLake

    spark = get_spark(settings.spark_master, settings.spark_driver_memory, settings.spark_conf)
    lake = SparkLake(spark, _lake(settings), engine=settings.delta_engine, staging_dir=settings.staging_dir)
    gates = Gates(settings.data_docs_dir, "all")
    report = on_step or (lambda step: log.info("%s", step))
    return DailyEtl(lake, gates, max_day_ratio=settings.dq_max_day_ratio, on_step=report)


def plan_days(run_date: str) -> dict[str, str]:
    """The days a run for `run_date` processes, from the lake's state: from the first day gold
    does not have yet (or the first bronze day) through the day before the run date; always at
    least that last day, so a rerun rewrites its own interval and a run after missed days catches
    up. The DAG's first task decides it and hands it to the others (an XCom), so a retried task
    works on the same days even after gold has moved."""
    from jobs.etl import day_range

    lake = _lake(get_settings())
    last = date.fromisoformat(run_date) - timedelta(days=1)

    def days_of(layer: str, table: str, column: str) -> list[date]:
        delta = lake.table(lake.uri(layer, table))
        return (
            [] if delta is None else sorted(date.fromisoformat(p[column]) for p in delta.partitions() if p.get(column))
        )

    bronze = [d for d in days_of("bronze", "events", "event_date") if d <= last]
    done = days_of("gold", "user_features", "feature_date")
    first = last
    if bronze:
        first = bronze[0] if not done else min(max(done[-1] + timedelta(days=1), bronze[0]), last)
    days = day_range(min(first, last), last)
    return {"start": days[0].isoformat(), "end": days[-1].isoformat()}


def _days(days: Mapping[str, str]) -> list[date]:
    from jobs.etl import day_range

    return day_range(date.fromisoformat(days["start"]), date.fromisoformat(days["end"]))


def _run_date_of(days: Mapping[str, str]) -> str:
    """The run that uses these days: the one for the day after the last (see `plan_days`)."""
    return (date.fromisoformat(days["end"]) + timedelta(days=1)).isoformat()


def _write_quality(settings, days: Mapping[str, str], name: str, detail: dict) -> None:
    import json

    run = _run_paths(settings, _run_date_of(days))
    run.root.mkdir(parents=True, exist_ok=True)
    (run.root / f"quality-{name}.json").write_text(json.dumps({"passed": True, **days, **detail}, default=str))


# -------------------------------------------------------------------------------------- ETL


def bad_data_fails_fast(function):
    """A failed data-quality gate is not transient: fail the Airflow task without retries (its
    message names the failed expectations and the Data Docs page)."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        import os

        from jobs.quality import QualityGateError

        try:
            return function(*args, **kwargs)
        except QualityGateError as err:
            if "AIRFLOW_CTX_DAG_ID" not in os.environ:  # the CLI and tests see the gate's own error
                raise
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(str(err)) from err

    return wrapper


@bad_data_fails_fast
def validate_raw(days: Mapping[str, str], on_step: Callable[[Step], None] | None = None) -> dict[str, int]:
    """Gate 1: every day's bronze events pass the raw suite (raises QualityGateError)."""
    settings = get_settings()
    steps = _etl(settings, on_step).check_raw(_days(days))
    summary = {"days": len(steps), "rows": sum(s.rows for s in steps)}
    _write_quality(settings, days, "raw", summary)
    log.info("bronze/events passed the raw suite for %s..%s: %s", days["start"], days["end"], summary)
    return summary


@bad_data_fails_fast
def build_silver(days: Mapping[str, str], on_step: Callable[[Step], None] | None = None) -> dict[str, int]:
    """silver/items and silver/interactions for the days (gated inside)."""
    etl = _etl(get_settings(), on_step)
    steps = etl.build_items() + etl.build_interactions(_days(days))
    summary = {
        "days": len(_days(days)),
        "silver_rows": sum(s.rows for s in steps if s.name == "silver/interactions"),
    }
    for step in steps:
        for rule, n in step.detail.get("removed", {}).items():
            summary[f"removed_{rule}"] = summary.get(f"removed_{rule}", 0) + n
    log.info("silver %s..%s: %s", days["start"], days["end"], summary)
    return summary


@bad_data_fails_fast
def build_gold(
    days: Mapping[str, str],
    holdout_days: int | None = None,
    *,
    cutoff: date | None = None,
    examples: bool = True,
    on_step: Callable[[Step], None] | None = None,
) -> dict[str, int | str]:
    """gold features for the days (each gated before writing), user history, and the training
    split ending with the last day: the holdout is at least the last `holdout_days` days, longer
    when those hold too few users or events (`settings.holdout_size`), or starts at `cutoff`
    when given; the examples are everything before it. `examples=False` leaves the split as is."""
    settings = get_settings()
    etl = _etl(settings, on_step)
    run_days = _days(days)
    steps = []
    for days_of_pass in etl.feature_passes(run_days):  # as many days per Spark pass as fit
        steps += etl.build_features(days_of_pass[0], days_of_pass[-1])
    summary: dict[str, int | str] = {"days": len(run_days)}
    if examples:
        end = run_days[-1]
        holdout: dict[str, int] | None = None
        if cutoff is None:
            cutoff, holdout = etl.holdout_cutoff(end, settings.holdout_size(holdout_days))
            summary |= {f"holdout_{name}": n for name, n in holdout.items()}
        log.info("holdout %s..%s: %s", cutoff, end, holdout)
        steps += etl.build_examples(cutoff, end, holdout=holdout)
        summary["cutoff"] = cutoff.isoformat()
    for step in steps:
        summary[step.name] = int(summary.get(step.name, 0)) + step.rows
    log.info("gold %s..%s: %s", days["start"], days["end"], summary)
    return summary


@bad_data_fails_fast
def validate_features(days: Mapping[str, str]) -> dict[str, int]:
    """Gate 2: the gold feature tables as written (Data Docs under reports/)."""
    from jobs.etl import check_features
    from jobs.quality import Gates

    settings = get_settings()
    gates = Gates(settings.data_docs_dir, "all")
    checked = check_features(_lake(settings), gates, _days(days), settings.dq_max_day_ratio)
    _write_quality(settings, days, "features", {"rows": checked})
    return {"rows_checked": checked}


def etl(
    days: Mapping[str, str],
    holdout_days: int | None = None,
    *,
    cutoff: date | None = None,
    examples: bool = True,
    on_step: Callable[[Step], None] | None = None,
) -> dict[str, dict]:
    """The DAG's ETL tasks in the DAG's order, for `towerflow pipeline etl`: what a backfill
    outside Airflow runs is what a DAG run runs."""
    return {
        "validate_raw": validate_raw(days, on_step),
        "build_silver": build_silver(days, on_step),
        "build_gold": build_gold(days, holdout_days, cutoff=cutoff, examples=examples, on_step=on_step),
        "validate_features": validate_features(days),
    }


# --------------------------------------------------------------------------------- features


def materialize_features(run_date: str) -> dict[str, object]:
    """`feast apply` (unchanged objects are skipped) and materialize up to the run date."""
    from jobs import feature_store as fs

    settings = get_settings()
    store = fs.feature_store(settings)
    applied = fs.apply(store)
    end = datetime.combine(date.fromisoformat(run_date), datetime.min.time(), UTC)
    report = fs.materialize(store, end)
    summary = {
        "env": fs.env_of(store),
        "changed": len(applied.changed),
        "views": {v.view: v.entities for v in report.views if not v.skipped},
        "skipped": [v.view for v in report.views if v.skipped],
    }
    log.info("features: %s", summary)
    return summary


# ----------------------------------------------------------------------------------- models


def _lookup(settings):
    from jobs import feature_store as fs
    from models.lookup import FeastLookup

    return FeastLookup(fs.feature_store(settings))


def _base_params(settings, epochs: int | None):
    """The default training settings, with `epochs` for both models when given."""
    from dataclasses import replace

    from models.train import TrainParams

    params = TrainParams(seed=settings.train_seed)
    return replace(params, retrieval_epochs=epochs, ranking_epochs=epochs) if epochs else params


def _train_params(settings, run_date: str, epochs: int | None):
    """The run's training settings: what its tuning chose, if it tuned (`epochs` still wins)."""
    from dataclasses import replace

    from models.lifecycle import run_params

    params = run_params(_run_paths(settings, run_date), _base_params(settings, None))
    return replace(params, retrieval_epochs=epochs, ranking_epochs=epochs) if epochs else params


def _policy(settings: TrainingSettings) -> GatePolicy:
    from models.gate import GatePolicy

    variants = tuple(dict.fromkeys(settings.gate_variants))
    return GatePolicy(
        metric=settings.gate_metric,
        variants=variants,
        margin=settings.gate_margin,
        targets=tuple(settings.gate_targets.items()),
    )


def tune_models(run_date: str, enabled: bool, budget_minutes: float, epochs: int | None = None) -> dict[str, object]:
    """Choose the run's training settings on a validation window before its holdout
    (`models.tune`) within the budget; the training tasks then use them. Not asked: the run
    trains with the defaults (a choice an earlier try of the run made is removed). A retry with
    the same inputs keeps the choice it already made."""
    import json

    from models.lifecycle import holdout_of, tune_run
    from models.runs import code_version, data_versions, fingerprint

    settings = get_settings()
    run = _run_paths(settings, run_date)
    chosen = run.tuning / "tuning.json"
    if not enabled:
        chosen.unlink(missing_ok=True)
        return {"tuned": False}
    lake = _lake(settings)
    base = _base_params(settings, epochs)
    cutoff, _ = holdout_of(lake, date.fromisoformat(run_date))
    print_ = fingerprint(data_versions(lake), base, cutoff, f"{code_version()} budget={budget_minutes}")
    if chosen.exists() and json.loads(chosen.read_text()).get("fingerprint") == print_:
        log.info("tuning for these inputs is already in %s", run.tuning)
        return {"tuned": True, "skipped": True, "json": str(chosen)}
    summary = tune_run(
        lake,
        _lookup(settings),
        run,
        date.fromisoformat(run_date),
        base,
        budget_minutes * 60,
        _policy(settings),
        rules=_rules(settings),
        progress=log.info,
    )
    chosen.write_text(json.dumps({**json.loads(chosen.read_text()), "fingerprint": print_}, indent=2))
    return {"tuned": True, "skipped": False, **summary}


def build_training_set(run_date: str, epochs: int | None = None) -> dict[str, object]:
    """Training step 1: Feast's point-in-time training sets -> the run's `training_set/` folder."""
    from models.lifecycle import build_training_set as build

    settings = get_settings()
    summary = build(
        _lake(settings),
        _lookup(settings),
        _run_paths(settings, run_date),
        date.fromisoformat(run_date),
        _train_params(settings, run_date, epochs),
        progress=log.info,
    )
    log.info("training set for %s: %s", run_date, summary)
    return summary


def train_retrieval(run_date: str, epochs: int | None = None) -> dict[str, object]:
    """Training step 2: the ranker's candidates from a shifted retrieval model, and the retrieval
    model that ships, staged in the run folder."""
    from models.lifecycle import train_retrieval as train

    settings = get_settings()
    summary = train(_run_paths(settings, run_date), _train_params(settings, run_date, epochs), progress=log.info)
    log.info("retrieval for %s: %s", run_date, summary)
    return summary


def train_ranking(run_date: str, epochs: int | None = None) -> dict[str, object]:
    """Training step 3: the ranker, staged in the run folder with the run record."""
    from models.lifecycle import train_ranking as train

    settings = get_settings()
    summary = train(_run_paths(settings, run_date), _train_params(settings, run_date, epochs), progress=log.info)
    log.info("ranking for %s: %s", run_date, summary)
    return summary


def evaluate_models(run_date: str) -> dict[str, Any]:
    """Candidate vs production vs baselines on the holdout; JSON + HTML report in the run folder."""
    from models.lifecycle import evaluate_run
    from models.registry import labelled_dirs

    settings = get_settings()
    production = labelled_dirs(settings.models_dir, "stable")
    return evaluate_run(
        _lake(settings),
        _lookup(settings),
        _run_paths(settings, run_date),
        date.fromisoformat(run_date),
        production,
        progress=log.info,
        rules=_rules(settings),
    )


def _rules(settings):
    """The gateway's rule settings: evaluation scores the lists the gateway would serve."""
    from scoring.rules import RuleConfig

    return RuleConfig.from_settings(settings)


def evaluate_version(run_date: str, version: int) -> dict[str, Any]:
    """A published version (as the candidate) vs stable vs baselines on the run date's holdout."""
    from models.lifecycle import evaluate_run
    from models.registry import MODELS, labelled_dirs

    settings = get_settings()
    run = _run_paths(settings, run_date)
    candidate = {m: settings.models_dir / m / str(version) for m in MODELS}
    missing = [str(p) for p in candidate.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"version {version} is not published: {', '.join(missing)}")
    return evaluate_run(
        _lake(settings),
        _lookup(settings),
        run,
        date.fromisoformat(run_date),
        labelled_dirs(settings.models_dir, "stable"),
        progress=log.info,
        candidate=candidate,
        out_dir=run.root / f"evaluation-v{version}",
        rules=_rules(settings),
    )


def evaluate_window(
    start: str,
    end: str,
    version: int | None = None,
    served: bool = False,
    url: str | None = None,
    token: str | None = None,
    progress=log.info,
) -> dict[str, Any]:
    """A published version (default: stable) and the baselines on what users bought in
    `start..end`, scored as of `start`; with `served`, the running gateway's answers beside it.
    Reports go to `runs/window-<start>-<end>/evaluation`."""
    from models.lifecycle import evaluate_window as evaluate
    from scoring.batch import version_dirs

    settings = get_settings()
    dirs, _ = version_dirs(settings.models_dir, str(version) if version else "stable")
    gateway = None
    if served:
        if token is None:
            from serving.gateway.auth import ADMIN, ANY_USER, dev_secret, mint_token

            token = mint_token(
                settings.jwt_key or dev_secret(settings), subject="evaluate", scopes=[ANY_USER, ADMIN], ttl_s=3600
            )
        gateway = (url or f"http://127.0.0.1:{settings.gateway_port}", token)
    out_dir = settings.home_dir / "runs" / f"window-{start}-{end}" / "evaluation"
    report = evaluate(
        _lake(settings),
        _lookup(settings),
        dirs,
        date.fromisoformat(start),
        date.fromisoformat(end),
        out_dir,
        rules=_rules(settings),
        served=gateway,
        progress=progress or log.info,
    )
    return {**report, "report_html": str(out_dir / "evaluation.html")}


def gate_models(run_date: str, force_publish: bool = False) -> dict[str, object]:
    """Publish or keep production: the candidate must beat production on the primary metric and
    the run's data must have passed both quality gates."""
    from models.lifecycle import gate_run

    settings = get_settings()
    run = _run_paths(settings, run_date)
    passed = all((run.root / f"quality-{name}.json").exists() for name in ("raw", "features"))
    policy = _policy(settings)
    decision = gate_run(run, policy, quality_passed=passed, force=force_publish)
    log.info("gate: %s", decision)
    return decision


def refit_models(run_date: str, epochs: int | None = None) -> dict[str, object]:
    """The recipe the gate chose, refit on everything before the run date (holdout included), so
    the published models have seen the latest days; off with TOWERFLOW_REFIT=false."""
    from models.lifecycle import refit_run

    settings = get_settings()
    if not settings.refit:
        return {"refit": False, "reason": "TOWERFLOW_REFIT is off: the evaluated models are published"}
    summary = refit_run(
        _lake(settings),
        _lookup(settings),
        _run_paths(settings, run_date),
        date.fromisoformat(run_date),
        _train_params(settings, run_date, epochs),
        progress=log.info,
    )
    log.info("refit for %s: %s", run_date, summary)
    return summary


PRECOMPUTED = "precomputed.json"  # in the run folder, once the run's version is precomputed


def publish_models(run_date: str) -> dict[str, object]:
    """Publish the staged pair (both models or neither), label it, and write precomputed
    recommendations. A retry finishes what a failed attempt left undone: the publication (same
    version) and then the precompute, which the run folder records once it is written."""
    from models.lifecycle import publish_run

    settings = get_settings()
    run = _run_paths(settings, run_date)
    result = publish_run(settings.models_dir, run, wait_until_loaded=model_server_wait(settings))
    if result.get("version") is not None:  # published now, or by an earlier attempt of this run
        result["experiment"] = start_canary_experiment(result["version"])
        result["precomputed_users"] = _precompute_once(settings, run, run_date, result["version"])
    log.info("publish: %s", result)
    return result


def start_canary_experiment(version: int) -> dict[str, object]:
    """The published pair earns traffic: stable vs canary on `home`, the canary arm getting
    `TOWERFLOW_CANARY_SHARE` percent of the users (experiments.lifecycle.start_canary). Nothing
    starts when the share is 0, when `version` is not the canary (a newer one is) or is stable too
    (the first publication: nothing to compare with), or when a person's experiment runs there."""
    from experiments.lifecycle import start_canary
    from experiments.store import ExperimentStore
    from models.registry import MODELS, labels

    settings = get_settings()
    found = {m: labels(settings.models_dir, m) for m in MODELS}
    reason = None
    if settings.canary_share <= 0:
        reason = "TOWERFLOW_CANARY_SHARE is 0: publishing starts no experiment"
    elif any(found[m].get("canary") != version for m in MODELS):
        reason = f"the canary label is not on version {version} ({found}): a newer version is the canary"
    elif all(found[m].get("stable") == version for m in MODELS):
        reason = f"version {version} is stable too: there is nothing to compare it with"
    if reason is not None:
        log.info("canary experiment: none started: %s", reason)
        return {"started": False, "reason": reason}
    with ExperimentStore.open(settings.experiments_db_url) as store:
        done = start_canary(store, version, settings.canary_share)
    log.info("canary experiment: %s", done.reason)
    return {"started": done.started, "id": done.experiment.id if done.experiment else None, "reason": done.reason}


# ------------------------------------------------------------------------------ experiments


def review_experiments(end: str) -> dict[str, object]:
    """The hourly experiments DAG: decide every running experiment on its data up to `end` (an
    ISO instant, UTC when it names no zone) and act: promote (stable moves to the winning arm's
    versions, the experiment stops), roll back (the experiment stops) or continue
    (experiments.lifecycle.review). The log shows each arm's counts, the p-values and the
    decision; a stopped experiment keeps the reason (`towerflow experiments show ID`)."""
    from experiments.health import read_arm_health
    from experiments.lifecycle import control_arm, decision_policy, review
    from experiments.store import ExperimentStore

    settings = get_settings()
    moment = datetime.fromisoformat(end)
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    policy = decision_policy(settings)
    log.info("deciding the running experiments on their data up to %s (%s)", moment.isoformat(), policy)
    lake = _lake(settings)
    with ExperimentStore.open(settings.experiments_db_url) as store:
        health = {  # the guardrails' readings: each arm's failed-response share and p99 latency
            e.id: read_arm_health(lake, e.id, e.started_at, moment, [a.name for a in e.arms], control=control_arm(e))
            for e in store.running().values()
            if e.started_at < moment
        }
        reviews = review(
            store,
            lake,
            moment,
            policy,
            lambda e, arm: promote_arm(settings, e, arm),
            health=health,
            progress=log.info,
        )
    if not reviews:
        log.info("no experiment is running")
    return {r.experiment.id: {"outcome": r.outcome, "reason": r.reason} for r in reviews}


def promote_arm(settings, experiment, arm) -> str:
    """Move `stable` of both models to the versions `arm` serves, in one write of models.config:
    a canary experiment's arm on `canary` means the version it was started for, another label the
    version it points at now, a number that version. Returns what moved, in words."""
    from models.registry import MODELS, RegistryError, labels, promote_pair

    versions = {}
    for model in MODELS:
        wanted = arm.models.get(model, "stable")
        if wanted == "canary" and experiment.canary_version is not None:
            versions[model] = experiment.canary_version
        elif wanted.isdigit():
            versions[model] = int(wanted)
        elif wanted in labels(settings.models_dir, model):
            versions[model] = labels(settings.models_dir, model)[wanted]
        else:
            raise RegistryError(f"arm {arm.name} serves {model} {wanted!r}, which no {model} version is labelled")
    moved = promote_pair(settings.models_dir, versions, "stable", model_server_wait(settings))
    now = ", ".join(f"{m} v{v}" for m, v in versions.items())
    before = ", ".join(f"{m} v{found.get('previous')}" for m, found in moved.items())
    return f"stable moved to {now} (previous: {before})"


def _precompute_once(settings, run, run_date: str, version: int) -> int | None:
    """Precompute for the run's version unless that is done already, or a newer version was
    published since (its recommendations stay); None when skipped."""
    import json

    from models.registry import publications

    marker = run.root / PRECOMPUTED
    done = json.loads(marker.read_text()) if marker.exists() else {}
    if done.get("version") == version:
        return done["users"]
    newer = [p["version"] for p in publications(settings.models_dir) if p["state"] == "published"]
    if max(newer, default=version) > version:
        log.info("version %d is published since; precomputed recommendations left as they are", max(newer))
        return None
    users = precompute(run_date, version)
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(json.dumps({"version": version, "users": users}))
    tmp.replace(marker)
    return users


def model_server_wait(settings):
    """Wait for the model server to load a version before a label moves to it (TF Serving refuses
    a label on a version it has not loaded).

    A configured server (`model_server_target`; tf-serving:8500 in compose) is always waited for,
    even if it does not answer yet: the publish then fails with labels unchanged, and its retry
    finishes it. Without one, a server on the default port is waited for if it answers; None when
    none does (labels are written directly: a server starting later loads them)."""
    target = settings.model_server_target
    if target is None:
        target = f"127.0.0.1:{settings.model_server_port}"
        try:
            import grpc

            grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=1.0)
        except Exception:  # noqa: BLE001 - any failure means: no server to wait for
            return None

    def wait(model: str, version: int) -> bool:
        from serving.tfs_client import ModelClient

        client = ModelClient(target)
        try:
            client.wait_until_available(model, version, timeout=120.0)
        finally:
            client.close()
        return True

    return wait


def precompute(run_date: str, version: int, max_users: int = 50_000) -> int:
    """Batch recommendations of the published `version` for the run's active users, into Redis
    (`models.predict.precompute`)."""
    from models.predict import precompute as predict

    return predict(get_settings(), date.fromisoformat(run_date), version, max_users)


def report(run_date: str) -> dict[str, object]:
    """The run in one place: the evaluation report (HTML), the gate's decision, what is serving."""
    import json

    from models.registry import labels

    settings = get_settings()
    run = _run_paths(settings, run_date)
    summary: dict[str, object] = {
        "evaluation": str(run.evaluation / "evaluation.html"),
        "labels": {m: labels(settings.models_dir, m) for m in ("retrieval", "ranking")},
    }
    if run.decision.exists():
        summary["gate"] = json.loads(run.decision.read_text())
    log.info("run %s: %s", run_date, summary)
    return summary
