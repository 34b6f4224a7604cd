"""A TF Serving–compatible model server for machines without `tensorflow_model_server`.

It serves the folder TF Serving serves (`<model base>/<model>/<version>/saved_model.pb` plus
`models.config`) over the same gRPC API, so a client built on the official
`tensorflow-serving-api` stubs cannot tell the two apart:

- `tensorflow.serving.PredictionService`: `Predict`, `GetModelMetadata` (`signature_def`);
  `Classify`, `Regress` and `MultiInference` answer UNIMPLEMENTED.
- `tensorflow.serving.ModelService`: `GetModelStatus`, `HandleReloadConfigRequest`.

Behaviour copied from TF Serving (server_core.cc, predict_util.cc, get_model_status_impl.cc):
- A request names a version, a version label, or neither (then the highest AVAILABLE version).
- Errors: unknown model or version -> NOT_FOUND ("Servable not found for request: ..."); unknown
  label -> INVALID_ARGUMENT ("Unrecognized servable version label: ..."); unknown signature ->
  FAILED_PRECONDITION; inputs that do not match the signature -> INVALID_ARGUMENT.
- Version policy (`latest N` by default, `all`, `specific`) picks the versions to load from disk;
  new versions load in the background and are swapped in when AVAILABLE; versions leaving the
  policy are unloaded, availability-preserving: while a new version is still loading, the old
  one keeps serving.
- A label may only point at an AVAILABLE version, else the whole config is refused
  (FAILED_PRECONDITION) and the old one stays. With `allow_version_labels_for_unavailable_models`
  (TF Serving's flag of the same name) a *new* label may point at a version not yet loaded;
  moving an existing label still needs the target loaded. See `serving.model_config` for the
  two-step publish this implies.
- `GetModelStatus` reports START/LOADING/AVAILABLE/UNLOADING/END per version, newest first; END
  carries the load error, if any.

Differences, on purpose:
- A numeric folder without `saved_model.pb` (a half-written export) is not a version yet; TF
  Serving would try to load it and fail.
- If a model's `base_path` does not exist, `<model base>/<model name>` is served instead, so a
  `models.config` written for a container (`/models/retrieval`) works on the host too.
- `HandleReloadConfigRequest` only accepts models under the model base (INVALID_ARGUMENT
  otherwise); TF Serving loads any path it is sent.
- It listens on loopback unless given a host, and refuses requests over a size limit
  (RESOURCE_EXHAUSTED, before decoding) and Predict inputs whose shape asks for more values than
  that many bytes could carry; TF Serving binds all interfaces and takes any size.
- The file is re-applied only when its content changes (or the last attempt failed), so a config
  pushed with `HandleReloadConfigRequest` stays until `models.config` is edited.
- At start-up the versions load before the labels are checked (TF Serving checks first and so
  refuses every label at start unless `--allow_version_labels_for_unavailable_models`); with no
  `models.config` yet the server starts empty and picks the file up when it appears.
- Failed loads are not retried until the version folder leaves and re-enters the policy.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from towerflow import model_config as mc

log = logging.getLogger("towerflow.model_server")

State = get_model_status_pb2.ModelVersionStatus.State
DEFAULT_SIGNATURE = "serving_default"
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
DEFAULT_HOST = "127.0.0.1"
# gRPC's 4 MB default is too small for ranking 1,000 candidates with features for a batch of
# users; unbounded (TF Serving's choice) lets one client make the server buffer and decode
# gigabytes. Clients send no more than this either (serving.tfs_client).
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def grpc_options(max_request_bytes: int = MAX_REQUEST_BYTES) -> list[tuple[str, int]]:
    """The server's channel arguments: requests up to `max_request_bytes` (larger ones are
    refused with RESOURCE_EXHAUSTED before they are decoded), responses of any size."""
    return [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", max_request_bytes),
        # Fail to bind a port another server already holds instead of silently sharing it.
        ("grpc.so_reuseport", 0),
    ]


def address(host: str, port: int) -> str:
    """`host:port` as gRPC parses it (an IPv6 literal in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def configure_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """Size TensorFlow's thread pools (0 = its default, one thread per core), as TF Serving's
    `--tensorflow_intra_op_parallelism` / `--tensorflow_inter_op_parallelism` do. Call before the
    first model loads: TensorFlow fixes its pools when its runtime starts.

    Raises:
        RuntimeError: TensorFlow's runtime already started.
    """
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


class ServingError(Exception):
    """A request or config the server refuses; carries the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _status_code(err: BaseException) -> grpc.StatusCode:
    if isinstance(err, ServingError):
        return err.code
    if isinstance(err, tf.errors.OpError):
        return _CODE_BY_NUMBER.get(err.error_code, grpc.StatusCode.UNKNOWN)
    if isinstance(err, OSError):  # tf.saved_model.load: "SavedModel file does not exist"
        return grpc.StatusCode.NOT_FOUND
    return grpc.StatusCode.UNKNOWN


@dataclass(frozen=True)
class InputSpec:
    """One signature input, with what decoding a TensorProto for it needs worked out once
    (TensorShape / DType methods cost microseconds each, eight inputs a request)."""

    spec: tf.TensorSpec
    enum: int
    numpy_dtype: np.dtype | None  # None: a string input
    dims: tuple[int | None, ...] | None  # None: unknown rank

    @classmethod
    def of(cls, spec: tf.TensorSpec) -> InputSpec:
        numpy_dtype = None if spec.dtype == tf.string else np.dtype(spec.dtype.as_numpy_dtype)
        dims = tuple(spec.shape.as_list()) if spec.shape.rank is not None else None
        return cls(spec, spec.dtype.as_datatype_enum, numpy_dtype, dims)

    def accepts(self, shape: tuple[int, ...]) -> bool:
        if self.dims is None:
            return True
        return len(shape) == len(self.dims) and all(d is None or d == n for d, n in zip(self.dims, shape, strict=True))


@dataclass(frozen=True)
class Signature:
    """A callable signature of a loaded version, with what Predict needs precomputed."""

    name: str
    fn: Callable
    inputs: dict[str, InputSpec]
    outputs: tuple[str, ...]
    flat_order: tuple[str, ...] = ()  # input aliases in tf.nest order (sorted)

    def __call__(self, kwargs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Run on inputs already checked against `inputs` (dtypes and shapes).

        Calls the function's flat form, inputs in `tf.nest` order: the keyword call re-binds and
        re-validates the structure on every request (~0.3 ms of a 0.8 ms ranking call here).
        `_call_flat` is what that keyword call ends in; should a TensorFlow release drop it, the
        keyword call is used instead."""
        call_flat = getattr(self.fn, "_call_flat", None)
        if call_flat is None:
            return self.fn(**kwargs)
        return call_flat([kwargs[alias] for alias in self.flat_order], self.fn.captured_inputs)


class Servable:
    """One loaded model version: its concrete signature functions and its SignatureDefs.

    Args:
        name: model name.
        version: version number.
        path: the version folder.

    Raises:
        Exception: whatever `tf.saved_model.load` raises for a broken SavedModel.
    """

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name = name
        self.version = version
        self.path = path
        self._loaded = tf.saved_model.load(str(path))  # keeps variables and functions alive
        self.signatures: dict[str, Signature] = {}
        for sig_name, fn in self._loaded.signatures.items():
            _, kwargs = fn.structured_input_signature
            self.signatures[sig_name] = Signature(
                name=sig_name,
                fn=fn,
                inputs={alias: InputSpec.of(spec) for alias, spec in kwargs.items()},
                outputs=tuple(sorted(fn.structured_outputs)),
                flat_order=tuple(tf.nest.flatten({alias: alias for alias in kwargs})),
            )
        self.signature_defs = _read_signature_defs(path)

    def warm_up(self, rounds: int = 3) -> None:
        """Call every signature a few times on a one-row batch of zeros / empty strings (unknown
        dimensions as 1 row or 2 candidates) before the version is AVAILABLE: the first calls of a
        loaded SavedModel trace and allocate, and took longer than the gateway's stage budget. A
        signature that rejects such inputs is left cold (logged), never fails the load."""
        for sig in self.signatures.values():
            kwargs = {}
            for alias, input_spec in sig.inputs.items():
                spec = input_spec.spec
                sizes = spec.shape.as_list() if spec.shape.rank is not None else []
                shape = [(1 if axis == 0 else 2) if size is None else size for axis, size in enumerate(sizes)]
                kwargs[alias] = tf.zeros(shape, spec.dtype) if spec.dtype != tf.string else tf.fill(shape, "")
            try:
                for _ in range(rounds):
                    sig.fn(**kwargs)
            except Exception as err:  # noqa: BLE001 - warm-up is best effort
                log.info("model %s version %d signature %s not warmed up: %s", self.name, self.version, sig.name, err)

    def predict(self, request, model_name: str):
        """Run one PredictRequest; returns a PredictResponse.

        Raises:
            ServingError: unknown signature (FAILED_PRECONDITION) or inputs/outputs that do not
                match it (INVALID_ARGUMENT).
            tf.errors.OpError: the graph failed; its code is passed on to the client.
        """
        sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sig = self.signatures.get(sig_name)
        if sig is None:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{sig_name}" not found.')
        inputs = request.inputs
        if len(inputs) != len(sig.inputs):
            sent, want = set(inputs), set(sig.inputs)
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input size does not match signature: {len(sent)}!={len(want)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(want))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - want))}}}. "
                f"Missing but required: {{{','.join(sorted(want - sent))}}}.",
            )
        kwargs = {}
        for alias, proto in inputs.items():
            spec = sig.inputs.get(alias)
            if spec is None:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input tensor alias not found in signature: {alias}. "
                    f"Inputs expected to be in the set {{{','.join(sorted(sig.inputs))}}}.",
                )
            kwargs[alias] = _to_tensor(alias, proto, spec)
        aliases = _output_aliases(request.output_filter, sig)
        try:
            outputs = sig(kwargs)
        except (TypeError, ValueError) as err:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model_name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = sig_name
        for alias in aliases:
            _fill_tensor_proto(response.outputs[alias], outputs[alias])
        return response


