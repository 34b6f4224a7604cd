"""A/B assignment: which model versions serve a user.

An experiment is a small JSON file (`settings.experiments_file`, default
`$TOWERFLOW_HOME/experiments.json`):

    {"id": "ranker-2026-11", "arms": [
        {"name": "control",   "weight": 0.9, "models": {"retrieval": "stable", "ranking": "stable"}},
        {"name": "treatment", "weight": 0.1, "models": {"retrieval": "stable", "ranking": "canary"}}]}

`models` maps each model to a version label of models.config (`stable`, `canary`) or a version
number. A user's arm is fixed by a hash of `<experiment id>:<user id>` (SHA-256, first 8 bytes as a
fraction of 2^64) against the cumulative weights: the same user always lands in the same arm, a
new experiment id reshuffles everyone, and no state is stored. Without a file every user gets
the single `control` arm on `stable`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

MODELS = ("retrieval", "ranking")


class Arm(BaseModel):
    """One arm: its share of users and the version label (or number) per model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    weight: float = Field(gt=0)
    models: dict[str, str] = Field(default_factory=lambda: dict.fromkeys(MODELS, "stable"))

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = set(value) - set(MODELS)
        if unknown:
            raise ValueError(f"unknown model(s) {sorted(unknown)}; expected {list(MODELS)}")
        return {m: str(value.get(m, "stable")) for m in MODELS}


class Experiment(BaseModel):
    """An experiment id and its arms (weights need not sum to 1; they are normalized)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    arms: tuple[Arm, ...] = Field(min_length=1)

    @field_validator("arms")
    @classmethod
    def _distinct(cls, value: tuple[Arm, ...]) -> tuple[Arm, ...]:
        names = [a.name for a in value]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be distinct, got {names}")
        return value

    def assign(self, user_id: str) -> Arm:
        """The user's arm (deterministic; see module doc)."""
        point = bucket(self.id, user_id) * sum(a.weight for a in self.arms)
        total = 0.0
        for arm in self.arms:
            total += arm.weight
            if point < total:
                return arm
        return self.arms[-1]


DEFAULT = Experiment(id="default", arms=(Arm(name="control", weight=1.0),))


def bucket(experiment_id: str, user_id: str) -> float:
    """A stable number in [0, 1) for this user in this experiment."""
    digest = hashlib.sha256(f"{experiment_id}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def load_experiment(path: Path) -> Experiment:
    """The experiment in `path`, or the single-arm default when the file does not exist.

    Raises:
        ValueError: the file is not a valid experiment (the message names the field).
    """
    if not path.exists():
        return DEFAULT
    try:
        return Experiment.model_validate_json(path.read_text())
    except ValueError as err:
        raise ValueError(f"experiment config {path} is invalid: {err}") from None


class VersionSpec(TypedDict, total=False):
    """Which version a model-server call names: a number, or a label (one of the two)."""

    version: int
    version_label: str


def version_spec(label_or_version: str) -> VersionSpec:
    """`{"version": n}` for a number, else `{"version_label": label}` (ModelClient keywords)."""
    if label_or_version.isdigit():
        return {"version": int(label_or_version)}
    return {"version_label": label_or_version}
