"""Read and write TF Serving's `models.config`, and list the model versions on disk.

The file is a text-format `tensorflow.serving.ModelServerConfig` protobuf, the same file the real
`tensorflow_model_server --model_config_file=... --model_config_file_poll_wait_seconds=...` reads,
and the one `towerflow model-server` reads where that binary is not installed:

    model_config_list {
      config {
        name: "retrieval"
        base_path: "/abs/path/models/retrieval"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 3 versions: 4 } }
        version_labels { key: "canary" value: 4 }
        version_labels { key: "stable" value: 3 }
      }
    }

Layout: `<base_path>/<version>/saved_model.pb`, versions are decimal directory names. A version is
"on disk" only once its `saved_model.pb` is there; publish by writing `<base>/.tmp-<x>/` and
renaming it to `<base>/<version>/`, so a reader never sees half a version.

Publishing a version under a label, as TF Serving wants it. TF Serving refuses (FAILED_PRECONDITION)
a config whose label points at a version that is not loaded yet, and then applies nothing of that
config, so a single write that both adds a version to a `specific` policy and labels it never
takes effect. With `--allow_version_labels_for_unavailable_models` it accepts such a label only if
the label is new. So, in two steps:

    add_version(cfg, "retrieval", 5)                 # the server loads version 5
    ...wait until GetModelStatus says 5 is AVAILABLE (serving.tfs_client.ModelClient)...
    set_label(cfg, "retrieval", "canary", 5)         # then move the label

Writes are atomic (temp file + `os.replace`) and read-modify-write helpers hold an advisory lock
on `<config>.lock`, so two Airflow tasks cannot lose each other's change.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

CONFIG_NAME = "models.config"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")

PolicyKind = Literal["latest", "all", "specific"]


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk a server keeps loaded (TF Serving's `ServableVersionPolicy`).

    Attributes:
        kind: `latest` (the `num_versions` highest), `all`, or `specific` (`versions` only).
        num_versions: how many of the newest versions `latest` keeps.
        versions: the versions `specific` keeps.
    """

    kind: PolicyKind = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def latest(cls, num_versions: int = 1) -> VersionPolicy:
        if num_versions < 1:
            raise ValueError(f"latest policy needs num_versions >= 1, got {num_versions}")
        return cls("latest", num_versions=num_versions)

    @classmethod
    def all(cls) -> VersionPolicy:
        return cls("all")

    @classmethod
    def specific(cls, *versions: int) -> VersionPolicy:
        if not versions:
            raise ValueError("specific policy needs at least one version")
        return cls("specific", versions=tuple(sorted(set(versions))))

    def select(self, on_disk: Iterable[int]) -> set[int]:
        """The versions this policy wants loaded, out of those on disk."""
        present = set(on_disk)
        if self.kind == "all":
            return present
        if self.kind == "specific":
            return present & set(self.versions)
        return set(sorted(present)[-self.num_versions :])

    def to_proto(self, msg) -> None:
        """Fill a `ServableVersionPolicy` message in place."""
        msg.Clear()
        if self.kind == "all":
            msg.all.SetInParent()
        elif self.kind == "specific":
            msg.specific.versions.extend(self.versions)
        else:
            msg.latest.num_versions = self.num_versions

    @classmethod
    def from_proto(cls, msg) -> VersionPolicy:
        """Read a `ServableVersionPolicy`; unset means `latest {num_versions: 1}`, as in TF Serving."""
        which = msg.WhichOneof("policy_choice")
        if which == "all":
            return cls.all()
        if which == "specific":
            return cls("specific", versions=tuple(sorted(set(msg.specific.versions))))
        if which == "latest":
            # TF Serving treats num_versions 0 as 1.
            return cls("latest", num_versions=max(1, msg.latest.num_versions))
        return cls()


@dataclass(frozen=True)
class ModelEntry:
    """One model in `models.config`.

    Attributes:
        name: model name clients ask for (`ModelSpec.name`).
        base_path: absolute folder holding the numeric version folders (TF Serving refuses
            relative paths). As seen by the server process: in docker-compose, mount the host
            folder at this same path, or write container paths (`/models/<name>`); the built-in
            server falls back to `<model base>/<name>` when `base_path` does not exist.
        policy: which versions to keep loaded.
        labels: version labels, e.g. `{"stable": 3, "canary": 4}`.
        platform: `model_platform`; always `tensorflow` here.
    """

    name: str
    base_path: str
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: Mapping[str, int] = field(default_factory=dict)
    platform: str = "tensorflow"

    @classmethod
    def under(cls, model_base: str | Path, name: str, **kwargs) -> ModelEntry:
        """The entry for `<model_base>/<name>` with an absolute base path."""
        return cls(name=name, base_path=str(Path(model_base).expanduser().resolve() / name), **kwargs)

    def to_proto(self, msg) -> None:
        """Fill a `ModelConfig` message in place."""
        msg.name = self.name
        msg.base_path = self.base_path
        msg.model_platform = self.platform
        self.policy.to_proto(msg.model_version_policy)
        for label, version in sorted(self.labels.items()):
            msg.version_labels[label] = int(version)

    @classmethod
    def from_proto(cls, msg) -> ModelEntry:
        return cls(
            name=msg.name,
            base_path=msg.base_path,
            policy=VersionPolicy.from_proto(msg.model_version_policy),
            labels=dict(msg.version_labels),
            platform=msg.model_platform or "tensorflow",
        )


