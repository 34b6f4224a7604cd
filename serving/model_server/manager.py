"""The version manager: follows `models.config` and the version folders, loads and unloads
versions as their policy says, keeps the labels, and publishes what requests may use.

Configuration comes from the file (polled) or a pushed `ModelServerConfig` (config.py). Versions
load on a small thread pool and are warmed up before they turn AVAILABLE; a version leaving the
policy is unloaded only once a version the policy wants is AVAILABLE. Requests resolve through
routing.py's tables.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from serving.model_server.config import ConfigFile, pushed_models
from serving.model_server.errors import ServingError, status_code
from serving.model_server.routing import Route, State, VersionState, resolve, route_of, select_states
from serving.model_server.servable import Servable
from towerflow import model_config as mc

log = logging.getLogger("towerflow.model_server")


@dataclass
class _Model:
    entry: mc.ModelEntry
    in_config: bool = True
    versions: dict[int, VersionState] = field(default_factory=dict)
    aspired: set[int] = field(default_factory=set)
    fallback_logged: bool = False


class ModelManager:
    """Keeps the versions named by `models.config` and the disk loaded; resolves requests.

    Args:
        model_base: the model base folder (`$TOWERFLOW_HOME/models`).
        config_path: the `models.config` to follow; None = `<model_base>/models.config`.
        poll_seconds: how often to re-read the config file and rescan the version folders.
        allow_version_labels_for_unavailable_models: TF Serving's flag: a new label may point at
            a version that is not loaded yet.
        load_threads: versions loaded in parallel (TF Serving's `num_load_threads`).
    """

    def __init__(
        self,
        model_base: str | Path,
        config_path: str | Path | None = None,
        *,
        poll_seconds: float = 2.0,
        allow_version_labels_for_unavailable_models: bool = True,
        load_threads: int = 1,
    ) -> None:
        self.model_base = Path(model_base).expanduser().resolve()
        self.config_path = Path(config_path) if config_path else self.model_base / mc.CONFIG_NAME
        self.poll_seconds = poll_seconds
        self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._models: dict[str, _Model] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._routes: dict[str, Route] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._loader = futures.ThreadPoolExecutor(load_threads, thread_name_prefix="model-load")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._file = ConfigFile(self.config_path)

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._poller is not None

    def start(self, wait_seconds: float = 120.0) -> None:
        """Apply `models.config` (if present), wait for the first loads, then start polling.

        Raises:
            ServingError: the config is invalid, or a label points at a version that did not load.
        """
        models = self._file.read(strict=True)
        if models is not None:
            self.apply(models, check_labels=False, wait_seconds=wait_seconds)
            self.apply(models)  # now the labels can be checked against loaded versions
            self._file.applied()
        else:
            log.warning("no %s yet; serving no models until it appears", self.config_path)
        self._poller = threading.Thread(target=self._poll_loop, name="model-poll", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        """Stop polling and loading, and drop every loaded version."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        self._loader.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for model in self._models.values():
                for version, vs in model.versions.items():
                    if vs.state == State.AVAILABLE:
                        self._unload(model, version)
            self._publish_routes()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must survive anything and retry
                log.exception("model poll failed; retrying in %.1f s", self.poll_seconds)

    def poll_once(self) -> None:
        """Re-read `models.config` if it changed, and rescan every model's version folders."""
        models = self._file.read()
        if models is not None:
            try:
                self.apply(models, wait_seconds=0)
                self._file.applied()
            except ServingError as err:
                self._file.refused(err)
        with self._lock:
            for model in self._models.values():
                self._reconcile(model)
            self._publish_routes()

    # ---- configuration ---------------------------------------------------------------------

    def apply(self, models: list[mc.ModelEntry], *, check_labels: bool = True, wait_seconds: float = 30.0) -> None:
        """Make `models` the served set, as TF Serving's ReloadConfig does.

        Versions load in the background; this waits (up to `wait_seconds`) only for models new
        to the config, like TF Serving.

        Raises:
            ServingError: FAILED_PRECONDITION if a label points at a version that is not
                AVAILABLE (and the flag does not allow it); nothing is applied then.
        """
        with self._lock:
            if check_labels:
                self._check_labels(models)
            new_names = {m.name for m in models} - {n for n, m in self._models.items() if m.in_config}
            wanted = {m.name: m for m in models}
            for name, model in self._models.items():
                model.in_config = name in wanted
            for entry in models:
                model = self._models.setdefault(entry.name, _Model(entry))
                model.entry, model.in_config = entry, True
            self._labels = {m.name: dict(m.labels) for m in models} if check_labels else self._labels
            for model in self._models.values():
                self._reconcile(model)
            self._publish_routes()
            if new_names and wait_seconds > 0:
                deadline = time.monotonic() + wait_seconds
                self._changed.wait_for(
                    lambda: all(self._settled(self._models[n]) for n in new_names),
                    timeout=max(0.0, deadline - time.monotonic()),
                )

    def reload_config(self, config, wait_seconds: float = 30.0) -> None:
        """Apply a `ModelServerConfig` message (HandleReloadConfigRequest).

        Unlike `models.config`, which only whoever manages the model base can write, this comes
        over the network: its models must live under the model base (`config.confine`).

        Raises:
            ServingError: INVALID_ARGUMENT for a config TF Serving would not accept or a
                `base_path` outside the model base, FAILED_PRECONDITION for labels on versions
                that are not loaded. Nothing is applied then.
        """
        self.apply(pushed_models(config, self.model_base), wait_seconds=wait_seconds)
        self._file.superseded()  # the pushed config wins until the file changes

    def _check_labels(self, models: list[mc.ModelEntry]) -> None:
        for entry in models:
            model = self._models.get(entry.name)
            current = self._labels.get(entry.name, {})
            for label, version in entry.labels.items():
                vs = model.versions.get(version) if model else None
                if vs is not None and vs.state == State.AVAILABLE:
                    continue
                if self.allow_unavailable_labels and current.get(label, version) == version:
                    continue
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Request to assign label to version {version} of model {entry.name}, "
                    "which is not currently available for inference",
                )

    def _settled(self, model: _Model) -> bool:
        """True once a model serves a version, or has nothing left that could load."""
        states = [model.versions[v].state for v in model.aspired if v in model.versions]
        return State.AVAILABLE in states or all(s == State.END for s in states)

    # ---- versions --------------------------------------------------------------------------

    def _base_path(self, model: _Model) -> Path:
        path = Path(model.entry.base_path)
        if path.is_dir():
            return path
        fallback = self.model_base / model.entry.name
        if fallback.is_dir():
            if not model.fallback_logged:
                log.warning(
                    "model %s: base_path %s does not exist here; serving %s instead",
                    model.entry.name,
                    path,
                    fallback,
                )
                model.fallback_logged = True
            return fallback
        return path

    def _reconcile(self, model: _Model) -> None:
        """Start loads of newly aspired versions and unload the ones the policy dropped (lock held)."""
        if model.in_config:
            base = self._base_path(model)
            aspired = model.entry.policy.select(mc.list_versions(base))
        else:
            base, aspired = Path(model.entry.base_path), set()
        for version in sorted(aspired, reverse=True):  # newest first, as TF Serving loads
            vs = model.versions.get(version)
            if vs is None or (vs.state == State.END and version not in model.aspired):
                model.versions[version] = VersionState()
                self._loader.submit(self._load, model, version, base / str(version))
        model.aspired = aspired
        self._unload_unaspired(model)

    def _unload_unaspired(self, model: _Model) -> None:
        """Availability-preserving: drop versions the policy no longer wants once an aspired
        version is AVAILABLE (or nothing is aspired); until then keep the newest old one."""
        serving_old = sorted(
            v for v, vs in model.versions.items() if vs.state == State.AVAILABLE and v not in model.aspired
        )
        aspired_up = any(model.versions[v].state == State.AVAILABLE for v in model.aspired if v in model.versions)
        if model.aspired and not aspired_up:
            serving_old = serving_old[:-1]
        for version in serving_old:
            self._unload(model, version)

    def _unload(self, model: _Model, version: int) -> None:
        vs = model.versions[version]
        vs.state = State.UNLOADING
        self._publish_routes()
        vs.servable = None  # in-flight requests hold their own reference and finish
        vs.state = State.END
        log.info("model %s version %d unloaded", model.entry.name, version)
        self._changed.notify_all()

    def _load(self, model: _Model, version: int, path: Path) -> None:
        name = model.entry.name
        with self._lock:
            vs = model.versions.get(version)
            if vs is None or vs.state != State.START or self._stop.is_set():
                return
            if version not in model.aspired:
                vs.state = State.END  # no longer wanted before its turn came
                self._changed.notify_all()
                return
            vs.state = State.LOADING
        log.info("model %s version %d loading from %s", name, version, path)
        started = time.perf_counter()
        try:
            servable = Servable(name, version, path)
            servable.warm_up()
        except Exception as err:  # noqa: BLE001 - a broken export must not take the server down
            log.error("model %s version %d failed to load: %s", name, version, err)
            with self._lock:
                vs.state, vs.code, vs.message = State.END, status_code(err), f"{type(err).__name__}: {err}"
                self._changed.notify_all()
            return
        with self._lock:
            vs.state, vs.servable = State.AVAILABLE, servable
            log.info("model %s version %d AVAILABLE (%.2f s)", name, version, time.perf_counter() - started)
            self._unload_unaspired(model)
            self._publish_routes()
            self._changed.notify_all()

    def _publish_routes(self) -> None:
        """Rebuild the request-path tables and swap them in with one assignment (lock held)."""
        self._routes = {
            name: route_of(model.versions, self._labels.get(name, {}))
            for name, model in self._models.items()
            if model.in_config
        }

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until `predicate()` (checked after each state change) or `timeout` seconds."""
        with self._lock:
            return self._changed.wait_for(predicate, timeout=timeout)

    # ---- requests --------------------------------------------------------------------------

    def resolve(self, spec) -> Servable:
        """The loaded version a `ModelSpec` names (see `routing.resolve`).

        Raises:
            ServingError: NOT_FOUND (model or version not loaded), INVALID_ARGUMENT (no name,
                unknown label).
        """
        return resolve(self._routes, spec)

    def version_states(self, spec) -> list[tuple[int, VersionState]]:
        """(version, state) pairs for GetModelStatus, newest first (see `routing.select_states`).

        Raises:
            ServingError: NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for an
                unknown label.
        """
        with self._lock:
            model = self._models.get(spec.name)
            versions = dict(model.versions) if model else {}
            labels = self._labels.get(spec.name, {})
        return select_states(spec, versions, labels)