def _to_tensor(alias: str, proto, spec: InputSpec) -> tf.Tensor:
    if proto.dtype != spec.enum:
        got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "invalid"
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {alias}: expects {spec.spec.dtype.name} but {got} is provided",
        )
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    try:
        if spec.numpy_dtype is not None and proto.tensor_content:  # numbers as raw bytes: no list
            array = np.frombuffer(proto.tensor_content, dtype=spec.numpy_dtype).reshape(shape)
        elif spec.numpy_dtype is None and len(proto.string_val) == math.prod(shape):
            array = np.empty(len(proto.string_val), dtype=object)
            array[:] = proto.string_val
            array = array.reshape(shape)
        else:  # values in the typed fields, or TF's compact "repeat the last value" form
            array = tf.make_ndarray(proto)
    except Exception:  # noqa: BLE001 - any malformed TensorProto is the client's error
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}") from None
    if not spec.accepts(array.shape):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {alias}: shape {list(array.shape)} is not compatible with the signature's "
            f"{list(spec.dims) if spec.dims is not None else 'shape'}",
        )
    # tf.constant: a third of convert_to_tensor(dtype=)'s cost for the same tensor.
    return tf.constant(array, dtype=spec.spec.dtype)


def check_input_sizes(request, max_values: int) -> None:
    """Refuse a PredictRequest whose input shapes ask for more than `max_values` values, before
    anything is decoded: TF's compact form ("repeat the last value") lets a few bytes name a
    tensor of any size. A request that sends its values spends at least a byte on each, so with
    `max_values` the request size limit no such request is refused here.

    Raises:
        ServingError: INVALID_ARGUMENT for a negative dimension, RESOURCE_EXHAUSTED for a shape
            over the limit.
    """
    for alias, proto in request.inputs.items():
        sizes = [d.size for d in proto.tensor_shape.dim]
        if any(n < 0 for n in sizes):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input {alias}: negative dimension in {sizes}")
        values = math.prod(sizes)
        if values > max_values:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"input {alias}: shape {sizes} holds {values} values, more than one request may ({max_values}); "
                "split the batch",
            )


