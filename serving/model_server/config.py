"""What configs the version manager takes: the `models.config` file it follows (`ConfigFile`)
and a `ModelServerConfig` pushed to it over the network (`pushed_models`, confined to the model
base). Both come out as `towerflow.model_config.ModelEntry` lists for `ModelManager.apply`."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import grpc

from serving.model_server.errors import ServingError
from towerflow import model_config as mc

log = logging.getLogger("towerflow.model_server")


class ConfigFile:
    """The `models.config` a manager follows: read again when its content changes, or while the
    last apply of it failed (a label waiting for its version, say).

    Args:
        path: the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._text: str | None = None
        self._failed = False
        self._error: str | None = None

    def read(self, strict: bool = False) -> list[mc.ModelEntry] | None:
        """The file's models if it is new or changed (or its last apply failed), else None.

        Raises:
            ServingError: with `strict` (start-up), INVALID_ARGUMENT for a file that does not
                parse; later a bad file is logged and the current config kept, as TF Serving does.
        """
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        if text == self._text and not self._failed:
            return None
        self._text = text
        try:
            return mc.from_proto(mc.parse(text, str(self.path)))
        except ValueError as err:
            if strict:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
            log.error("%s is not valid; keeping the current config: %s", self.path, err)
            return None

    def applied(self) -> None:
        """What `read` returned is now served."""
        self._failed, self._error = False, None

    def refused(self, err: ServingError) -> None:
        """What `read` returned was refused: log each new reason once, and retry every poll."""
        if err.message != self._error:
            log.error("%s not applied (%s): %s", self.path, err.code.name, err.message)
            self._error = err.message
        self._failed = True

    def superseded(self) -> None:
        """A pushed config replaced the file's: the file waits until its content changes."""
        self._failed = False


def pushed_models(config, model_base: Path) -> list[mc.ModelEntry]:
    """The models of a `ModelServerConfig` pushed with HandleReloadConfigRequest, each confined
    to the model base (see `confine`).

    Raises:
        ServingError: INVALID_ARGUMENT for a config TF Serving would not accept or a `base_path`
            outside the model base.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported",
        )
    try:
        models = mc.from_proto(config)
    except ValueError as err:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
    return [confine(entry, model_base) for entry in models]


def confine(entry: mc.ModelEntry, model_base: Path) -> mc.ModelEntry:
    """`entry` with a `base_path` inside `model_base` (resolved), symlinks and `..` resolved.

    A `base_path` that does not exist here is another machine's (a container's
    `/models/retrieval`): it becomes `<model base>/<name>`, which the manager would serve
    anyway, so that a folder created there later is never loaded.

    Raises:
        ServingError: INVALID_ARGUMENT naming the path and the model base, when the path
            (or, for a path not here, `<model base>/<name>`) lies outside the model base.
    """
    sent = path = Path(entry.base_path).expanduser()
    resolved = path.resolve()
    if not resolved.is_relative_to(model_base) and not path.exists():
        path = model_base / entry.name
        resolved = path.resolve()
        entry = replace(entry, base_path=str(path))
    if not resolved.is_relative_to(model_base):
        shown = str(sent) if path == sent else f"{sent} (not here, so {path})"
        shown += "" if resolved == path else f", which resolves to {resolved},"
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"model {entry.name}: base_path {shown} is outside the served models folder {model_base}; "
            "a reloaded config may only name models under it",
        )
    return entry
