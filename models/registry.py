"""The model registry is the TF Serving folder itself: `<models>/<model>/<version>/` plus
`<models>/models.config` with the `stable` and `canary` labels, and each version's metadata in
`assets.extra/towerflow.json` (metrics, data versions, params, code version, gate decision).

Both models (`retrieval`, `ranking`) are published under the same version number: a version is a
pair that was trained and evaluated together. Publishing is atomic per model: the SavedModel is
copied to `<model>/.tmp-<version>` and renamed, so a reader never sees half a version.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from serving.model_config import (
    ModelEntry,
    VersionPolicy,
    add_version,
    list_versions,
    locked,
    read_models_config,
    set_label,
    write_models_config,
)

MODELS = ("retrieval", "ranking")
METADATA = Path("assets.extra") / "towerflow.json"
KEEP = 3  # versions kept loaded: stable, canary and the previous stable (the rollback target)


class RegistryError(ValueError):
    """A registry request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: int
    labels: tuple[str, ...]
    metadata: dict[str, Any]


def config_path(models_dir: Path) -> Path:
    return models_dir / "models.config"


def metadata(models_dir: Path, model: str, version: int) -> dict[str, Any]:
    path = models_dir / model / str(version) / METADATA
    return json.loads(path.read_text()) if path.exists() else {}


def entries(models_dir: Path) -> dict[str, ModelEntry]:
    path = config_path(models_dir)
    return {e.name: e for e in read_models_config(path)} if path.exists() else {}


def labels(models_dir: Path, model: str) -> dict[str, int]:
    entry = entries(models_dir).get(model)
    return dict(entry.labels) if entry else {}


def list_models(models_dir: Path) -> list[VersionInfo]:
    """Every published version of every model, newest first, with its labels."""
    out = []
    for model in MODELS:
        by_version: dict[int, list[str]] = {}
        for label, version in labels(models_dir, model).items():
            by_version.setdefault(version, []).append(label)
        for version in sorted(list_versions(models_dir / model), reverse=True):
            info = VersionInfo(
                model, version, tuple(sorted(by_version.get(version, []))), metadata(models_dir, model, version)
            )
            out.append(info)
    return out


def labelled_dirs(models_dir: Path, label: str = "stable") -> dict[str, Path] | None:
    """{"retrieval": dir, "ranking": dir} of the versions carrying `label`, or None."""
    found = {}
    for model in MODELS:
        version = labels(models_dir, model).get(label)
        if version is None:
            return None
        found[model] = models_dir / model / str(version)
    return found


def next_version(models_dir: Path) -> int:
    versions = [v for model in MODELS for v in list_versions(models_dir / model)]
    return max(versions, default=0) + 1


def version_with(models_dir: Path, fingerprint: str) -> int | None:
    """The published version trained from exactly these inputs, if any (reruns publish nothing)."""
    for info in list_models(models_dir):
        if info.model == "retrieval" and info.metadata.get("fingerprint") == fingerprint:
            return info.version
    return None


def _load(models_dir: Path, model: str, version: int) -> None:
    """Add `version` to the model's load policy, creating the model's entry on first publish."""
    path = config_path(models_dir)
    with locked(path):
        current = entries(models_dir)
        if model not in current:
            entry = ModelEntry.under(models_dir, model, policy=VersionPolicy.specific(version))
            write_models_config(path, [*current.values(), entry])
            return
    add_version(path, model, version)


def _copy_atomic(source: Path, base: Path, version: int) -> Path:
    target = base / str(version)
    if target.exists():
        raise RegistryError(f"{target} already exists; versions are never overwritten")
    tmp = base / f".tmp-{version}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    base.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, tmp)
    tmp.rename(target)
    return target


def publish(
    models_dir: Path,
    staged: dict[str, Path],
    meta: dict[str, Any],
    wait_until_loaded: Callable[[str, int], bool] | None = None,
) -> int:
    """Publish a staged pair as the next version and label it `canary` (and `stable` when there
    is no stable version yet).

    Args:
        staged: {"retrieval": dir, "ranking": dir} SavedModels from `models.export`.
        meta: metadata written next to each version (metrics, data versions, params, ...).
        wait_until_loaded: called after the version is added to the server's policy and before a
            label moves to it, because TF Serving refuses a label on a version it has not
            loaded; None when no server is running.

    Returns:
        The new version number.
    """
    version = next_version(models_dir)
    for model in MODELS:
        target = _copy_atomic(staged[model], models_dir / model, version)
        (target / METADATA).parent.mkdir(exist_ok=True)
        (target / METADATA).write_text(json.dumps({**meta, "model": model, "version": version}, indent=2, default=str))
        _load(models_dir, model, version)
    for model in MODELS:
        if wait_until_loaded is not None and not wait_until_loaded(model, version):
            raise RegistryError(f"the model server did not load {model} version {version}; labels left unchanged")
    for model in MODELS:
        set_label(config_path(models_dir), model, "canary", version)
        if "stable" not in labels(models_dir, model):
            set_label(config_path(models_dir), model, "stable", version)
    prune(models_dir)
    return version


def prune(models_dir: Path, keep: int = KEEP) -> None:
    """Keep the labelled versions and the newest ones loaded (up to `keep`); files stay on disk."""
    path = config_path(models_dir)
    with locked(path):
        models = read_models_config(path)
        for i, entry in enumerate(models):
            if entry.policy.kind != "specific":
                continue
            wanted = set(entry.labels.values())
            for version in sorted(entry.policy.versions, reverse=True):
                if len(wanted) >= keep:
                    break
                wanted.add(version)
            models[i] = replace(entry, policy=VersionPolicy.specific(*sorted(wanted)))
        write_models_config(path, models)


def promote(models_dir: Path, model: str, version: int, label: str = "stable") -> dict[str, int]:
    """Point `label` of `model` at `version` (which must be published); returns the labels.

    The version is added to the load policy first. With a running server, the label moves only
    once it reports the version AVAILABLE (the gateway's `/readyz` tells); use this from the
    command line or the experiments DAG.
    """
    if model not in MODELS:
        raise RegistryError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    if version not in list_versions(models_dir / model):
        raise RegistryError(f"{model} version {version} is not published (have {list_versions(models_dir / model)})")
    previous = labels(models_dir, model).get(label)
    _load(models_dir, model, version)
    set_label(config_path(models_dir), model, label, version)
    if label == "stable" and previous is not None and previous != version:
        set_label(config_path(models_dir), model, "previous", previous)
    prune(models_dir)
    return labels(models_dir, model)


def rollback(models_dir: Path, model: str, version: int | None = None) -> dict[str, int]:
    """Point `stable` back at `version`, or at the version stable had before (`previous`)."""
    target = version if version is not None else labels(models_dir, model).get("previous")
    if target is None:
        raise RegistryError(f"{model} has no previous stable version to roll back to; name a version")
    return promote(models_dir, model, target, "stable")
