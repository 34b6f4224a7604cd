"""A small world with planted tastes (`testsupport.worlds`) and models trained on it once per
session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from jobs.synth import SynthConfig
from testsupport.worlds import World, make_world

CFG = SynthConfig(users=900, items=240, days=36, seed=11, start=date(2025, 2, 1))
HOLDOUT_DAYS = 6


@pytest.fixture(scope="session")
def world() -> World:
    return make_world(CFG, HOLDOUT_DAYS)


@pytest.fixture(scope="session")
def world_of():
    """`make_world`, for tests that build worlds of other shapes."""
    return make_world


@dataclass
class Trained:
    models: object  # models.train.TrainedModels
    staged: dict[str, Path]


@pytest.fixture(scope="session")
def trained(world: World, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from models.export import export
    from models.train import TrainingData, TrainParams, train

    params = TrainParams(
        retrieval_epochs=3, ranking_epochs=2, dim=32, batch_size=256, rank_candidates=1000, rank_rows=120, seed=5
    )
    data = TrainingData(world.examples, world.catalog, world.lookup)
    models = train(data, world.cutoff, HOLDOUT_DAYS, params)
    staged = export(models, tmp_path_factory.mktemp("staged"), world.cutoff, {"fingerprint": "test"})
    return Trained(models, staged)
