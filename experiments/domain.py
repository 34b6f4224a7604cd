"""Experiments as the gateway, the command line and the analysis see them: arms with traffic
shares and the model versions they serve, the deterministic assignment of a user to an arm, and
the errors callers map to their own terms (HTTP status, exit code).

An experiment runs on a *surface* (a place that shows recommendations: `home` is the
recommendations route's), at most one at a time per surface. Each arm has a share in percent
(the shares sum to 100) and, per model (`retrieval`, `ranking`), a version label of
models.config (`stable`, `canary`) or a version number.

Assignment: SHA-256 of `<salt>:<user id>`, its first 8 bytes as a fraction of 2^64, against the
arms' cumulative shares in the arms' order. The same user always lands in the same arm of an
experiment (sticky, and nothing is stored); another salt reshuffles everyone. A surface with no
running experiment serves `control(surface)`: one arm, `control`, on `stable`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MODELS = ("retrieval", "ranking")
STABLE = "stable"
DEFAULT_SURFACE = "home"
#: The id (and salt) of the single-arm experiment a surface without a running one serves.
DEFAULT_ID = "default"
CONTROL = "control"
#: Shares are percent and must sum to 100 within this.
SHARE_TOLERANCE = 1e-6
Status = Literal["running", "stopped"]
#: Why an experiment ended: its variant was promoted, rolled back, or neither won.
Decision = Literal["promote", "rollback", "inconclusive"]
DECISIONS: tuple[str, ...] = get_args(Decision)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
#: A version label of models.config or a version number (what `towerflow models list` shows).
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


# -- errors ---------------------------------------------------------------------------------------


class ExperimentError(Exception):
    """Base of the experiments' errors; the message says what to do next."""


class ExperimentNotFound(ExperimentError, LookupError):
    """No experiment has this id (an API answers 404)."""

    def __init__(self, experiment_id: object) -> None:
        super().__init__(f"no experiment has the id {str(experiment_id)!r}; `towerflow experiments list` shows them")
        self.experiment_id = str(experiment_id)


class InvalidExperiment(ExperimentError, ValueError):
    """An experiment that cannot run as given (an API answers 422).

    Attributes:
        field: the first field at fault, e.g. `arms`, `arms.treatment.share`, `decision`.
        errors: every `(field, problem)` found.
    """

    def __init__(self, field: str, problem: str, more: Sequence[tuple[str, str]] = ()) -> None:
        self.field = field
        self.errors = [(field, problem), *more]
        super().__init__("; ".join(f"{f}: {p}" for f, p in self.errors))


class ExperimentConflict(ExperimentError):
    """The request conflicts with the experiments' current state (an API answers 409)."""


class SurfaceBusy(ExperimentConflict):
    """Another experiment is already running on the surface."""

    def __init__(self, surface: str, running: Experiment) -> None:
        super().__init__(
            f"experiment {running.id} ({running.name!r}) is already running on surface {surface!r}; "
            f"stop it first: towerflow experiments stop {running.id}"
        )
        self.surface = surface
        self.running = running


class AlreadyStopped(ExperimentConflict):
    """The experiment has ended already."""

    def __init__(self, experiment: Experiment) -> None:
        ended = experiment.ended_at.isoformat(timespec="seconds") if experiment.ended_at else "before"
        super().__init__(f"experiment {experiment.id} ({experiment.name!r}) was stopped at {ended}")
        self.experiment = experiment


class StoreUnavailable(ExperimentError):
    """The experiments database cannot be reached or is newer than this code (an API answers 503)."""


# -- arms and experiments -------------------------------------------------------------------------


class Arm(BaseModel):
    """One arm: its share of the surface's users (percent) and the version each model serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    share: float = Field(gt=0, le=100, description="Percent of the surface's users.")
    models: dict[str, str] = Field(default_factory=lambda: dict.fromkeys(MODELS, STABLE))

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; expected {list(MODELS)}")
        models = {m: str(value.get(m, STABLE)).strip() for m in MODELS}
        bad = {m: v for m, v in models.items() if not re.fullmatch(LABEL_PATTERN, v) or len(v) > 64}
        if bad:
            raise ValueError(f"{bad} is not a version label (e.g. stable, canary) or a version number")
        return models

    def describe(self) -> str:
        """`treatment 10% (retrieval stable, ranking canary)`."""
        models = ", ".join(f"{m} {v}" for m, v in self.models.items())
        return f"{self.name} {self.share:g}% ({models})"


def _check_arms(arms: tuple[Arm, ...]) -> tuple[Arm, ...]:
    names = [a.name for a in arms]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"arm names must be distinct; repeated: {', '.join(repeated)}")
    total = sum(a.share for a in arms)
    if abs(total - 100) > SHARE_TOLERANCE:
        parts = " + ".join(f"{a.share:g} ({a.name})" for a in arms)
        raise ValueError(f"the arms' shares must sum to 100 (percent), not {parts} = {total:g}")
    return arms


class NewExperiment(BaseModel):
    """What `ExperimentStore.create` starts; build it with `parse` for errors naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    surface: str = Field(default=DEFAULT_SURFACE, min_length=1, max_length=64, pattern=NAME_PATTERN)
    arms: tuple[Arm, ...] = Field(min_length=1)
    #: None: a random one (a new shuffle of the users).
    salt: str | None = Field(default=None, min_length=1, max_length=64)
    #: See `Experiment.canary_version`.
    canary_version: int | None = Field(default=None, ge=1)

    _arms = field_validator("arms")(_check_arms)

    @classmethod
    def parse(cls, fields: Mapping[str, Any]) -> NewExperiment:
        """`fields` validated.

        Raises:
            InvalidExperiment: naming each field at fault (arms by name: `arms.treatment.share`).
        """
        try:
            return cls.model_validate(dict(fields))
        except ValidationError as err:
            raise _invalid(err, fields) from None