def _fill_tensor_proto(proto, tensor: tf.Tensor) -> None:
    """Write an output tensor into a response TensorProto: numbers as raw bytes (as TF Serving
    sends them), strings through serialize_tensor (built in C++, 4x make_tensor_proto's speed)."""
    if tensor.dtype == tf.string:
        proto.ParseFromString(tf.io.serialize_tensor(tensor).numpy())
        return
    array = tensor.numpy()
    proto.dtype = tensor.dtype.as_datatype_enum
    for n in array.shape:
        proto.tensor_shape.dim.add().size = n
    proto.tensor_content = array.tobytes()


def _output_aliases(output_filter: Iterable[str], sig: Signature) -> tuple[str, ...]:
    if not output_filter:
        return sig.outputs
    seen: list[str] = []
    for alias in output_filter:
        if alias not in sig.outputs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{','.join(sig.outputs)}}}.",
            )
        if alias in seen:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return tuple(seen)


def _read_signature_defs(path: Path) -> dict:
    """The MetaGraph's SignatureDef map, as GetModelMetadata returns it."""
    saved = saved_model_pb2.SavedModel()
    pb = path / "saved_model.pb"
    if pb.is_file():
        saved.ParseFromString(pb.read_bytes())
    else:
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved)
    if not saved.meta_graphs:
        return {}
    return dict(saved.meta_graphs[0].signature_def)


