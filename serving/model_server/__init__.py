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
  moving an existing label still needs the target loaded. See `towerflow.model_config` for the
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

Modules: `servable` (a loaded version and its signatures), `codec` (tensors on the wire and the
request size limits), `manager` (the version manager: loading and unloading, labels), `config`
(the `models.config` it follows, configs pushed to it), `routing` (which loaded version a request
names), `services` (the gRPC servicers), `server` (`ModelServer`), `errors` (`ServingError`).
Nothing here imports the gateway.
"""

from serving.model_server.codec import MAX_REQUEST_BYTES, InputSpec, check_input_sizes
from serving.model_server.errors import ServingError
from serving.model_server.manager import ModelManager
from serving.model_server.routing import State, VersionState
from serving.model_server.servable import DEFAULT_SIGNATURE, Servable, Signature, configure_threads
from serving.model_server.server import DEFAULT_HOST, ModelServer, address, grpc_options
from serving.model_server.services import ModelServicer, PredictionServicer

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_SIGNATURE",
    "MAX_REQUEST_BYTES",
    "InputSpec",
    "ModelManager",
    "ModelServer",
    "ModelServicer",
    "PredictionServicer",
    "Servable",
    "ServingError",
    "Signature",
    "State",
    "VersionState",
    "address",
    "check_input_sizes",
    "configure_threads",
    "grpc_options",
]