def _invalid(err: ValidationError, fields: Mapping[str, Any]) -> InvalidExperiment:
    arms = fields.get("arms")
    errors = err.errors()
    # Pydantic also calls a tuple whose every item failed too short: the items' errors say more.
    inner = {tuple(e["loc"][:n]) for e in errors for n in range(len(e["loc"]))}
    found = []
    for error in errors:
        if error.get("type") == "too_short" and tuple(error["loc"]) in inner:
            continue
        loc = list(error.get("loc", ()))
        if len(loc) >= 2 and loc[0] == "arms" and isinstance(loc[1], int) and isinstance(arms, Sequence):
            arm = arms[loc[1]] if loc[1] < len(arms) else None
            name = arm.get("name") if isinstance(arm, Mapping) else getattr(arm, "name", None)
            loc[1] = name if isinstance(name, str) and name else f"#{loc[1] + 1}"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        found.append((".".join(map(str, loc)) or "experiment", message))
    return InvalidExperiment(found[0][0], found[0][1], found[1:])


class Experiment(BaseModel):
    """An experiment as stored: the arms a surface's users are split into, and how it ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="As served and logged with each impression (`experiment_id`).")
    name: str
    surface: str
    salt: str
    arms: tuple[Arm, ...] = Field(min_length=1)
    status: Status = "running"
    started_at: datetime
    ended_at: datetime | None = None
    decision: Decision | None = None
    decision_reason: str | None = None
    canary_version: int | None = Field(
        default=None,
        description="The model version whose publication as `canary` started this experiment; "
        "None when a person started it.",
    )

    _arms = field_validator("arms")(_check_arms)

    def assign(self, user_id: str) -> Arm:
        """The user's arm (deterministic and sticky: see the module doc)."""
        return assign(self.arms, self.salt, user_id)

    def arm(self, name: str) -> Arm | None:
        """The arm called `name`, if there is one."""
        return next((a for a in self.arms if a.name == name), None)

    def describe(self) -> str:
        """One line for logs: `7 'ranker-canary' on home: control 90% (...), treatment 10% (...)`."""
        return f"{self.id} {self.name!r} on {self.surface}: " + ", ".join(a.describe() for a in self.arms)


@cache
def control(surface: str = DEFAULT_SURFACE) -> Experiment:
    """What a surface without a running experiment serves: every user in `control`, on `stable`."""
    return Experiment(
        id=DEFAULT_ID,
        name=DEFAULT_ID,
        surface=surface,
        salt=DEFAULT_ID,
        arms=(Arm(name=CONTROL, share=100),),
        started_at=datetime(1970, 1, 1, tzinfo=UTC),
    )


def bucket(salt: str, user_id: str) -> float:
    """A stable number in [0, 1) for this user under this salt."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(arms: Sequence[Arm], salt: str, user_id: str) -> Arm:
    """The arm of `arms` that `user_id` falls into under `salt` (see the module doc)."""
    point = bucket(salt, user_id) * sum(a.share for a in arms)
    total = 0.0
    for arm in arms:
        total += arm.share
        if point < total:
            return arm
    return arms[-1]


def from_legacy_json(text: str, *, surface: str = DEFAULT_SURFACE, name: str | None = None) -> NewExperiment:
    """The experiment of an `experiments.json` file the gateway used to read at start
    (`{"id": ..., "arms": [{"name", "weight", "models"}]}`), with shares in percent and the file's
    id as the salt, so every user keeps the arm the file gave them.

    Raises:
        InvalidExperiment: the text is not such a file (the message names the field).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidExperiment("file", f"not JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("arms"), list):
        raise InvalidExperiment("file", 'expected {"id": "...", "arms": [{"name", "weight", "models"}, ...]}')
    arms = [a if isinstance(a, dict) else {} for a in data["arms"]]
    weights: list[float] = []
    for n, arm in enumerate(arms):
        weight = arm.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            raise InvalidExperiment(f"arms.#{n + 1}.weight", f"must be a positive number, not {weight!r}")
        weights.append(float(weight))
    total = sum(weights)
    fields = {
        "name": name or data["id"],
        "surface": surface,
        "salt": data["id"],
        "arms": [
            {"name": a.get("name"), "share": 100 * w / total, "models": a.get("models", {})}
            for a, w in zip(arms, weights, strict=True)
        ],
    }
    return NewExperiment.parse(fields)