def validate(models: Iterable[ModelEntry]) -> list[ModelEntry]:
    """Check what TF Serving checks before accepting a config list.

    Raises:
        ValueError: empty or duplicate name, empty or relative base path, a platform other than
            `tensorflow`, an empty label or a negative version.
    """
    out: list[ModelEntry] = []
    seen: set[str] = set()
    for entry in models:
        if not entry.name:
            raise ValueError("a model in models.config has no name")
        if entry.name in seen:
            raise ValueError(f"Illegal to list model {entry.name} multiple times in config list")
        seen.add(entry.name)
        if not entry.base_path or not os.path.isabs(entry.base_path):
            raise ValueError(
                f"Expected model {entry.name} to have an absolute path or URI; got base_path()={entry.base_path}"
            )
        if entry.platform != "tensorflow":
            raise ValueError(f"model {entry.name}: unsupported model_platform {entry.platform!r}")
        for label, version in entry.labels.items():
            if not label:
                raise ValueError(f"model {entry.name}: empty version label")
            if version < 0:
                raise ValueError(f"model {entry.name}: label {label} points at negative version {version}")
        out.append(entry)
    return out


def to_proto(models: Iterable[ModelEntry]):
    """A `ModelServerConfig` message for these models."""
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.SetInParent()
    for entry in validate(models):
        entry.to_proto(config.model_config_list.config.add())
    return config


def from_proto(config) -> list[ModelEntry]:
    """The models of a `ModelServerConfig` (only `model_config_list` is supported, as in TF Serving)."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ValueError("custom_model_config is not supported; use model_config_list")
    return validate(ModelEntry.from_proto(c) for c in config.model_config_list.config)


def dumps(models: Iterable[ModelEntry]) -> str:
    """Text-format `ModelServerConfig`, as TF Serving reads it."""
    return text_format.MessageToString(to_proto(models))


def parse(text: str, source: str = "<text>"):
    """Parse text-format `ModelServerConfig`.

    Raises:
        ValueError: not a valid text-format ModelServerConfig (the message names the line).
    """
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ValueError(f"{source}: not a valid ModelServerConfig: {err}") from None
    return config


def read_models_config(path: str | Path) -> list[ModelEntry]:
    """The models listed in a `models.config` file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file does not parse or breaks TF Serving's rules.
    """
    path = Path(path)
    return from_proto(parse(path.read_text(), str(path)))


def write_models_config(path: str | Path, models: Iterable[ModelEntry]) -> Path:
    """Write `models.config` atomically: a reader (TF Serving's poller) sees the old or the new file.

    Returns:
        The path written.
    """
    path = Path(path)
    text = dumps(models)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a server in a container may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an advisory lock on `<path>.lock` for a read-modify-write of `path`."""
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _update(path: str | Path, model: str, change) -> ModelEntry:
    with locked(path):
        models = read_models_config(path)
        for i, entry in enumerate(models):
            if entry.name == model:
                models[i] = change(entry)
                write_models_config(path, models)
                return models[i]
    raise KeyError(f"model {model!r} is not in {path}; known: {', '.join(m.name for m in models) or 'none'}")


def add_version(path: str | Path, model: str, version: int) -> ModelEntry:
    """Make the server load `version` too: add it to a `specific` policy (other policies already
    follow the disk, so they are left alone).

    Raises:
        KeyError: the model is not in the config.
        FileNotFoundError: the version is not on disk (publish it first).
    """

    def change(entry: ModelEntry) -> ModelEntry:
        _require_on_disk(entry, version)
        if entry.policy.kind != "specific":
            return entry
        return replace(entry, policy=VersionPolicy.specific(*entry.policy.versions, version))

    return _update(path, model, change)


def set_label(path: str | Path, model: str, label: str, version: int) -> ModelEntry:
    """Point `label` (e.g. `stable`, `canary`) at `version`; promote and rollback are this call.

    The version must be on disk and kept by the policy; the server must have it AVAILABLE before
    the label moves (see the module docstring), or TF Serving rejects the whole config.

    Raises:
        KeyError: the model is not in the config.
        FileNotFoundError: the version is not on disk.
        ValueError: the policy does not keep that version (call `add_version` first, then wait
            until the server reports it AVAILABLE).
    """

    def change(entry: ModelEntry) -> ModelEntry:
        _require_on_disk(entry, version)
        if version not in entry.policy.select(list_versions(entry.base_path)):
            raise ValueError(
                f"model {model}: the version policy does not keep version {version}, so the server "
                f"never loads it; call add_version({model!r}, {version}) and wait until it is "
                "AVAILABLE before labelling it"
            )
        return replace(entry, labels={**entry.labels, label: int(version)})

    return _update(path, model, change)


def _require_on_disk(entry: ModelEntry, version: int) -> None:
    if version not in list_versions(entry.base_path):
        raise FileNotFoundError(
            f"model {entry.name}: version {version} is not under {entry.base_path} "
            f"(found {list_versions(entry.base_path) or 'none'}); publish it first"
        )


def is_version_dir(path: Path) -> bool:
    """A complete version folder: a decimal name and a SavedModel file inside."""
    return path.name.isascii() and path.name.isdigit() and any((path / name).is_file() for name in SAVED_MODEL_FILES)


def list_versions(base_path: str | Path) -> list[int]:
    """Complete versions under `base_path`, ascending; temp dirs (`.tmp-*`) and folders still
    lacking `saved_model.pb` are skipped. A missing base path has no versions."""
    try:
        children = list(os.scandir(base_path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(child.name) for child in children if child.is_dir() and is_version_dir(Path(child.path)))
