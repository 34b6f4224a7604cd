"""Hyperparameter selection on a validation window cut before the holdout.

Defaults tuned on one data set do not carry to another, so a run can choose its own settings:
`tune` fits trial settings on the positives before `cutoff - validation_days`, scores each the way
the gate scores (the lists the gateway would serve, against the best baseline in every gated
variant) on the validation window, and keeps the best within a time budget. The holdout is never
read: what is chosen is then trained and judged by the pipeline like any other recipe.

The search is a seeded (1+1) evolution: trial 0 is the given settings, and each later trial
changes one or two of the best settings so far. With the few trials a budget allows, small steps
from a good point find more than independent random draws over eleven dimensions.

Usable as `towerflow tune` and from the `towerflow_daily` DAG's `tune` task.
"""

from __future__ import annotations

import html
import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.data import Catalog
from models.gate import TRAINED, GatePolicy
from models.train import TrainingData, TrainParams

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

#: The values each tuned setting may take (`TrainParams` fields).
SPACE: dict[str, tuple[Any, ...]] = {
    "dim": (32, 64, 128),
    "retrieval_epochs": (1, 2, 3, 4),
    "learning_rate": (0.003, 0.01, 0.03),
    "temperature": (0.5, 1.0, 2.0),
    "history_len": (20, 50, 100),
    "ranking_epochs": (1, 2, 3, 4),
    "ranking_learning_rate": (0.001, 0.002, 0.005),
    "ranking_layers": ((64,), (128, 64), (256, 128, 64)),
    "ranking_max_rows": (500_000, 1_500_000),
    "batch_size": (256, 1024),
    "rank_rows": (120, 300, 1000),
}


@dataclass
class Trial:
    """One setting fitted and scored on the validation window.

    Attributes:
        number: 0 for the given settings.
        changes: the settings that differ from the given ones.
        score: the gate's view of it: for its best trained option, the lowest ratio over the
            gated variants of that option's metric to the best baseline's, and of each target
            metric to the target's lift times the best baseline's (above 1: it beats every
            baseline everywhere and reaches the targets).
        option: that best option (`two_stage` or `retrieval`).
        metrics: {variant: {option: metric}} of the trained options.
        seconds: fit and scoring time.
    """

    number: int
    changes: dict[str, Any]
    score: float
    option: str
    metrics: dict[str, dict[str, float]]
    seconds: float


@dataclass
class TuneResult:
    """The chosen settings and every trial, best first in `ranked`."""

    best: TrainParams
    trials: list[Trial]
    validation: tuple[str, str]
    baselines: dict[str, dict[str, float]]
    budget_s: float
    seconds: float
    users: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def best_trial(self) -> Trial:
        return max(self.trials, key=lambda t: (t.score, -t.number))

    def ranked(self) -> list[Trial]:
        return sorted(self.trials, key=lambda t: (-t.score, t.number))

    def to_json(self) -> dict[str, Any]:
        best = self.best_trial
        return {
            "best": {name: _plain(getattr(self.best, name)) for name in SPACE},
            "best_trial": best.number,
            "best_score": best.score,
            "validation": list(self.validation),
            "validation_users": self.users,
            "baselines": self.baselines,
            "budget_s": self.budget_s,
            "seconds": self.seconds,
            "notes": self.notes,
            "trials": [asdict(t) | {"changes": {k: _plain(v) for k, v in t.changes.items()}} for t in self.trials],
        }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def tuned_params(base: TrainParams, chosen: Mapping[str, Any]) -> TrainParams:
    """`base` with the tuned settings of a `TuneResult.to_json()["best"]`."""
    unknown = set(chosen) - set(SPACE)
    if unknown:
        raise ValueError(f"tuned settings {sorted(unknown)} are not tunable ({', '.join(SPACE)})")
    # JSON values of tunable fields (checked against SPACE above): lists back to tuples
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in chosen.items()}
    return replace(base, **values)


def mutate(params: TrainParams, rng: np.random.Generator, space: Mapping[str, Sequence[Any]] = SPACE) -> TrainParams:
    """`params` with one or two settings moved to another value of `space`."""
    names = [n for n in space if len(space[n]) > 1]
    count = min(len(names), 1 + int(rng.random() < 0.5))
    changes = {}
    for name in rng.choice(names, size=count, replace=False):
        others = [v for v in space[str(name)] if v != getattr(params, str(name))]
        changes[str(name)] = others[int(rng.integers(len(others)))]
    return replace(params, **changes)


