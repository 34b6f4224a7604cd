"""The built-in model server answers the official TF Serving stubs as TF Serving would.

Tiny SavedModels (testsupport.toy_models) are built once per module; each test copies them into
its own model base and starts a server on a free port with a fast poll.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving.model_server import MAX_REQUEST_BYTES, ModelManager, ModelServer
from serving.tfs_client import AsyncModelClient, ModelClient, predict_request
from testsupport import toy_models
from towerflow import model_config as mc
from towerflow.settings import Settings

POLL = 0.2
USERS = ["u1", "u2"]
State = get_model_status_pb2.ModelVersionStatus.State


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def eventually(check, timeout: float = 15.0):
    """Retry `check` until it returns something truthy (AssertionError, RpcError: not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def publish(template: Path, base: Path, version: int) -> Path:
    """Publish a copy of a template version the way the exporter does: temp dir, then rename."""
    tmp = base / f".tmp-{version}"
    shutil.copytree(template, tmp)
    os.replace(tmp, base / str(version))
    return base / str(version)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy-models")
    return {
        "retrieval/1": toy_models.save_retrieval(root / "retrieval", 1, seed=1),
        "retrieval/2": toy_models.save_retrieval(root / "retrieval", 2, seed=2),
        "retrieval/3": toy_models.save_retrieval(root / "retrieval", 3, seed=3),
        "ranking/1": toy_models.save_ranking(root / "ranking", 1),
    }


@pytest.fixture
def model_base(tmp_path: Path, templates: dict[str, Path]) -> Path:
    """retrieval 1 (stable) and 2 (canary) under a specific policy, ranking 1 under latest."""
    base = tmp_path / "models"
    for key in ("retrieval/1", "retrieval/2", "ranking/1"):
        name, version = key.split("/")
        publish(templates[key], base / name, int(version))
    mc.write_models_config(base / "models.config", default_entries(base))
    return base


def default_entries(base: Path, **labels: int) -> list[mc.ModelEntry]:
    return [
        mc.ModelEntry.under(
            base,
            "retrieval",
            policy=mc.VersionPolicy.specific(1, 2),
            labels=labels or {"stable": 1, "canary": 2},
        ),
        mc.ModelEntry.under(base, "ranking"),
    ]


class Running:
    """A started server plus the official stubs on a channel to it."""

    def __init__(self, model_base: Path, **manager_kwargs) -> None:
        self.manager = ModelManager(model_base, poll_seconds=POLL, **manager_kwargs)
        self.server = ModelServer(self.manager, port=0, host="127.0.0.1", max_workers=4)
        self.port = self.server.start()
        self.target = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(self.target)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.client = ModelClient(self.target)

    def predict(self, model: str = "retrieval", inputs=None, **spec):
        request = predict_request(model, inputs or {"user_id": USERS}, **spec)
        return self.predictions.Predict(request, timeout=10)

    def states(self, model: str = "retrieval") -> dict[int, str]:
        return {s.version: s.state for s in self.client.status(model)}

    def close(self) -> None:
        self.client.close()
        self.channel.close()
        self.server.stop(grace=1)


@pytest.fixture
def running(model_base: Path):
    """A server on `model_base`, closed after the test."""
    server = Running(model_base)
    yield server
    server.close()


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def direct(template: Path, users: list[str]) -> dict[str, np.ndarray]:
    fn = tf.saved_model.load(str(template)).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(user_id=tf.constant(users)).items()}


def test_predict_by_default_version_and_label(running: Running, templates: dict[str, Path]) -> None:
    latest = running.predict()
    assert latest.model_spec.name == "retrieval"
    assert latest.model_spec.version.value == 2  # highest AVAILABLE when no version is given
    assert latest.model_spec.signature_name == "serving_default"
    assert running.predict(version=1).model_spec.version.value == 1
    assert running.predict(version_label="stable").model_spec.version.value == 1
    assert running.predict(version_label="canary").model_spec.version.value == 2

    out = running.client.predict("retrieval", {"user_id": USERS}, version=1)
    expected = direct(templates["retrieval/1"], USERS)
    assert out.version == 1
    assert out["item_ids"].shape == (2, 10) and out["scores"].dtype == np.float32
    np.testing.assert_array_equal(out["item_ids"], expected["item_ids"])
    np.testing.assert_allclose(out["scores"], expected["scores"], rtol=1e-6)
    assert not np.array_equal(running.client.predict("retrieval", {"user_id": USERS})["scores"], out["scores"])