@dataclass
class VersionState:
    """Where one version is in its life, as GetModelStatus reports it."""

    state: int = State.START
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""
    servable: Servable | None = None


@dataclass
class _Model:
    entry: mc.ModelEntry
    in_config: bool = True
    versions: dict[int, VersionState] = field(default_factory=dict)
    aspired: set[int] = field(default_factory=set)
    fallback_logged: bool = False


@dataclass(frozen=True)
class _Route:
    """What the request path needs for one model; replaced whole, never mutated, so readers
    need no lock."""

    available: dict[int, Servable]
    latest: Servable | None
    labels: dict[str, int]


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
        self._routes: dict[str, _Route] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._loader = futures.ThreadPoolExecutor(load_threads, thread_name_prefix="model-load")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._file_text: str | None = None
        self._file_failed = False
        self._file_error: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._poller is not None

    def start(self, wait_seconds: float = 120.0) -> None:
        """Apply `models.config` (if present), wait for the first loads, then start polling.

        Raises:
            ServingError: the config is invalid, or a label points at a version that did not load.
        """
        models = self._read_file(strict=True)
        if models is not None:
            self.apply(models, check_labels=False, wait_seconds=wait_seconds)
            self.apply(models)  # now the labels can be checked against loaded versions
            self._file_failed = False
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
        models = self._read_file()
        if models is not None:
            try:
                self.apply(models, wait_seconds=0)
                self._file_failed, self._file_error = False, None
            except ServingError as err:
                if err.message != self._file_error:  # log each new reason once, retry every poll
                    log.error("%s not applied (%s): %s", self.config_path, err.code.name, err.message)
                    self._file_error = err.message
                self._file_failed = True
        with self._lock:
            for model in self._models.values():
                self._reconcile(model)
            self._publish_routes()

    def _read_file(self, strict: bool = False) -> list[mc.ModelEntry] | None:
        """The file's models if it is new or changed (or its last apply failed), else None.

        Raises:
            ServingError: with `strict` (start-up), INVALID_ARGUMENT for a file that does not
                parse; later a bad file is logged and the current config kept, as TF Serving does.
        """
        try:
            text = self.config_path.read_text()
        except FileNotFoundError:
            return None
        if text == self._file_text and not self._file_failed:
            return None
        self._file_text = text
        try:
            return mc.from_proto(mc.parse(text, str(self.config_path)))
        except ValueError as err:
            if strict:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
            log.error("%s is not valid; keeping the current config: %s", self.config_path, err)
            return None

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
        over the network: its models must live under the model base (see `confine`).

        Raises:
            ServingError: INVALID_ARGUMENT for a config TF Serving would not accept or a
                `base_path` outside the model base, FAILED_PRECONDITION for labels on versions
                that are not loaded. Nothing is applied then.
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
        models = [self.confine(entry) for entry in models]
        self.apply(models, wait_seconds=wait_seconds)
        self._file_failed = False  # the pushed config wins until the file changes

    def confine(self, entry: mc.ModelEntry) -> mc.ModelEntry:
        """`entry` with a `base_path` inside the model base, symlinks and `..` resolved.

        A `base_path` that does not exist here is another machine's (a container's
        `/models/retrieval`): it becomes `<model base>/<name>`, which `_base_path` would serve
        anyway, so that a folder created there later is never loaded.

        Raises:
            ServingError: INVALID_ARGUMENT naming the path and the model base, when the path
                (or, for a path not here, `<model base>/<name>`) lies outside the model base.
        """
        sent = path = Path(entry.base_path).expanduser()
        resolved = path.resolve()
        if not resolved.is_relative_to(self.model_base) and not path.exists():
            path = self.model_base / entry.name
            resolved = path.resolve()
            entry = replace(entry, base_path=str(path))
        if not resolved.is_relative_to(self.model_base):
            shown = str(sent) if path == sent else f"{sent} (not here, so {path})"
            shown += "" if resolved == path else f", which resolves to {resolved},"
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model {entry.name}: base_path {shown} is outside the served models folder {self.model_base}; "
                "a reloaded config may only name models under it",
            )
        return entry

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
                vs.state, vs.code, vs.message = State.END, _status_code(err), f"{type(err).__name__}: {err}"
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
        routes: dict[str, _Route] = {}
        for name, model in self._models.items():
            if not model.in_config:
                continue
            available = {
                v: vs.servable
                for v, vs in model.versions.items()
                if vs.state == State.AVAILABLE and vs.servable is not None
            }
            latest = available[max(available)] if available else None
            routes[name] = _Route(available, latest, dict(self._labels.get(name, {})))
        self._routes = routes

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until `predicate()` (checked after each state change) or `timeout` seconds."""
        with self._lock:
            return self._changed.wait_for(predicate, timeout=timeout)

    # ---- requests --------------------------------------------------------------------------

    def resolve(self, spec) -> Servable:
        """The loaded version a `ModelSpec` names.

        Raises:
            ServingError: NOT_FOUND (model or version not loaded), INVALID_ARGUMENT (no name,
                unknown label).
        """
        name = spec.name
        if not name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        route = self._routes.get(name)
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
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})"
            )
        return servable

    def version_states(self, spec) -> list[tuple[int, VersionState]]:
        """(version, state) pairs for GetModelStatus, newest first.

        Raises:
            ServingError: NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for an
                unknown label.
        """
        name = spec.name
        with self._lock:
            model = self._models.get(name)
            versions = dict(model.versions) if model else {}
            labels = self._labels.get(name, {})
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


def _abort(context: grpc.ServicerContext, err: BaseException) -> None:
    code = _status_code(err)
    message = err.message if isinstance(err, ServingError) else str(err) or type(err).__name__
    if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
        log.exception("request failed")
    context.abort(code, message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService` over a ModelManager.

    Args:
        manager: the models to answer from.
        max_values: the most values one Predict input may hold (see `check_input_sizes`).
    """

    def __init__(self, manager: ModelManager, max_values: int = MAX_REQUEST_BYTES) -> None:
        self.manager = manager
        self.max_values = max_values

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        try:
            check_input_sizes(request, self.max_values)
            return self.manager.resolve(request.model_spec).predict(request, request.model_spec.name)
        except Exception as err:  # noqa: BLE001 - every failure becomes a gRPC status
            _abort(context, err)

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            if not request.metadata_field:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "GetModelMetadataRequest must specify at least one metadata_field",
                )
            for metadata_field in request.metadata_field:
                if metadata_field != "signature_def":
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {metadata_field} is not supported"
                    )
            servable = self.manager.resolve(request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = servable.version
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for key, sig in servable.signature_defs.items():
                sig_map.signature_def[key].CopyFrom(sig)
            response.metadata["signature_def"].Pack(sig_map)
            return response
        except Exception as err:  # noqa: BLE001
            _abort(context, err)

    def _unimplemented(self, context, what: str):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"{what} is not implemented by towerflow model-server; use Predict"
        )

    def Classify(self, request, context):  # noqa: N802
        self._unimplemented(context, "Classify")

    def Regress(self, request, context):  # noqa: N802
        self._unimplemented(context, "Regress")

    def MultiInference(self, request, context):  # noqa: N802
        self._unimplemented(context, "MultiInference")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService` over a ModelManager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            if not request.HasField("model_spec"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            response = get_model_status_pb2.GetModelStatusResponse()
            for version, vs in self.manager.version_states(request.model_spec):
                status = response.model_version_status.add(version=version, state=vs.state)
                status.status.error_code = vs.code.value[0]
                status.status.error_message = vs.message
            return response
        except Exception as err:  # noqa: BLE001
            _abort(context, err)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.manager.reload_config(request.config)
        except Exception as err:  # noqa: BLE001
            # TF Serving fills response.status and returns the same error as the RPC status.
            _abort(context, err)
        return response


class ModelServer:
    """The gRPC server: both services on one port, a small thread pool.

    Args:
        manager: the started or unstarted ModelManager to serve.
        port: TCP port; 0 picks a free one (see `port` after `start`).
        host: interface to bind: loopback unless asked (TF Serving binds all, `0.0.0.0`), as the
            server takes any config pushed to it and has no authentication.
        max_workers: request threads. TF releases the GIL while a graph runs, so a few suffice.
        max_request_bytes: the largest request accepted (RESOURCE_EXHAUSTED beyond, before it is
            decoded); also the most values one Predict input may hold.
    """

    def __init__(
        self,
        manager: ModelManager,
        *,
        port: int = 8500,
        host: str = DEFAULT_HOST,
        max_workers: int = 4,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.manager = manager
        self.host = host
        self.port = port
        self.max_workers = max_workers
        self.max_request_bytes = max_request_bytes
        self._server: grpc.Server | None = None

    def start(self) -> int:
        """Load the models (manager.start, if not started), then listen. Returns the bound port.

        Raises:
            RuntimeError: the port could not be bound.
        """
        if not self.manager.started:
            self.manager.start()
        server = grpc.server(
            futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="model-rpc"),
            options=grpc_options(self.max_request_bytes),
        )
        prediction = PredictionServicer(self.manager, max_values=self.max_request_bytes)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager), server)
        listen = address(self.host, self.port)
        try:
            bound = server.add_insecure_port(listen)
        except RuntimeError as err:
            raise RuntimeError(f"cannot listen on {listen}: {err}") from None
        if not bound:
            raise RuntimeError(f"cannot listen on {listen} (in use?)")
        server.start()
        self._server, self.port = server, bound
        log.info("model server listening on %s:%d", self.host, self.port)
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, let in-flight ones finish (up to `grace` s), then unload."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        self.manager.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops; True if it did within `timeout`."""
        return self._server.wait_for_termination(timeout) if self._server else True

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
