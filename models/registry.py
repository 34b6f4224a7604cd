"""The model registry is the TF Serving folder itself: `<models>/<model>/<version>/` plus
`<models>/models.config` with the `stable`, `canary` and `previous` labels, and each version's
metadata in `assets.extra/towerflow.json` (metrics, data versions, params, code version, gate
decision).

Both models (`retrieval`, `ranking`) are published under the same version number: a version is a
pair that was trained and evaluated together, and it is published as one unit with one manifest,
`<models>/publications/<version>.json` (both model versions, the metadata, the fingerprint and the
state: `reserved`, `copied`, `loaded`, `published`). The server and the gateway follow
`models.config`, so a pair becomes visible in two atomic writes of it: one adds both versions to
the load policy, the next (once the server has loaded them) moves both models' labels.

Every step of `publish` can be repeated: a publish that crashed part way is finished by the next
publish of the same fingerprint, under the same version number. `promote` and `rollback` are each
one locked read-modify-write of `models.config`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from towerflow.model_config import (
    ModelEntry,
    VersionPolicy,
    is_version_dir,
    list_versions,
    locked,
    read_models_config,
    write_models_config,
)

MODELS = ("retrieval", "ranking")
METADATA = Path("assets.extra") / "towerflow.json"
KEEP = 3  # versions kept loaded: stable, canary and the previous stable (the rollback target)
PUBLICATIONS = "publications"  # <models>/publications/<version>.json, one manifest per pair
STATES = ("reserved", "copied", "loaded", "published")


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


def publications(models_dir: Path) -> list[dict[str, Any]]:
    """Every pair's manifest, finished or not, oldest first."""
    folder = models_dir / PUBLICATIONS
    paths = folder.glob("*.json") if folder.is_dir() else []
    found = [json.loads(p.read_text()) for p in paths if p.stem.isdigit()]
    return sorted(found, key=lambda m: m["version"])


