"""The run's training settings (`towerflow.tasks`): what the run's tuning chose, if it tuned, with
an explicit epoch count still winning; a run told not to tune trains with the defaults even when
an earlier try of it tuned."""

from __future__ import annotations

import json
from pathlib import Path

from models.train import TrainParams
from towerflow import tasks
from towerflow.settings import get_settings

RUN_DATE = "2025-01-02"


def _tuned(home: Path, best: dict) -> Path:
    path = home / "runs" / RUN_DATE / "tuning" / "tuning.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"best": best, "fingerprint": "x"}))
    return path


def test_the_training_steps_use_what_tuning_chose(home: Path) -> None:
    default = TrainParams(seed=get_settings().train_seed)
    assert tasks._train_params(get_settings(), RUN_DATE, None) == default
    _tuned(home, {"dim": 32, "ranking_layers": [64], "retrieval_epochs": 4})
    params = tasks._train_params(get_settings(), RUN_DATE, None)
    assert (params.dim, params.ranking_layers, params.retrieval_epochs) == (32, (64,), 4)
    assert params.learning_rate == default.learning_rate  # what tuning did not choose stays
    explicit = tasks._train_params(get_settings(), RUN_DATE, 2)
    assert (explicit.dim, explicit.retrieval_epochs, explicit.ranking_epochs) == (32, 2, 2)


def test_a_run_without_tuning_forgets_an_earlier_choice(home: Path) -> None:
    chosen = _tuned(home, {"dim": 32})
    assert tasks.tune_models(RUN_DATE, enabled=False, budget_minutes=1) == {"tuned": False}
    assert not chosen.exists()
    assert tasks._train_params(get_settings(), RUN_DATE, None) == TrainParams(seed=get_settings().train_seed)