def test_ranking_scores_each_candidate(running: Running) -> None:
    candidates = [toy_models.item_ids(50)] * 2
    out = running.client.predict("ranking", {"user_id": USERS, "candidate_ids": candidates})
    assert out["scores"].shape == (2, 50)
    only = running.client.predict("ranking", {"user_id": USERS, "candidate_ids": candidates}, output_filter=["scores"])
    np.testing.assert_allclose(only["scores"], out["scores"])


def test_unknown_model_version_or_label(running: Running) -> None:
    err = rpc_error(lambda: running.predict("nope"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "Latest(nope)" in err.details()
    err = rpc_error(lambda: running.predict(version=7))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "Specific(retrieval, 7)" in err.details()
    # TF Serving answers an unknown label with INVALID_ARGUMENT, not NOT_FOUND.
    err = rpc_error(lambda: running.predict(version_label="beta"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: beta" in err.details()


@pytest.mark.parametrize(
    ("inputs", "spec", "code", "message"),
    [
        ({"user_id": [1.5]}, {}, grpc.StatusCode.INVALID_ARGUMENT, "expects string but float64"),
        ({"user_id": [["a"]]}, {}, grpc.StatusCode.INVALID_ARGUMENT, "shape [1, 1] is not compatible"),
        ({"user": ["a"]}, {}, grpc.StatusCode.INVALID_ARGUMENT, "alias not found in signature: user"),
        ({"user_id": ["a"], "x": ["b"]}, {}, grpc.StatusCode.INVALID_ARGUMENT, "Sent extra: {x}"),
        ({}, {}, grpc.StatusCode.INVALID_ARGUMENT, "Missing but required: {user_id}"),
        (
            {"user_id": ["a"]},
            {"signature_name": "nope"},
            grpc.StatusCode.FAILED_PRECONDITION,
            '"nope" not found',
        ),
        (
            {"user_id": ["a"]},
            {"output_filter": ["nope"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "output tensor alias",
        ),
    ],
)
def test_bad_requests_get_tf_serving_codes(running: Running, inputs, spec, code, message) -> None:
    request = predict_request("retrieval", inputs, **spec)
    if not inputs:
        request.inputs.clear()
    err = rpc_error(lambda: running.predictions.Predict(request, timeout=10))
    assert err.code() == code
    assert message in err.details()
    assert running.predict().model_spec.version.value == 2  # still serving


def test_unimplemented_apis(running: Running) -> None:
    from tensorflow_serving.apis import classification_pb2

    err = rpc_error(lambda: running.predictions.Classify(classification_pb2.ClassificationRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_model_status_and_metadata(running: Running) -> None:
    status = running.models.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "retrieval"}), timeout=5
    )
    assert [(s.version, s.state, s.status.error_code) for s in status.model_version_status] == [
        (2, State.AVAILABLE, 0),
        (1, State.AVAILABLE, 0),
    ]
    assert [s.version for s in running.client.status("retrieval", version_label="stable")] == [1]
    err = rpc_error(lambda: running.client.status("nope"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "Could not find any versions of model nope" in err.details()
    err = rpc_error(lambda: running.client.status("retrieval", version=9))
    assert err.code() == grpc.StatusCode.NOT_FOUND

    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "ranking"}, metadata_field=["signature_def"]
    )
    response = running.predictions.GetModelMetadata(request, timeout=5)
    assert response.model_spec.version.value == 1
    sigs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sigs)
    serving = sigs.signature_def["serving_default"]
    assert set(serving.inputs) == {"user_id", "candidate_ids"} and set(serving.outputs) == {"scores"}


def test_new_version_is_picked_up_and_half_written_ones_are_ignored(
    running: Running, model_base: Path, templates: dict[str, Path]
) -> None:
    base = model_base / "ranking"
    # An export in progress: a temp dir, and a numeric dir still missing saved_model.pb.
    shutil.copytree(templates["ranking/1"], base / ".tmp-5")
    (base / "4" / "variables").mkdir(parents=True)
    time.sleep(POLL * 4)
    assert running.states("ranking") == {1: "AVAILABLE"}

    publish(templates["ranking/1"], base, 3)
    eventually(lambda: running.states("ranking") == {3: "AVAILABLE", 1: "END"})  # latest-1 policy
    assert running.predict("ranking", {"user_id": ["u"], "candidate_ids": [["a"]]}).model_spec.version.value == 3
    assert rpc_error(lambda: running.predict("ranking", version=1)).code() == grpc.StatusCode.NOT_FOUND


def test_version_dropped_from_policy_is_unloaded(running: Running, model_base: Path) -> None:
    entries = default_entries(model_base, canary=2)
    entries[0] = mc.ModelEntry.under(model_base, "retrieval", policy=mc.VersionPolicy.specific(2), labels={"canary": 2})
    mc.write_models_config(model_base / "models.config", entries)
    eventually(lambda: running.states() == {2: "AVAILABLE", 1: "END"})
    assert rpc_error(lambda: running.predict(version=1)).code() == grpc.StatusCode.NOT_FOUND
    assert rpc_error(lambda: running.predict(version_label="stable")).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_reload_config_request_switches_a_label(running: Running, model_base: Path) -> None:
    request = model_management_pb2.ReloadConfigRequest(
        config=mc.to_proto(default_entries(model_base, stable=2, canary=2))
    )
    response = running.models.HandleReloadConfigRequest(request, timeout=10)
    assert response.status.error_code == 0
    assert running.predict(version_label="stable").model_spec.version.value == 2
    time.sleep(POLL * 3)  # the unchanged models.config does not undo the pushed config
    assert running.predict(version_label="stable").model_spec.version.value == 2


def test_label_on_a_version_not_loaded_is_refused(
    running: Running, model_base: Path, templates: dict[str, Path]
) -> None:
    publish(templates["retrieval/3"], model_base / "retrieval", 3)
    entries = default_entries(model_base, stable=1, canary=3)
    entries[0] = mc.ModelEntry.under(
        model_base, "retrieval", policy=mc.VersionPolicy.specific(1, 2, 3), labels={"stable": 1, "canary": 3}
    )
    err = rpc_error(lambda: running.client.reload_config(entries))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not currently available for inference" in err.details()
    # Nothing of the refused config applied: 3 is not loading and canary still means 2.
    assert 3 not in running.states()
    assert running.predict(version_label="canary").model_spec.version.value == 2

    # The two-step publish works: add the version, wait until AVAILABLE, then move the label.
    path = model_base / "models.config"
    mc.add_version(path, "retrieval", 3)
    assert running.client.wait_until_available("retrieval", 3, timeout=15) == 3
    mc.set_label(path, "retrieval", "canary", 3)
    eventually(lambda: running.predict(version_label="canary").model_spec.version.value == 3)


def test_new_label_on_unloaded_version_needs_the_flag(model_base: Path) -> None:
    strict = Running(model_base, allow_version_labels_for_unavailable_models=False)
    try:
        entries = default_entries(model_base, stable=1, canary=2, beta=3)
        assert rpc_error(lambda: strict.client.reload_config(entries)).code() == grpc.StatusCode.FAILED_PRECONDITION
        strict.manager.allow_unavailable_labels = True
        strict.client.reload_config(entries)  # a new label may name a version still to come
        assert rpc_error(lambda: strict.predict(version_label="beta")).code() == grpc.StatusCode.NOT_FOUND
    finally:
        strict.close()


def test_broken_version_reports_its_error_and_the_rest_keeps_serving(running: Running, model_base: Path) -> None:
    broken = model_base / "ranking" / ".tmp-9"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    os.replace(broken, model_base / "ranking" / "9")
    eventually(lambda: running.states("ranking").get(9) == "END")
    status = running.client.status("ranking", version=9)[0]
    assert status.error_code != "OK" and status.error_message
    # Availability preserving: the failed newer version does not take the old one down.
    assert running.states("ranking")[1] == "AVAILABLE"
    assert running.predict("ranking", {"user_id": ["u"], "candidate_ids": [["a"]]}).model_spec.version.value == 1


def test_requests_keep_succeeding_while_versions_swap(
    running: Running, model_base: Path, templates: dict[str, Path]
) -> None:
    errors: list[BaseException] = []
    versions: set[int] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                out = running.client.predict("ranking", {"user_id": ["u"], "candidate_ids": [["a", "b"]]})
                versions.add(out.version)
            except grpc.RpcError as err:
                errors.append(err)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        publish(templates["ranking/1"], model_base / "ranking", 2)
        eventually(lambda: running.states("ranking") == {2: "AVAILABLE", 1: "END"})
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert versions == {1, 2}


def test_async_client(running: Running) -> None:
    async def go():
        async with AsyncModelClient(running.target) as client:
            out = await client.predict("retrieval", {"user_id": USERS}, version_label="stable")
            statuses = await client.status("retrieval")
            return out, statuses

    out, statuses = asyncio.run(go())
    assert out.version == 1 and out["item_ids"].shape == (2, 10)
    assert [s.state for s in statuses] == ["AVAILABLE", "AVAILABLE"]


def test_server_starts_empty_and_follows_a_config_that_appears(tmp_path: Path, templates) -> None:
    base = tmp_path / "models"
    server = Running(base)
    try:
        assert rpc_error(lambda: server.predict()).code() == grpc.StatusCode.NOT_FOUND
        publish(templates["retrieval/1"], base / "retrieval", 1)
        mc.write_models_config(base / "models.config", [mc.ModelEntry.under(base, "retrieval")])
        eventually(lambda: server.predict().model_spec.version.value == 1)
    finally:
        server.close()


def first_stable_answer(proc: subprocess.Popen, port: int, host: str = "127.0.0.1"):
    """Retrieval's `stable` answer from a model server process once it serves (up to 120 s);
    fails with the process's stderr if it exits first."""
    with ModelClient(f"{host}:{port}", timeout=2) as client:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                return client.predict("retrieval", {"user_id": USERS}, version_label="stable")
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def test_cli_model_server_serves_and_stops_on_sigterm(model_base: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TOWERFLOW_HOME": str(model_base.parent),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "COLUMNS": "200",
    }
    cmd = [sys.executable, "-m", "towerflow.cli", "model-server", "--port", str(port), "--host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = first_stable_answer(proc, port)
        assert out.version == 1 and out["item_ids"].shape == (2, 10)
        proc.send_signal(signal.SIGTERM)
        # Generous: stopping waits for loads in flight, which a busy machine slows.
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    assert "model server stopped" in stderr


def test_file_label_on_a_loading_version_applies_once_it_is_available(
    running: Running, model_base: Path, templates: dict[str, Path]
) -> None:
    path = model_base / "models.config"
    follow_disk = [
        mc.ModelEntry.under(model_base, "retrieval", policy=mc.VersionPolicy.all(), labels={"stable": 1, "canary": 2})
    ]
    mc.write_models_config(path, follow_disk)
    time.sleep(POLL * 3)
    # Publish 3 and move canary in one go: refused while 3 loads, retried each poll, then applied.
    publish(templates["retrieval/3"], model_base / "retrieval", 3)
    mc.write_models_config(path, [replace(follow_disk[0], labels={"stable": 1, "canary": 3})])
    eventually(lambda: running.predict(version_label="canary").model_spec.version.value == 3)
    assert running.predict(version_label="stable").model_spec.version.value == 1


def test_every_signature_of_the_contract_models_is_warmed_up_before_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from serving.model_server import InputSpec, Servable, Signature

    toy_models.publish_contract_pair(tmp_path, [f"i{n}" for n in range(50)], k=20)
    with caplog.at_level("INFO", logger="towerflow.model_server"):
        for name in ("retrieval", "ranking"):
            Servable(name, 1, tmp_path / name / "1").warm_up()
    assert "not warmed up" not in caplog.text

    def reject(**_):
        raise ValueError("no")

    # A signature that rejects any input: logged, never raised.
    broken = Signature("serving_default", reject, {"x": InputSpec.of(tf.TensorSpec([None], tf.float32))}, ("y",))
    servable = Servable("retrieval", 1, tmp_path / "retrieval" / "1")
    servable.signatures = {"serving_default": broken}
    with caplog.at_level("INFO", logger="towerflow.model_server"):
        servable.warm_up()
    assert "signature serving_default not warmed up: no" in caplog.text


def test_the_flat_signature_call_answers_as_the_keyword_call(tmp_path: Path) -> None:
    """Predict calls a signature's flat form (inputs in tf.nest order); it must answer exactly as
    `fn(**inputs)` for both contract models, whose inputs are not declared in sorted order."""
    from serving.model_server import Servable

    catalog = [f"i{n}" for n in range(50)]
    toy_models.publish_contract_pair(tmp_path, catalog, k=20)
    rng = np.random.default_rng(0)
    for name in ("retrieval", "ranking"):
        sig = Servable(name, 1, tmp_path / name / "1").signatures["serving_default"]
        assert list(sig.flat_order) == sorted(sig.inputs)
        kwargs = {}
        for alias, spec in sig.inputs.items():
            shape = [1 if axis == 0 else (size or 7) for axis, size in enumerate(spec.dims)]
            if spec.numpy_dtype is None:
                kwargs[alias] = tf.constant(rng.choice(catalog, size=shape).astype(object).astype(bytes))
            else:
                kwargs[alias] = tf.constant(rng.integers(0, 5, size=shape).astype(spec.numpy_dtype))
        flat, keyword = sig(kwargs), sig.fn(**kwargs)
        assert set(flat) == set(keyword) == set(sig.outputs)
        for alias in sig.outputs:
            np.testing.assert_array_equal(flat[alias].numpy(), keyword[alias].numpy())


def test_tensorflow_thread_pools_follow_tf_serving_flags() -> None:
    """`--tensorflow_intra_op_parallelism` / `--tensorflow_inter_op_parallelism` reach TensorFlow
    (in a fresh process: pool sizes are fixed once its runtime starts)."""
    code = (
        "import tensorflow as tf\n"
        "from serving.model_server import configure_threads\n"
        "configure_threads(1, 2)\n"
        "tf.constant(1.0) + 1.0\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["1", "2"]


# ---- hardening: where it listens, how much one request may ask, which paths a reload may name ----


def listening(port: int) -> set[str]:
    """The addresses a socket listens on for TCP `port` (from /proc): {"127.0.0.1"} for loopback
    alone; "0.0.0.0" or "::" when every interface is reachable."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        path = Path(table)
        for line in path.read_text().splitlines()[1:] if path.exists() else []:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # each 32-bit word in the kernel's (little-endian) order
            ip = socket.inet_ntop(family, b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
            found.add(ip.removeprefix("::ffff:"))  # an IPv4 address on an IPv6 socket
    return found


def test_the_server_listens_on_loopback_unless_given_a_host(model_base: Path) -> None:
    """It takes any config pushed to it and has no authentication: started without a host, only
    this machine reaches it."""
    server = ModelServer(ModelManager(model_base, poll_seconds=POLL), port=0)
    port = server.start()
    try:
        assert listening(port) == {"127.0.0.1"}
    finally:
        server.stop(grace=1)


def test_cli_model_server_listens_where_the_setting_says(model_base: Path) -> None:
    """Without --host, TOWERFLOW_MODEL_SERVER_HOST decides (127.0.0.2, another loopback address,
    so an answer there shows the setting was used)."""
    port = free_port()
    env = {
        **os.environ,
        "TOWERFLOW_HOME": str(model_base.parent),
        "TOWERFLOW_MODEL_SERVER_HOST": "127.0.0.2",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    cmd = [sys.executable, "-m", "towerflow.cli", "model-server", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert first_stable_answer(proc, port, host="127.0.0.2").version == 1
        assert listening(port) == {"127.0.0.2"}
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_serve_starts_its_model_server_on_the_configured_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """`towerflow serve` passes the model server's host on (TOWERFLOW_MODEL_SERVER_HOST, or
    --model-host), and points the gateway at an address that reaches it."""
    import typer

    from towerflow import cli_serving

    started: list[tuple[list[str], dict[str, str]]] = []

    class Exited:  # a child that has already exited: serve stops at once
        def __init__(self, cmd: list[str], env: dict[str, str], **_) -> None:
            started.append((cmd, env))

        def poll(self) -> int:
            return 0

        def wait(self, timeout: float | None = None) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", Exited)
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    monkeypatch.setenv("TOWERFLOW_MODEL_SERVER_HOST", "127.0.0.2")
    with pytest.raises(typer.Exit):
        cli_serving.serve(port=18000, model_port=18500, host=None, model_server=True, access_log=False)
    (model_cmd, model_env), (_, gateway_env), (worker_cmd, _) = started
    assert worker_cmd[-1] == "stream-worker"
    assert model_cmd[model_cmd.index("--host") + 1] == "127.0.0.2"
    assert (
        model_env["TOWERFLOW_MODEL_SERVER_TARGET"] == gateway_env["TOWERFLOW_MODEL_SERVER_TARGET"] == "127.0.0.2:18500"
    )

    started.clear()
    with pytest.raises(typer.Exit):
        cli_serving.serve(
            port=18000, model_port=18500, model_host="0.0.0.0", host=None, model_server=True, access_log=False
        )
    (model_cmd, _), (_, gateway_env), *_ = started
    assert model_cmd[model_cmd.index("--host") + 1] == "0.0.0.0"
    assert gateway_env["TOWERFLOW_MODEL_SERVER_TARGET"] == "127.0.0.1:18500"
    assert cli_serving.model_target("::", 1) == "127.0.0.1:1"
    assert cli_serving.model_target("::1", 1) == "[::1]:1"


def test_a_request_over_the_size_limit_is_refused_before_it_is_decoded(running: Running) -> None:
    huge = predict_request("retrieval", {"user_id": [b"u" * MAX_REQUEST_BYTES]})
    err = rpc_error(lambda: running.predictions.Predict(huge, timeout=60))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert running.predict().model_spec.version.value == 2  # still serving


def test_the_client_sends_no_more_than_the_server_accepts(model_base: Path) -> None:
    """The client, blocking and async, refuses a request over the server's limit, and over a limit
    of its own one the server would have taken (4 KiB): the refusal is the client's."""
    from serving import tfs_client

    huge = {"user_id": np.array([b"u" * MAX_REQUEST_BYTES], dtype=object)}
    big = {"user_id": np.array([b"u" * 4096], dtype=object)}
    small = {"user_id": np.array([b"u1"], dtype=object)}
    server = Running(model_base)
    try:
        with ModelClient(server.target) as client:
            assert rpc_error(lambda: client.predict("retrieval", huge)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with ModelClient(server.target, max_request_bytes=2048) as client:
            assert rpc_error(lambda: client.predict("retrieval", big)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert client.predict("retrieval", small).version == 2

        async def in_loop(inputs: dict, **kwargs) -> grpc.StatusCode | int:
            client = AsyncModelClient(server.target, **kwargs)
            try:
                return (await client.predict("retrieval", inputs)).version
            except grpc.RpcError as err:
                return err.code()
            finally:
                await client.close()

        assert asyncio.run(in_loop(huge)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert asyncio.run(in_loop(big, max_request_bytes=2048)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert asyncio.run(in_loop(small, max_request_bytes=2048)) == 2
    finally:
        server.close()
    assert tfs_client.MAX_REQUEST_BYTES == MAX_REQUEST_BYTES
    assert Settings.model_fields["model_server_max_request_bytes"].default == MAX_REQUEST_BYTES


RANKING_INPUTS = {
    "user_id": np.array([b"u0"], dtype=object),
    "item_id": np.array([[b"i0", b"i1"]], dtype=object),
    "retrieval_score": np.zeros((1, 2), np.float32),
    "user_features__purchases_30d": np.zeros(1, np.int64),
    "item_features__popularity": np.zeros((1, 2), np.float32),
    "item_features__age_days": np.zeros((1, 2), np.float64),
    "item_features__category": np.array([[b"a", b"b"]], dtype=object),
    "day_of_week": np.zeros(1, np.int64),
}


@pytest.fixture(scope="module")
def contract_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gateway's contract toys (numeric inputs too), under a model base of their own."""
    base = tmp_path_factory.mktemp("contract") / "models"
    toy_models.publish_contract_pair(base, toy_models.item_ids(50), dim=8, k=20)
    return base


def test_an_input_shaped_for_more_values_than_a_request_carries_is_refused(contract_base: Path) -> None:
    """TF's compact form (fewer values than the shape, the last one repeated) lets a few bytes
    ask for a tensor of any size: refused before any decoding, as is a negative dimension, and a
    shape whose count overflows 64 bits."""
    server = Running(contract_base)
    inputs = {
        "user_id": np.array([b"u0"], dtype=object),
        "user_recent__last_10_items": np.array([[b""] * 10], dtype=object),
        "user_features__views_7d": np.ones(1, np.float32),
        "hour_of_day": np.ones(1, np.int64),
    }
    retrieval, ranking = predict_request("retrieval", inputs), predict_request("ranking", RANKING_INPUTS)

    def scores_shape(request) -> list[int]:
        return [d.size for d in server.predictions.Predict(request, timeout=10).outputs["scores"].tensor_shape.dim]

    try:
        assert scores_shape(retrieval) == [1, 20] and scores_shape(ranking) == [1, 2]

        absurd = predict_request("retrieval", inputs)
        views = absurd.inputs["user_features__views_7d"]
        views.ClearField("tensor_content")
        views.ClearField("tensor_shape")
        views.tensor_shape.dim.add().size = 10**12
        views.float_val.append(1.0)
        err = rpc_error(lambda: server.predictions.Predict(absurd, timeout=10))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "user_features__views_7d" in err.details() and "1000000000000" in err.details()

        negative = predict_request("retrieval", inputs)
        negative.inputs["hour_of_day"].tensor_shape.dim[0].size = -1
        err = rpc_error(lambda: server.predictions.Predict(negative, timeout=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "hour_of_day" in err.details()

        overflow = predict_request("ranking", RANKING_INPUTS)
        popularity = overflow.inputs["item_features__popularity"]
        popularity.ClearField("tensor_content")
        popularity.ClearField("tensor_shape")
        for _ in range(2):
            popularity.tensor_shape.dim.add().size = 2**32
        err = rpc_error(lambda: server.predictions.Predict(overflow, timeout=10))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "item_features__popularity" in err.details()

        assert scores_shape(retrieval) == [1, 20] and scores_shape(ranking) == [1, 2]  # still serving
    finally:
        server.close()


def test_reload_config_serves_only_models_under_the_model_base(
    model_base: Path, tmp_path: Path, templates: dict[str, Path]
) -> None:
    """A pushed config naming a folder outside the model base (directly, through `..`, through a
    symlink, or a container path whose model name climbs out) is refused whole: INVALID_ARGUMENT
    naming the path and the model base, and nothing is loaded from there."""
    outside = tmp_path / "elsewhere" / "retrieval"
    publish(templates["retrieval/3"], outside, 3)
    publish(templates["retrieval/3"], model_base.parent / "escape", 3)
    (model_base / "sneaky").symlink_to(outside, target_is_directory=True)
    server = Running(model_base)
    allowed = str(model_base.resolve())
    cases = [
        ("retrieval", str(outside)),
        ("retrieval", str(model_base / ".." / "elsewhere" / "retrieval")),
        ("retrieval", str(model_base / "sneaky")),
        ("../escape", "/towerflow-test-no-such-folder/escape"),  # not here: <model base>/<name>
    ]
    try:
        for name, path in cases:
            pushed = mc.ModelEntry(name=name, base_path=path, policy=mc.VersionPolicy.specific(3))
            entries = [e for e in default_entries(model_base) if e.name != name] + [pushed]
            err = rpc_error(lambda entries=entries: server.client.reload_config(entries))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, err.details())
            assert path in err.details() and allowed in err.details()
            server.manager.poll_once()
            assert server.states() == {2: "AVAILABLE", 1: "AVAILABLE"}
            assert server.predict(version_label="stable").model_spec.version.value == 1
            if name != "retrieval":
                assert rpc_error(lambda name=name: server.client.status(name)).code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.close()


def test_reload_config_maps_a_container_path_onto_the_model_base(model_base: Path, tmp_path: Path) -> None:
    """`/models/<name>` (a config written for a container) is served from `<model base>/<name>`."""
    # A folder that exists nowhere on this machine, as a container's `/models` does not.
    container_models = tmp_path / "container-root" / "models"
    server = Running(model_base)
    try:
        entries = [
            replace(e, base_path=str(container_models / e.name))
            for e in default_entries(model_base, stable=2, canary=2)
        ]
        server.client.reload_config(entries)
        assert server.predict(version_label="stable").model_spec.version.value == 2
        server.manager.poll_once()
        assert server.states() == {2: "AVAILABLE", 1: "AVAILABLE"}
        assert server.predict("ranking", {"user_id": ["u"], "candidate_ids": [["a"]]}).model_spec.version.value == 1
    finally:
        server.close()
