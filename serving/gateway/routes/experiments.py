"""`GET /v1/experiments/{experiment_id}/metrics`: an experiment's arms measured from the lake."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path

from experiments.analysis import ExperimentMetrics
from serving.gateway.auth import EXPERIMENTS_READ, Principal
from serving.gateway.deps import ResourcesDep, require_scope
from serving.gateway.schemas import Problem

if TYPE_CHECKING:  # main imports this module
    from serving.gateway.main import Resources

router = APIRouter(prefix="/v1", tags=["experiments"])
ExperimentsReader = Annotated[Principal, Depends(require_scope(EXPERIMENTS_READ))]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid bearer token."},
    403: {"model": Problem, "description": "The token lacks the `experiments:read` scope."},
    404: {"model": Problem, "description": "No experiment has this id."},
    503: {"model": Problem, "description": "The experiments database cannot be read."},
}


@router.get("/experiments/{experiment_id}/metrics", response_model=ExperimentMetrics, responses=ERRORS)
async def experiment_metrics(
    experiment_id: Annotated[str, Path(min_length=1, max_length=64)],
    reader: ExperimentsReader,
    resources: ResourcesDep,
) -> ExperimentMetrics:
    """Per arm since the experiment started (until it ended): impressions, clicks, purchases,
    CTR, conversion and revenue per impression with confidence intervals; each arm's difference
    to control with a p-value and an always-valid p-value (safe to check at any time); the
    decision the hourly experiments DAG would take (the same `TOWERFLOW_EXPERIMENT_*` policy), and
    the sample's progress toward its minimum.
    Clicks and purchases count for the impression whose `request_id` they quote, else for the
    user's latest impression of the item within a day before them."""
    return await asyncio.to_thread(measure, resources, experiment_id)


def measure(resources: Resources, experiment_id: str) -> ExperimentMetrics:
    """Blocking: the store read and the lake scan (DuckDB) run in a worker thread."""
    from experiments.analysis import experiment_metrics
    from experiments.lifecycle import control_arm, decision_policy
    from towerflow.lake import Lake

    experiment = resources.experiments_store().get(experiment_id)
    settings = resources.settings
    return experiment_metrics(
        Lake(settings.lake, settings.storage_options or None),
        experiment.id,
        experiment.started_at,
        experiment.ended_at or datetime.now(UTC),
        control=control_arm(experiment),
        arms=[arm.name for arm in experiment.arms],
        policy=decision_policy(settings),
    )