def _ratio(mine: float, best: float) -> float:
    return mine / best if best > 0 else (1.0 if mine == 0 else 2.0)


def score_of(
    report: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, float]],
    policy: GatePolicy,
    targets: Mapping[str, Mapping[str, float]] | None = None,
) -> tuple[float, str]:
    """The best trained option of an evaluation report and its score (see `Trial.score`).

    Args:
        baselines: {variant: {baseline: value of the policy's metric}}.
        targets: {variant: {target metric: the best baseline's value}} of the policy's targets.
    """
    scores = {}
    for option in TRAINED:
        ratios = []
        for variant in policy.variants:
            mine = report["metrics"][variant][option]
            ratios.append(_ratio(mine[policy.metric], max(baselines[variant].values(), default=0.0)))
            best_at = targets[variant] if targets else {}
            ratios += [_ratio(mine[t], lift * best_at[t]) for t, lift in policy.targets if t in best_at]
        scores[option] = min(ratios)
    option = max(scores, key=lambda o: (scores[o], o == "two_stage"))
    return scores[option], option


def tune(
    examples: pd.DataFrame,
    interactions: pd.DataFrame,
    catalog: Catalog,
    features: Callable[[pd.DataFrame, str], pd.DataFrame],
    cutoff: datetime,
    base: TrainParams,
    *,
    validation_days: int,
    budget_s: float,
    max_trials: int = 50,
    policy: GatePolicy | None = None,
    rules: Any = None,
    space: Mapping[str, Sequence[Any]] = SPACE,
    progress: Progress = log.info,
) -> TuneResult:
    """Choose `TrainParams` on the `validation_days` before `cutoff` (the holdout's start).

    Args:
        examples: positives before `cutoff` (gold/training_examples).
        interactions: every interaction before `cutoff - validation_days` (what users had seen).
        features: point-in-time lookup (Feast in production).
        base: the settings trial 0 fits; the others start from them.
        budget_s: no new trial starts once the next one would end past it (trial 0 always runs).
        max_trials: at most this many trials.
        policy: the gate's metric and variants (default `GatePolicy()`).
        rules: the gateway's rule settings (`scoring.rules.RuleConfig`).

    Returns:
        The best settings, every trial and the baselines' figures on the validation window.

    Raises:
        ValueError: the validation window has no user with history before it.
    """
    from models.evaluate import evaluate, prepare, stage_baselines
    from models.export import export
    from models.train import TRAINING_SET_PARAMS, fit, training_set

    policy = policy or GatePolicy()
    started = time.perf_counter()
    start = cutoff - timedelta(days=validation_days)
    stamps = pd.to_datetime(examples["event_timestamp"], utc=True)
    before = examples[stamps < pd.Timestamp(start)]
    window = examples[(stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(cutoff))]
    if before.empty or window.empty:
        raise ValueError(
            f"tuning needs positives before and inside the validation window {start:%Y-%m-%d}..{cutoff:%Y-%m-%d}: "
            "use fewer --validation-days or more data"
        )
    data = prepare(before, window, interactions, catalog, start, features)
    progress(
        f"validation window {start:%Y-%m-%d}..{cutoff:%Y-%m-%d}: {len(data.users):,} users; budget {budget_s:.0f} s"
    )
    rng = np.random.default_rng(base.seed)
    trials: list[Trial] = []
    training_sets: dict[tuple[Any, ...], Any] = {}  # trials that differ only in model settings share one
    with tempfile.TemporaryDirectory(prefix="towerflow-tune-") as scratch:
        staged = stage_baselines(data, Path(scratch) / "baselines")
        report = evaluate(data, None, None, staged, progress=lambda _: None, rules=rules)
        baselines = {v: {n: m[policy.metric] for n, m in report["metrics"][v].items()} for v in policy.variants}
        targets = {
            v: {t: max(m[t] for m in report["metrics"][v].values()) for t, _ in policy.targets} for v in policy.variants
        }
        best_params = base
        while len(trials) < max_trials:
            elapsed = time.perf_counter() - started
            typical = np.median([t.seconds for t in trials]) if trials else 0.0
            if trials and elapsed + typical > budget_s:
                break
            params = base if not trials else mutate(best_params, rng, space)
            if trials and any(params == _apply(base, t.changes) for t in trials):
                params = mutate(params, rng, space)  # a repeat teaches nothing: one more step
            trial_started = time.perf_counter()
            key = tuple(getattr(params, name) for name in TRAINING_SET_PARAMS)
            if key not in training_sets:
                training_sets[key] = training_set(
                    TrainingData(before, catalog, features), start, validation_days, params, lambda _: None
                )
            models = fit(training_sets[key], params, progress=lambda _: None)
            folder = Path(scratch) / f"trial-{len(trials)}"
            dirs = export(models, folder, start, {"fingerprint": f"tune-{len(trials)}"})
            scored = evaluate(data, dirs, None, {}, progress=lambda _: None, rules=rules)
            score, option = score_of(scored, baselines, policy, targets)
            changes = {n: getattr(params, n) for n in space if getattr(params, n) != getattr(base, n)}
            trial = Trial(
                number=len(trials),
                changes=changes,
                score=float(score),
                option=option,
                metrics={v: {o: scored["metrics"][v][o][policy.metric] for o in TRAINED} for v in policy.variants},
                seconds=time.perf_counter() - trial_started,
            )
            if not trials or trial.score > max(t.score for t in trials):
                best_params = params
            trials.append(trial)
            progress(
                f"trial {trial.number}: {changes or 'the given settings'} -> {score:.3f} ({option}) "
                f"in {trial.seconds:.0f} s; best {max(t.score for t in trials):.3f}"
            )
    result = TuneResult(
        best=best_params,
        trials=trials,
        validation=(start.date().isoformat(), cutoff.date().isoformat()),
        baselines=baselines,
        budget_s=budget_s,
        seconds=time.perf_counter() - started,
        users=len(data.users),
    )
    if result.best_trial.number == 0:
        result.notes.append("no trial beat the given settings on the validation window: they stay")
    return result


