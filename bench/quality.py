"""Served quality on each synthetic profile: `towerflow bench quality`.

For each profile (`jobs.synth.PROFILES`: retail, media, sparse) a world at its own volumes (or
several seeded ones, `WORLDS`, whose holdout users are pooled) is split as the pipeline splits
it (the holdout sized by users and events, `jobs.gold.HoldoutSize`), the training settings are
chosen by `models.tune` on a validation window before the holdout, as long as the holdout (as
`pipeline run` does with the `tune` param; trial 0 is the defaults, `models.train.TrainParams`),
and the models are trained with them, evaluated with every baseline, gated with the default
policy (`models.gate.GatePolicy`) and published; the published pair is then scored from its
folders the way the gateway serves it. Per profile and list variant (`all`: purchases kept;
`new`: purchases out, the default answer) the table shows what serves, its recall@10 and
recall@100 beside the best baseline's at each, with the paired bootstrap interval of the
difference, and whether the issue's bar holds there: recall@10 at least 1.1x the best baseline
and recall@100 at least the best.

The worlds and their feature frames come from `testsupport.worlds` (a subset of the gold
features, computed in pandas). `TOWERFLOW_BENCH_QUALITY_PROFILES` (comma-separated) picks
profiles; `TOWERFLOW_BENCH_QUALITY_TUNE_S` is each profile's tuning budget in seconds, shared by
its worlds (default 300; 0: the defaults, untuned).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from jobs.gold import HoldoutSize
from jobs.synth import SynthConfig


@dataclass(frozen=True)
class BenchWorld:
    """A profile's worlds: `cfg` drawn once per seed in `seeds`, each split with a holdout of at
    least `min_days` days, trained and scored on its own; the figures pool their holdout users."""

    cfg: SynthConfig
    min_days: int
    seeds: tuple[int, ...]


#: Each profile at its own volumes (`SynthConfig.of`), long enough for a holdout of a hundred
#: users or more where the profile's traffic allows. Sparse traffic leaves too few holdout users
#: per world for a ratio to mean much, so its figures pool five seeded worlds.
WORLDS = {
    "retail": BenchWorld(SynthConfig.of("retail", users=5_000, items=2_000, days=30, start=date(2025, 3, 1)), 7, (3,)),
    "media": BenchWorld(SynthConfig.of("media", days=60, start=date(2025, 3, 1)), 7, (4,)),
    "sparse": BenchWorld(SynthConfig.of("sparse", days=150, start=date(2025, 3, 1)), 14, (5, 6, 7, 8, 9)),
}
VARIANTS = ("all", "new")
TOP, DEEP, LIFT = "recall@10", "recall@100", 1.1


def _world(name: str, cfg: SynthConfig, min_days: int, budget_s: float, console: Console) -> dict[str, Any]:
    """One world tuned, trained, gated, published and scored: its served and offline reports
    (with each user's values), the gate's decision and the figures of the run."""
    from models.evaluate import evaluate, stage_baselines, write_report
    from models.export import export
    from models.gate import GatePolicy
    from models.lifecycle import gate_run, publish_run
    from models.runs import RunPaths
    from models.train import TrainingData, TrainParams, train
    from models.tune import tune
    from testsupport.worlds import make_world

    label = f"{name} (seed {cfg.seed})"
    world = make_world(cfg, HoldoutSize(min_days=min_days))
    holdout_days = (world.run_date - world.cutoff.date()).days
    console.print(f"{label}: {len(world.events):,} events, holdout {holdout_days} days")
    data = world.eval_data()
    quiet = lambda _: None  # noqa: E731 - the table is the output
    params, tuned = TrainParams(), {}
    if budget_s > 0:
        validation_start = world.cutoff - timedelta(days=holdout_days)
        result = tune(
            world.examples,
            world.events[world.events["timestamp"] < validation_start],
            world.catalog,
            world.lookup,
            world.cutoff,
            params,
            validation_days=holdout_days,
            budget_s=budget_s,
            progress=lambda line: console.print(f"{label}: tune {line}"),
        )
        params, tuned = result.best, {"trials": len(result.trials), "chosen": result.best_trial.changes}
    train_started = time.perf_counter()
    models = train(TrainingData(world.examples, world.catalog, world.lookup), world.cutoff, holdout_days, params)
    train_s = time.perf_counter() - train_started
    with tempfile.TemporaryDirectory() as tmp:
        run = RunPaths(Path(tmp) / "run")
        run.root.mkdir(parents=True)
        export(models, run.staged, world.cutoff, {"fingerprint": name})
        run.record.write_text(json.dumps({"fingerprint": name, "training": {}}))
        baselines = stage_baselines(data, run.baselines)
        staged = {"retrieval": run.staged / "retrieval", "ranking": run.staged / "ranking"}
        offline = evaluate(data, staged, None, baselines, progress=quiet, keep_values=True)
        write_report({k: v for k, v in offline.items() if k != "values"}, run.evaluation, name)
        decision = gate_run(run, GatePolicy(), quality_passed=True)
        published = publish_run(Path(tmp) / "models", run)
        dirs = {m: Path(tmp) / "models" / m / str(published["version"]) for m in ("retrieval", "ranking")}
        served = evaluate(data, None, dirs, baselines, progress=quiet, keep_values=True)
    console.print(f"{label}: {decision['reason']}")
    return {
        "seed": cfg.seed,
        "events": len(world.events),
        "holdout_days": holdout_days,
        "users": served["users"],
        "train_s": round(train_s, 1),
        "tuning": tuned,
        "recommenders": decision["recommenders"],
        "served": served,
        "offline": offline,
    }


def _pooled(runs: list[dict[str, Any]], report: str, variant: str, name: str, metric: str) -> np.ndarray:
    """`name`'s per-user `metric` values in `variant` over every world's holdout, one after another."""
    return np.concatenate([r[report]["values"][variant][name][metric] for r in runs])


def _profile(name: str, bench: BenchWorld, budget_s: float, console: Console) -> dict[str, Any]:
    from models.baselines import BASELINES
    from models.evaluate import PRODUCTION
    from models.metrics import interval

    started = time.perf_counter()
    share = budget_s / len(bench.seeds)
    runs = [_world(name, replace(bench.cfg, seed=seed), bench.min_days, share, console) for seed in bench.seeds]
    out: dict[str, Any] = {
        "worlds": len(runs),
        "events": sum(r["events"] for r in runs),
        "users": sum(r["users"] for r in runs),
        "per_world": [
            {k: r[k] for k in ("seed", "events", "holdout_days", "users", "train_s", "tuning")} for r in runs
        ],
        "seconds": round(time.perf_counter() - started, 1),
        "variants": {},
    }
    for variant in VARIANTS:
        chosen = Counter(r["recommenders"][variant] for r in runs)
        row: dict[str, Any] = {
            "recommender": ", ".join(n if len(runs) == 1 else f"{n} x{c}" for n, c in chosen.items())
        }
        met = True
        for metric in (TOP, DEEP):
            mine = _pooled(runs, "served", variant, PRODUCTION, metric)
            theirs = {b: _pooled(runs, "served", variant, b, metric) for b in BASELINES}
            means = {b: float(v.mean()) for b, v in theirs.items()}
            best = max(means, key=means.__getitem__)
            row[metric] = {
                "served": round(float(mine.mean()), 4),
                "best_baseline": [best, round(float(theirs[best].mean()), 4)],
                "ratio": round(float(mine.mean() / theirs[best].mean()), 3) if theirs[best].mean() else None,
                "difference_interval": [round(x, 4) for x in interval(mine - theirs[best])],
            }
            met = met and float(mine.mean()) >= (LIFT if metric == TOP else 1.0) * means[best]
        row["bar_met"] = met
        row["offline"] = {
            n: {m: round(float(_pooled(runs, "offline", variant, n, m).mean()), 4) for m in (TOP, DEEP)}
            for n in ("two_stage", "retrieval")
        }
        out["variants"][variant] = row
    return out


def run() -> dict[str, object]:
    from models.tf_env import tensorflow

    tensorflow()  # before the first TensorFlow import: the legacy Keras TFRS needs
    console = Console(width=150)
    wanted = os.environ.get("TOWERFLOW_BENCH_QUALITY_PROFILES", ",".join(WORLDS))
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = sorted(set(names) - set(WORLDS))
    if unknown:
        raise SystemExit(f"unknown profile(s) {', '.join(unknown)}; choose from {', '.join(WORLDS)}")
    budget_s = float(os.environ.get("TOWERFLOW_BENCH_QUALITY_TUNE_S", "300"))
    results = {name: _profile(name, WORLDS[name], budget_s, console) for name in names}
    table = Table(title=f"served on each synthetic profile: {TOP} >= {LIFT}x and {DEEP} >= the best baseline?")
    for column in ("profile", "variant", "serves", f"{TOP} (best baseline)", f"{DEEP} (best baseline)", "bar"):
        table.add_column(column)
    for name, result in results.items():
        for variant, row in result["variants"].items():
            cells = []
            for metric in (TOP, DEEP):
                figures = row[metric]
                base, value = figures["best_baseline"]
                ratio = f" {figures['ratio']:.2f}x" if figures["ratio"] is not None else ""
                cells.append(f"{figures['served']:.4f} ({base} {value:.4f}){ratio}")
            table.add_row(
                f"{name} ({result['users']} users, {result['worlds']} world{'s' if result['worlds'] > 1 else ''})",
                variant,
                row["recommender"],
                *cells,
                "met" if row["bar_met"] else "missed",
            )
    console.print(table)
    return {"profiles": results}
