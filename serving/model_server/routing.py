"""The request side of the version manager: which loaded version a request names.

The manager rebuilds a `Route` per model whenever a version or a label changes and swaps the
table in with one assignment; `resolve` reads it without a lock. `select_states` answers
GetModelStatus from a copy of one model's versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from tensorflow_serving.apis import get_model_status_pb2

from serving.model_server.errors import ServingError
from serving.model_server.servable import Servable

State = get_model_status_pb2.ModelVersionStatus.State


@dataclass
class VersionState:
    """Where one version is in its life, as GetModelStatus reports it."""

    state: int = State.START
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""
    servable: Servable | None = None


@dataclass(frozen=True)
class Route:
    """What the request path needs for one model; replaced whole, never mutated, so readers
    need no lock."""

    available: dict[int, Servable]
    latest: Servable | None
    labels: dict[str, int]


def route_of(versions: Mapping[int, VersionState], labels: Mapping[str, int]) -> Route:
    """The route of one model: its AVAILABLE versions, the newest of them, its labels."""
    available = {
        v: vs.servable for v, vs in versions.items() if vs.state == State.AVAILABLE and vs.servable is not None
    }
    latest = available[max(available)] if available else None
    return Route(available, latest, dict(labels))


def resolve(routes: Mapping[str, Route], spec) -> Servable:
    """The loaded version a `ModelSpec` names.

    Raises:
        ServingError: NOT_FOUND (model or version not loaded), INVALID_ARGUMENT (no name,
            unknown label).
    """
    name = spec.name
    if not name:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
    route = routes.get(name)
    choice = spec.WhichOneof("version_choice")
    if choice == "version_label":
        version = route.labels.get(spec.version_label) if route else None
        if version is None:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Unrecognized servable version label: {spec.version_label}",
            )
    elif choice == "version":
        version = spec.version.value
    else:
        if route is None or route.latest is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return route.latest
    servable = route.available.get(version) if route else None
    if servable is None:
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")
    return servable


def select_states(
    spec, versions: Mapping[int, VersionState], labels: Mapping[str, int]
) -> list[tuple[int, VersionState]]:
    """(version, state) pairs of one model for GetModelStatus, newest first, or the one `spec` names.

    Raises:
        ServingError: NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for an
            unknown label.
    """
    name = spec.name
    choice = spec.WhichOneof("version_choice")
    if choice in ("version", "version_label"):
        if choice == "version_label":
            if spec.version_label not in labels:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {spec.version_label}",
                )
            version = labels[spec.version_label]
        else:
            version = spec.version.value
        if version not in versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
        return [(version, versions[version])]
    if not versions:
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
    return sorted(versions.items(), reverse=True)
