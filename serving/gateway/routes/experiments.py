"""`GET /v1/experiments/{experiment_id}/metrics`: an experiment's arms measured from the lake."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from experiments.analysis import ExperimentMetrics
from experiments.domain import Experiment
from serving.gateway.auth import EXPERIMENTS_ADMIN, EXPERIMENTS_READ, Principal
from serving.gateway.deps import ResourcesDep, require_scope
from serving.gateway.schemas import Problem

if TYPE_CHECKING:  # main imports this module
    from serving.gateway.main import Resources

router = APIRouter(prefix="/v1", tags=["experiments"])
ExperimentsReader = Annotated[Principal, Depends(require_scope(EXPERIMENTS_READ))]
ExperimentsAdmin = Annotated[Principal, Depends(require_scope(EXPERIMENTS_ADMIN))]
ExperimentId = Annotated[str, Path(min_length=1, max_length=64)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid bearer token."},
    403: {"model": Problem, "description": "The token lacks the `experiments:read` scope."},
    404: {"model": Problem, "description": "No experiment has this id."},
    503: {"model": Problem, "description": "The experiments database cannot be read."},
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    403: {"model": Problem, "description": "The token lacks the `experiments:admin` scope."},
    409: {
        "model": Problem,
        "description": "An experiment is already running on the surface, or this one has ended already.",
    },
    422: {"model": Problem, "description": "A field is invalid, e.g. shares not summing to 100; `message` names it."},
}


class ExperimentIn(BaseModel):
    """An experiment to start now (`towerflow experiments create` does the same)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="What it tests, for people.")
    surface: str = Field("home", min_length=1, max_length=64, description="Where its users are split.")
    arms: list[dict[str, Any]] = Field(
        min_length=1,
        description='In assignment order: `{"name": "canary", "share": 10, "models": {"ranking": "canary"}}`; '
        "shares in percent summing to 100; a model left out serves `stable`.",
    )
    salt: str | None = Field(None, max_length=64, description="An earlier experiment's, to keep users in their arms.")


class StopIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["promote", "rollback", "inconclusive"] | None = None
    reason: str | None = Field(None, max_length=2000)


@router.post("/experiments", status_code=201, response_model=Experiment, responses=ADMIN_ERRORS)
async def create_experiment(body: ExperimentIn, admin: ExperimentsAdmin, resources: ResourcesDep) -> Experiment:
    """Start an experiment on a surface now: this gateway serves it at once, the others within
    `TOWERFLOW_EXPERIMENTS_REFRESH_S`. 409 while another runs on the surface."""

    def create() -> Experiment:
        store = resources.experiments_store()
        created = store.create(name=body.name, arms=body.arms, surface=body.surface, salt=body.salt)
        resources.refresh_experiments()
        return created

    return await asyncio.to_thread(create)


@router.get("/experiments/{experiment_id}", response_model=Experiment, responses=ERRORS)
async def get_experiment(experiment_id: ExperimentId, reader: ExperimentsReader, resources: ResourcesDep) -> Experiment:
    """An experiment: its arms, status and, once stopped, the decision and why."""
    return await asyncio.to_thread(lambda: resources.experiments_store().get(experiment_id))


@router.post("/experiments/{experiment_id}/stop", response_model=Experiment, responses=ADMIN_ERRORS)
async def stop_experiment(
    experiment_id: ExperimentId, body: StopIn, admin: ExperimentsAdmin, resources: ResourcesDep
) -> Experiment:
    """End an experiment: its surface serves `stable` again. Moving model labels is `towerflow
    models promote/rollback`'s (or the hourly experiments DAG's) part. 409 when it has ended."""

    def stop() -> Experiment:
        stopped = resources.experiments_store().stop(experiment_id, decision=body.decision, reason=body.reason)
        resources.refresh_experiments()
        return stopped

    return await asyncio.to_thread(stop)


@router.get("/experiments/{experiment_id}/metrics", response_model=ExperimentMetrics, responses=ERRORS)
async def experiment_metrics(
    experiment_id: ExperimentId,
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
    from experiments.health import read_arm_health
    from experiments.lifecycle import control_arm, decision_policy
    from towerflow.lake import Lake

    experiment = resources.experiments_store().get(experiment_id)
    settings = resources.settings
    lake = Lake(settings.lake, settings.storage_options or None)
    end = experiment.ended_at or datetime.now(UTC)
    arms, control = [arm.name for arm in experiment.arms], control_arm(experiment)
    return experiment_metrics(
        lake,
        experiment.id,
        experiment.started_at,
        end,
        control=control,
        arms=arms,
        policy=decision_policy(settings),
        health=read_arm_health(lake, experiment.id, experiment.started_at, end, arms, control=control),
    )