def publication_of(models_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest of the pair made from these inputs, finished or not."""
    return next((m for m in publications(models_dir) if m["fingerprint"] == fingerprint), None)


def next_version(models_dir: Path) -> int:
    """One past every version on disk and every version a publication has reserved."""
    versions = [v for model in MODELS for v in list_versions(models_dir / model)]
    versions += [m["version"] for m in publications(models_dir)]
    return max(versions, default=0) + 1


def version_with(models_dir: Path, fingerprint: str) -> int | None:
    """The version trained from exactly these inputs, if its publication finished (reruns
    publish nothing; a publication that stopped part way is for `publish` to finish)."""
    manifest = publication_of(models_dir, fingerprint)
    if manifest is not None:
        return manifest["version"] if manifest["state"] == "published" else None
    with_manifest = {m["version"] for m in publications(models_dir)}
    for info in list_models(models_dir):  # versions published before manifests existed
        if info.model == "retrieval" and info.version not in with_manifest:
            if info.metadata.get("fingerprint") == fingerprint:
                return info.version
    return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically, like models.config: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(data, indent=2, default=str))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _advance(models_dir: Path, manifest: dict[str, Any], state: str) -> dict[str, Any]:
    if STATES.index(manifest["state"]) >= STATES.index(state):
        return manifest
    manifest = {**manifest, "state": state}
    _write_json(models_dir / PUBLICATIONS / f"{manifest['version']}.json", manifest)
    return manifest


def _content_fingerprint(staged: dict[str, Path], meta: dict[str, Any]) -> str:
    """What a pair is when its metadata names no fingerprint: the metadata and every staged file."""
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    for model in MODELS:
        root = Path(staged[model])
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{model}/{path.relative_to(root)}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _copy(source: Path, base: Path, version: int, meta: dict[str, Any]) -> None:
    """Copy a SavedModel to `<base>/<version>` with its metadata; the folder appears whole (temp
    folder + rename). A folder already there is this publication's, copied before a crash: the
    number was reserved for it."""
    target = base / str(version)
    if target.exists():
        ours = metadata(base.parent, base.name, version).get("fingerprint") == meta["fingerprint"]
        if ours and is_version_dir(target):
            return
        raise RegistryError(f"{target} already exists and is not this publication's; versions are never overwritten")
    tmp = base / f".tmp-{version}"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a crashed attempt
    base.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, tmp)
    (tmp / METADATA).parent.mkdir(exist_ok=True)
    (tmp / METADATA).write_text(json.dumps(meta, indent=2, default=str))
    tmp.rename(target)


def _with_version(entry: ModelEntry, version: int) -> ModelEntry:
    """The entry with `version` in its load policy (other policies already follow the disk)."""
    if entry.policy.kind != "specific" or version in entry.policy.versions:
        return entry
    return replace(entry, policy=VersionPolicy.specific(*entry.policy.versions, version))


def _pruned(entry: ModelEntry, keep: int = KEEP) -> ModelEntry:
    """Keep the labelled versions and the newest ones loaded (up to `keep`); files stay on disk."""
    if entry.policy.kind != "specific":
        return entry
    wanted = set(entry.labels.values())
    for version in sorted(entry.policy.versions, reverse=True):
        if len(wanted) >= keep:
            break
        wanted.add(version)
    return replace(entry, policy=VersionPolicy.specific(*sorted(wanted)))


def _transaction(models_dir: Path, change: Callable[[dict[str, ModelEntry]], None]) -> dict[str, ModelEntry]:
    """One locked read-modify-write of models.config: `change` edits {name: entry} in place; the
    file is written once, and only if something changed."""
    path = config_path(models_dir)
    with locked(path):
        before = {e.name: e for e in read_models_config(path)} if path.exists() else {}
        after = dict(before)
        change(after)
        if after != before or not path.exists():
            write_models_config(path, after.values())
        return after


def _load_pair(models_dir: Path, version: int) -> None:
    """Both models' `version` into the load policy in one write (an entry is made on first publish)."""

    def change(found: dict[str, ModelEntry]) -> None:
        for model in MODELS:
            entry = found.get(model)
            if entry is None:
                found[model] = ModelEntry.under(models_dir, model, policy=VersionPolicy.specific(version))
            else:
                found[model] = _with_version(entry, version)

    _transaction(models_dir, change)


def _label_pair(models_dir: Path, version: int) -> None:
    """Both models' labels in one write: `canary` to `version` (never back from a newer one, so a
    late retry of an older run moves nothing), `stable` too when there is none; then prune."""

    def change(found: dict[str, ModelEntry]) -> None:
        for model in MODELS:
            entry = _entry(found, models_dir, model)
            if version not in entry.policy.select(list_versions(entry.base_path)):
                raise RegistryError(f"{model} version {version} is not in the load policy; publish it again")
            moved = dict(entry.labels)
            if moved.get("canary", 0) <= version:
                moved["canary"] = version
            moved.setdefault("stable", version)
            found[model] = _pruned(replace(entry, labels=moved))

    _transaction(models_dir, change)


def publish(
    models_dir: Path,
    staged: dict[str, Path],
    meta: dict[str, Any],
    wait_until_loaded: Callable[[str, int], bool] | None = None,
) -> int:
    """Publish a staged pair as the next version and label it `canary` (and `stable` when there
    is no stable version yet), or finish publishing it if an earlier call stopped part way.

    The steps, each recorded in the pair's manifest: reserve the number (`reserved`), copy both
    SavedModels (`copied`), add both to the load policy in one write (`loaded`), wait for the
    server, move both models' labels in one write (`published`). Publishes hold a lock on
    `<models>/publish.lock`, so two never take the same number.

    Args:
        staged: {"retrieval": dir, "ranking": dir} SavedModels from `models.export`.
        meta: metadata written next to each version (metrics, data versions, params, ...). Its
            `fingerprint` names the pair; without one, the pair's files and metadata do.
        wait_until_loaded: called after the versions are added to the server's policy and before a
            label moves to them, because TF Serving refuses a label on a version it has not
            loaded; None when no server is running.

    Returns:
        The pair's version number.
    """
    fingerprint = meta.get("fingerprint") or _content_fingerprint(staged, meta)
    models_dir.mkdir(parents=True, exist_ok=True)
    with locked(models_dir / "publish"):
        manifest = publication_of(models_dir, fingerprint)
        if manifest is None:
            version = next_version(models_dir)
            manifest = {
                "version": version,
                "models": dict.fromkeys(MODELS, version),
                "fingerprint": fingerprint,
                "state": "reserved",
                "metadata": meta,
            }
            _write_json(models_dir / PUBLICATIONS / f"{version}.json", manifest)
        version = manifest["version"]
        if manifest["state"] == "published":
            return version
        for model in MODELS:
            model_meta = {**manifest["metadata"], "fingerprint": fingerprint, "model": model, "version": version}
            _copy(staged[model], models_dir / model, version, model_meta)
        manifest = _advance(models_dir, manifest, "copied")
        _load_pair(models_dir, version)
        manifest = _advance(models_dir, manifest, "loaded")
        for model in MODELS:
            if wait_until_loaded is not None and not wait_until_loaded(model, version):
                raise RegistryError(f"the model server did not load {model} version {version}; labels left unchanged")
        _label_pair(models_dir, version)
        _advance(models_dir, manifest, "published")
    return version


def prune(models_dir: Path, keep: int = KEEP) -> None:
    """Keep the labelled versions and the newest ones loaded (up to `keep`); files stay on disk."""
    _transaction(models_dir, lambda found: found.update({n: _pruned(e, keep) for n, e in found.items()}))


def _entry(found: dict[str, ModelEntry], models_dir: Path, model: str) -> ModelEntry:
    if model not in found:
        raise RegistryError(f"{model} is not in {config_path(models_dir)}; publish a version first")
    return found[model]


def _ensure_loaded(models_dir: Path, model: str, version: int) -> bool:
    """Add `version` to the model's load policy in one locked write; True if it was not kept."""
    kept = []

    def change(found: dict[str, ModelEntry]) -> None:
        entry = found.get(model)
        kept.append(entry is not None and version in entry.policy.select(list_versions(entry.base_path)))
        if entry is None:
            entry = ModelEntry.under(models_dir, model, policy=VersionPolicy.specific(version))
        found[model] = _with_version(entry, version)

    _transaction(models_dir, change)
    return not kept[0]


def promote(
    models_dir: Path,
    model: str,
    version: int,
    label: str = "stable",
    wait_until_loaded: Callable[[str, int], bool] | None = None,
) -> dict[str, int]:
    """Point `label` of `model` at `version` (which must be published); returns the labels.

    Moving `stable` sets `previous` to the version it replaces, in the same locked write, so
    concurrent promotes and rollbacks never lose each other's change. A version the load policy
    does not keep is added to it first and, given `wait_until_loaded`, the label moves once the
    server has loaded it (TF Serving refuses a label on a version it has not loaded).
    """
    if model not in MODELS:
        raise RegistryError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    if version not in list_versions(models_dir / model):
        raise RegistryError(f"{model} version {version} is not published (have {list_versions(models_dir / model)})")
    if _ensure_loaded(models_dir, model, version) and wait_until_loaded is not None:
        if not wait_until_loaded(model, version):
            raise RegistryError(f"the model server did not load {model} version {version}; labels left unchanged")
    return _move(models_dir, model, label, version)


def _relabel(
    found: dict[str, ModelEntry], models_dir: Path, model: str, label: str, version: int | None
) -> dict[str, int]:
    """In `found`: `label` of `model` to `version` (None: to `previous`), `previous` to what
    `stable` was, the version kept in the load policy, then prune; returns the new labels."""
    entry = _entry(found, models_dir, model)
    target = version if version is not None else entry.labels.get("previous")
    if target is None:
        raise RegistryError(f"{model} has no previous stable version to roll back to; name a version")
    on_disk = list_versions(entry.base_path)
    if target not in on_disk:
        raise RegistryError(f"{model} version {target} is not on disk under {entry.base_path}")
    entry = _with_version(entry, target)
    if target not in entry.policy.select(on_disk):
        raise RegistryError(f"{model}: the {entry.policy.kind} load policy does not keep version {target}")
    new = dict(entry.labels)
    before, new[label] = new.get(label), target
    if label == "stable" and before is not None and before != target:
        new["previous"] = before
    found[model] = _pruned(replace(entry, labels=new))
    return new


def _move(models_dir: Path, model: str, label: str, version: int | None) -> dict[str, int]:
    """One transaction: `_relabel`."""
    moved: dict[str, int] = {}
    _transaction(models_dir, lambda found: moved.update(_relabel(found, models_dir, model, label, version)))
    return moved


def promote_pair(
    models_dir: Path,
    versions: dict[str, int],
    label: str = "stable",
    wait_until_loaded: Callable[[str, int], bool] | None = None,
) -> dict[str, dict[str, int]]:
    """Point `label` of each model at its version in `versions` in one write of models.config, so
    the server and the gateway never see one model moved without the other (a pair serves
    together: the experiments DAG promotes a winning canary this way). Otherwise as `promote`.

    Returns:
        {model: its labels after the move}.
    """
    unknown = sorted(set(versions) - set(MODELS))
    if unknown:
        raise RegistryError(f"unknown model(s) {unknown}; expected {', '.join(MODELS)}")
    for model, version in versions.items():
        if version not in list_versions(models_dir / model):
            raise RegistryError(
                f"{model} version {version} is not published (have {list_versions(models_dir / model)})"
            )
        if _ensure_loaded(models_dir, model, version) and wait_until_loaded is not None:
            if not wait_until_loaded(model, version):
                raise RegistryError(f"the model server did not load {model} version {version}; labels left unchanged")
    moved: dict[str, dict[str, int]] = {}

    def change(found: dict[str, ModelEntry]) -> None:
        for model, version in versions.items():
            moved[model] = _relabel(found, models_dir, model, label, version)

    _transaction(models_dir, change)
    return moved


def rollback(
    models_dir: Path,
    model: str,
    version: int | None = None,
    wait_until_loaded: Callable[[str, int], bool] | None = None,
) -> dict[str, int]:
    """Point `stable` back at `version`, or at the version stable had before (`previous`, which
    prune keeps loaded), reading and moving it in one locked write."""
    if version is not None:
        return promote(models_dir, model, version, "stable", wait_until_loaded)
    if model not in MODELS:
        raise RegistryError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    return _move(models_dir, model, "stable", None)