def _apply(base: TrainParams, changes: Mapping[str, Any]) -> TrainParams:
    return replace(base, **changes)


def write_report(result: TuneResult, out_dir: Path) -> tuple[Path, Path]:
    """`tuning.json` and `tuning.html` (trials best first, score per trial plot) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "tuning.json"
    json_path.write_text(json.dumps(result.to_json(), indent=2, default=str))
    rows = "".join(
        f"<tr><td>{t.number}</td><td>{html.escape(json.dumps({k: _plain(v) for k, v in t.changes.items()}))}</td>"
        f"<td>{t.score:.4f}</td><td>{t.option}</td><td>{t.seconds:.0f}</td></tr>"
        for t in result.ranked()
    )
    best = html.escape(json.dumps(result.to_json()["best"]))
    page = (
        "<!doctype html><meta charset='utf-8'><title>towerflow tuning</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:left}"
        "tr:nth-child(even){background:#f4f4f4}</style>"
        f"<h1>Tuning on {result.validation[0]} .. {result.validation[1]}</h1>"
        f"<p>{result.users:,} validation users; {len(result.trials)} trials in {result.seconds:.0f} s "
        f"(budget {result.budget_s:.0f} s). Score: the worst ratio, over the gated variants, of the best "
        "trained option's metric to the best baseline's (above 1 beats every baseline).</p>"
        f"<p>Chosen: <code>{best}</code></p>{_plot(result)}"
        "<table><tr><th>trial</th><th>changes from the given settings</th><th>score</th><th>option</th>"
        f"<th>seconds</th></tr>{rows}</table>" + "".join(f"<p>{html.escape(note)}</p>" for note in result.notes)
    )
    html_path = out_dir / "tuning.html"
    html_path.write_text(page)
    return json_path, html_path


def _plot(result: TuneResult) -> str:
    """The score of each trial and the best so far, as an inline PNG."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [t.number for t in result.trials]
    scores = [t.score for t in result.trials]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(numbers, scores, "o", label="trial")
    ax.plot(numbers, np.maximum.accumulate(scores), "-", label="best so far")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("trial")
    ax.set_ylabel("score (vs best baseline)")
    ax.legend()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return f"<img alt='scores' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
