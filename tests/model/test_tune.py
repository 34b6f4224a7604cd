"""Tuning (models.tune): trial settings fitted before a validation window and scored on it as the
gate scores, never reading the holdout; the best trial is what it chooses, within its budget."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from models.train import TrainParams

pytestmark = pytest.mark.training

BASE = TrainParams(
    retrieval_epochs=1, ranking_epochs=1, dim=16, batch_size=256, rank_candidates=1000, rank_rows=60, seed=3
)
SPACE = {"dim": (16, 32), "retrieval_epochs": (1, 2), "learning_rate": (0.01, 0.03)}
VALIDATION_DAYS = 6


class Recording:
    """The world's feature lookup, remembering the latest moment anything asked about."""

    def __init__(self, lookup) -> None:
        self.lookup, self.latest = lookup, pd.Timestamp.min.tz_localize("UTC")

    def __call__(self, entities: pd.DataFrame, service: str) -> pd.DataFrame:
        self.latest = max(self.latest, pd.to_datetime(entities["event_timestamp"], utc=True).max())
        return self.lookup(entities, service)

    def columns(self, service: str):
        return self.lookup.columns(service)


def _tune(world, lookup, **kwargs):
    from models.tune import tune

    # The holdout's rows go in too: tuning must leave them alone by itself.
    examples = pd.concat([world.examples, world.holdout], ignore_index=True)
    start = world.cutoff - timedelta(days=VALIDATION_DAYS)
    seen = world.events[world.events["timestamp"] < start]
    return tune(
        examples,
        seen,
        world.catalog,
        lookup,
        world.cutoff,
        BASE,
        validation_days=VALIDATION_DAYS,
        space=SPACE,
        progress=lambda _: None,
        **kwargs,
    )


def test_tuning_scores_trials_before_the_holdout_and_keeps_the_best(world, tmp_path: Path) -> None:
    from models.tune import tuned_params, write_report

    lookup = Recording(world.lookup)
    result = _tune(world, lookup, budget_s=3600, max_trials=3)

    assert lookup.latest <= world.cutoff - timedelta(days=VALIDATION_DAYS)  # nothing from the holdout
    assert result.validation == (
        (world.cutoff - timedelta(days=VALIDATION_DAYS)).date().isoformat(),
        world.cutoff.date().isoformat(),
    )
    assert [t.number for t in result.trials] == [0, 1, 2]
    assert result.trials[0].changes == {}  # the given settings come first
    assert all(t.changes for t in result.trials[1:])
    assert all(set(t.changes) <= set(SPACE) and t.score > 0 for t in result.trials)
    best = result.best_trial
    assert best.score == max(t.score for t in result.trials)
    assert result.best == tuned_params(BASE, best.changes)
    assert set(result.baselines) == {"all", "new"} and all(result.baselines.values())

    json_path, html_path = write_report(result, tmp_path / "tuning")
    written = json.loads(json_path.read_text())
    assert tuned_params(BASE, written["best"]) == result.best
    assert written["best_trial"] == best.number and len(written["trials"]) == 3
    assert "Tuning on" in html_path.read_text() and "data:image/png" in html_path.read_text()


def test_no_trial_starts_past_the_budget(world) -> None:
    result = _tune(world, world.lookup, budget_s=0, max_trials=5)
    assert len(result.trials) == 1 and result.best == BASE
    assert result.notes  # says the given settings stay
